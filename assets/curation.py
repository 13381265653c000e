"""Curation: per batch, cleaned and de-duplicated documents, then PII-redacted documents; across batches, the
model's corpus, where batches meet and are de-duplicated against each other."""

from collections import Counter

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetIn,
    MetadataValue,
    Output,
    asset,
    asset_check,
)

from assets.checks import ledger_result, suite_result
from assets.metadata import asset_args, emit, key, ledger_metadata, picture, reason_table, redactions_by_file
from assets.partitions import batch_partitions
from resources.artifacts import Artifact, Batches, check_status, check_statuses, config_of, materialization_record, version_of
from resources.curation.corpus import build_corpus, link_segments
from resources.curation.curator import CURATED_EXTRA_COLUMNS, TextCurator
from resources.plots import counts
from resources.quality import document_expectations
from resources.records import DOCUMENT_COLUMNS, DROPPED_COLUMNS, QUARANTINE_COLUMNS, Ledger, fingerprint, frame, pq_rows, rows
from resources.redaction.redactor import PiiRedactor
from resources.spec import ModelSpec
from resources.storage import ArtifactStore, write_json, write_table

REDACTED_COLUMNS = [*DOCUMENT_COLUMNS, "pii_found"]

# What a batch must have passed before the corpus takes it in (blocking checks of redacted_documents).
REDACTED_BLOCKING_CHECKS = ["no_residual_pii", "redacted_documents_expectations", "redacted_documents_ledger"]


def _ledgers(upstream: Artifact, own: Ledger) -> dict:
    """This stage's ledger with those of every stage before it in the batch (for the dataset card)."""
    before = upstream.read_json("ledgers.json") if upstream.exists("ledgers.json") else \
        {upstream.asset.rsplit("/", 1)[-1]: upstream.read_json("ledger.json")}
    return {**before, own.stage: own.to_dict()}


def build(spec: ModelSpec) -> list:
    partitions = batch_partitions(spec.name)
    stage = asset_args(spec, "curation")

    @asset(key=key(spec, "cleaned_documents"), partitions_def=partitions, kinds={"python", "parquet"}, code_version="2",
           ins={"raw_documents": AssetIn(key=key(spec, "raw_documents"))}, **stage)
    def cleaned_documents(context: AssetExecutionContext, curator: TextCurator, store: ArtifactStore,
                          raw_documents: Artifact) -> Output[Artifact]:
        """The batch's documents normalised and filtered for quality and language, with exact and near
        duplicates within the batch removed (the first copy wins); each drop has its reason. Copies of
        documents in other batches are removed where the batches meet, in `corpus`."""
        result = curator.curate(rows(raw_documents.read_table()))
        documents = frame(result.kept, [*DOCUMENT_COLUMNS, *CURATED_EXTRA_COLUMNS])
        dropped = frame(result.dropped, DROPPED_COLUMNS)
        version = version_of(fingerprint(documents, ["doc_id", "text", "messages"]), {"raw_documents": raw_documents.version},
                             config_of(curator), code="2")
        artifact = Artifact.create(store, context.asset_key, version, context.partition_key)
        with artifact.writing() as out:
            write_table(out, "documents.parquet", documents.drop(columns=CURATED_EXTRA_COLUMNS))
            write_table(out, "dropped.parquet", dropped)
            write_json(out, "ledger.json", result.ledger.to_dict())
            write_json(out, "ledgers.json", _ledgers(raw_documents, result.ledger))
        return emit(artifact, ledger_metadata(result.ledger))

    @asset(key=key(spec, "redacted_documents"), partitions_def=partitions, kinds={"presidio", "parquet"}, code_version="2",
           ins={"cleaned_documents": AssetIn(key=key(spec, "cleaned_documents"))}, **stage)
    def redacted_documents(context: AssetExecutionContext, redactor: PiiRedactor, curator: TextCurator, store: ArtifactStore,
                           cleaned_documents: Artifact) -> Output[Artifact]:
        """The batch's cleaned documents with every PII finding replaced under the model's versioned redaction
        policy, an audit of how many of each entity type were replaced (never the values), and the MinHash
        signatures of the redacted text for de-duplication across batches."""
        model_redactor = redactor.for_policy(spec.redaction_policy, spec.public_entities)
        policy = model_redactor.policy()
        result = model_redactor.redact_documents(rows(cleaned_documents.read_table()))
        documents = frame(result.documents, REDACTED_COLUMNS)
        signatures = curator.signatures(documents["text"])
        signed = documents.assign(dedup_key=[k for k, _ in signatures], minhash=[m for _, m in signatures])
        audit = {"policy": policy.ref, "entities": dict(sorted(result.audit.items())),
                 "documents_with_pii": int((documents["pii_found"] > 0).sum()),
                 "by_file": {f: dict(sorted(c.items())) for f, c in sorted(result.by_file.items())}}
        version = version_of(fingerprint(documents, ["doc_id", "text", "messages", "title"]),
                             {"cleaned_documents": cleaned_documents.version}, [policy.content_hash(), *config_of(model_redactor)], code="2")
        artifact = Artifact.create(store, context.asset_key, version, context.partition_key)
        with artifact.writing() as out:
            write_table(out, "documents.parquet", signed)
            write_table(out, "quarantine.parquet", frame(result.quarantined, QUARANTINE_COLUMNS))
            write_json(out, "audit.json", audit)
            write_json(out, "ledger.json", result.ledger.to_dict())
            write_json(out, "ledgers.json", _ledgers(cleaned_documents, result.ledger))
            chart = picture(counts(result.audit, "redactions by entity type"), "redactions by entity", out, "redactions.png")
        return emit(artifact, {
            **ledger_metadata(result.ledger),
            "redaction_policy": MetadataValue.text(policy.ref),
            "redactions_by_entity": reason_table(result.audit, header="entity"),
            "redactions_chart": chart,
            "redactions_total": MetadataValue.int(sum(result.audit.values())),
            "documents_with_pii": MetadataValue.int(audit["documents_with_pii"]),
            "redactions_by_file": redactions_by_file(result.by_file),
        })

    @asset_check(asset=cleaned_documents, partitions_def=partitions, blocking=True,
                 description="Schema, unique doc_id, text length bounds after cleaning (great-expectations).")
    def cleaned_documents_expectations(cleaned_documents: Artifact) -> AssetCheckResult:
        return suite_result(cleaned_documents, "documents.parquet", "cleaned_documents_suite", document_expectations())

    @asset_check(asset=cleaned_documents, partitions_def=partitions, blocking=True,
                 description="Every record that came in is kept or dropped with a reason; records in = raw records kept.")
    def cleaned_documents_ledger(cleaned_documents: Artifact) -> AssetCheckResult:
        raw = cleaned_documents.read_json("ledgers.json")["raw_documents"]
        return ledger_result(cleaned_documents, "documents.parquet", raw["kept"], "raw_documents")

    @asset_check(asset=redacted_documents, partitions_def=partitions, blocking=True,
                 description="A second Presidio scan of the redacted text finds no PII above the policy thresholds.")
    def no_residual_pii(redactor: PiiRedactor, redacted_documents: Artifact) -> AssetCheckResult:
        documents = rows(redacted_documents.read_table(
            columns=["doc_id", "source_path", "external_id", "line", "title", "text", "messages"]))
        per_document = redactor.for_policy(spec.redaction_policy, spec.public_entities).residual_in_documents(documents)
        residual = sum(per_document, Counter())
        where = [f"{d['source_path']}#{d.get('external_id') or d.get('line') or d['doc_id']}: "
                 + ", ".join(f"{entity} x{n}" for entity, n in sorted(found.items()))
                 for d, found in zip(documents, per_document) if found]
        return AssetCheckResult(passed=not residual, metadata={
            "documents_scanned": MetadataValue.int(len(documents)),
            "residual_findings": MetadataValue.int(sum(residual.values())),
            "residual_by_entity": reason_table(residual, header="entity"),
            "records_with_residual_pii": MetadataValue.json(where[:50])})

    @asset_check(asset=redacted_documents, partitions_def=partitions, blocking=True,
                 description="Schema, unique doc_id and text length bounds after redaction (great-expectations).")
    def redacted_documents_expectations(redacted_documents: Artifact) -> AssetCheckResult:
        return suite_result(redacted_documents, "documents.parquet", "redacted_documents_suite", document_expectations())

    @asset_check(asset=redacted_documents, partitions_def=partitions, blocking=True,
                 description="Every record that came in is kept; records in = cleaned records kept.")
    def redacted_documents_ledger(redacted_documents: Artifact) -> AssetCheckResult:
        cleaned = redacted_documents.read_json("ledgers.json")["cleaned_documents"]
        return ledger_result(redacted_documents, "documents.parquet", cleaned["kept"], "cleaned_documents")

    @asset(key=key(spec, "corpus"), kinds={"python", "parquet"}, code_version="2",
           ins={"redacted_documents": AssetIn(key=key(spec, "redacted_documents"))}, **asset_args(spec, "curation"))
    def corpus(context: AssetExecutionContext, curator: TextCurator, store: ArtifactStore,
               redacted_documents: Batches) -> Output[Artifact]:
        """Every batch's redacted documents in one table, de-duplicated across batches in the order the batches
        arrived (a copy of a document kept in an earlier batch is dropped naming it), so the result depends only
        on which batch versions are in. A batch whose redacted documents failed (or never ran) a blocking check
        stays out, with the check's name. Incremental: the persistent de-duplication index already holds the
        batches of the last corpus, so only the new ones are read and checked (`resumed` / `applied`)."""
        if not redacted_documents:
            raise ValueError(f"model {spec.name!r}: no batch has been redacted yet: ingest a batch first")
        arrival = {b: i for i, b in enumerate(context.instance.get_dynamic_partitions(partitions.name))}
        ordered = sorted(redacted_documents.items(), key=lambda item: (arrival.get(item[0], len(arrival)), item[0]))
        excluded, included = {}, []
        # the checks' verdicts in one query per check; a batch whose latest evaluation is not of the loaded
        # materialization (re-run since, still planned) is asked about on its own
        known = check_statuses(context.instance, context.asset_key_for_input("redacted_documents"),
                               {b: a.storage_id for b, a in ordered if a.storage_id is not None}, REDACTED_BLOCKING_CHECKS)
        for batch, artifact in ordered:
            status = known.get(batch)
            if status is None:
                record = materialization_record(context.instance, artifact)
                status = check_status(context.instance, record, REDACTED_BLOCKING_CHECKS) if record is not None else {}
            blocked = sorted(name for name, s in status.items() if s != "passed")
            if blocked:
                excluded[batch] = {name: status[name] for name in blocked}
                context.log.warning(f"batch {batch} ({artifact.version}) stays out of the corpus: blocking checks "
                                    + ", ".join(f"{n} {status[n]}" for n in blocked))
            else:
                included.append((batch, artifact))
        artifacts = dict(ordered)

        def load(batch: str) -> tuple[list[dict], dict]:
            artifact = artifacts[batch]
            table = artifact.read_table()
            return rows(table), {"artifact": artifact.key, "data_version": artifact.version, "documents": len(table),
                                 "ledgers": artifact.read_json("ledgers.json"), "audit": artifact.read_json("audit.json")}

        build = build_corpus(curator, store, spec.name, [(b, a.version) for b, a in included], load, REDACTED_COLUMNS,
                             log=context.log.info)
        batches = {s["batch"]: {k: s[k] for k in ("artifact", "data_version", "documents", "ledgers", "audit")}
                   for s in build.summaries}
        # documents a later batch brought a new version of (same record id, or the same file): still in the table,
        # no longer current — retrieval, training and the golden set read only the current version
        superseded = {s["doc_id"]: {"by": s["by"], "batch": summary["batch"], "identity": s["identity"]}
                      for summary in build.summaries for s in summary.get("superseded", [])}
        ledger = build.ledger
        for batch in excluded:
            artifact = artifacts[batch]
            documents = pq_rows(artifact.file("documents.parquet"))
            batches[batch] = {"artifact": artifact.key, "data_version": artifact.version, "documents": documents,
                              "ledgers": artifact.read_json("ledgers.json"), "audit": artifact.read_json("audit.json")}
            ledger.records_in += documents
            ledger.dropped["batch_failed_checks"] += documents
        version = version_of(build.chains[-1] if build.chains else None, {b: i["data_version"] for b, i in batches.items()},
                             [config_of(curator.dedup_rules()), {"excluded": excluded, "order": [b for b, _ in ordered]}],
                             code="2")
        artifact = Artifact.create(store, context.asset_key, version)
        with artifact.writing() as out:
            link_segments(store, spec.name, build.chains, "kept.parquet", out, frame([], REDACTED_COLUMNS), "documents.parquet")
            link_segments(store, spec.name, build.chains, "dropped.parquet", out, frame([], DROPPED_COLUMNS))
            write_json(out, "ledger.json", ledger.to_dict())
            write_json(out, "batches.json", {"batches": batches, "excluded": excluded,
                                             "segments": build.chains, "superseded": superseded})
        return emit(artifact, {
            **ledger_metadata(ledger),
            "batches": MetadataValue.int(len(batches) - len(excluded)),
            "batch_names": MetadataValue.json([b for b in batches if b not in excluded]),
            "excluded_batches": MetadataValue.json(excluded),
            "superseded_documents": MetadataValue.int(len(superseded)),
            "batches_resumed": MetadataValue.int(build.resumed),
            "batches_applied": MetadataValue.int(build.applied),
        })

    @asset_check(asset=corpus, blocking=True, description="Records in = the included batches' redacted records = kept + "
                 "dropped (cross-batch duplicates, excluded batches), and the stored table agrees.")
    def corpus_ledger(corpus: Artifact) -> AssetCheckResult:
        redacted = f"{spec.name}/redacted_documents"
        stored = corpus.read_json("batches.json")["batches"]
        expected = sum(pq_rows(corpus.store.path(redacted, b["artifact"], "documents.parquet")) for b in stored.values())
        return ledger_result(corpus, "documents.parquet", expected, "redacted_documents")

    return [cleaned_documents, redacted_documents, cleaned_documents_expectations, cleaned_documents_ledger,
            no_residual_pii, redacted_documents_expectations, redacted_documents_ledger, corpus, corpus_ledger]

