"""Ingestion: a model's raw corpora from its inbox, one partition per batch."""

from dagster import AssetCheckResult, AssetExecutionContext, MetadataValue, Output, asset, asset_check

from assets.checks import ledger_result, non_empty_result, suite_result
from assets.metadata import asset_args, emit, key, ledger_metadata, log_quarantine
from assets.partitions import batch_partitions
from resources.artifacts import Artifact, config_of, version_of
from resources.ingestion.inbox import Inbox
from resources.quality import document_expectations
from resources.records import DOCUMENT_COLUMNS, QUARANTINE_COLUMNS, fingerprint, frame
from resources.spec import ModelSpec
from resources.storage import ArtifactStore, write_json, write_table


def build(spec: ModelSpec) -> list:
    partitions = batch_partitions(spec.name)

    @asset(key=key(spec, "raw_documents"), partitions_def=partitions, kinds={"python", "parquet"}, code_version="3",
           **asset_args(spec, "ingestion"))
    def raw_documents(context: AssetExecutionContext, inbox: Inbox, store: ArtifactStore) -> Output[Artifact]:
        """Every record of one inbox batch in the document schema, with its source file, sha256 and line;
        records that cannot be read are quarantined with the reason, and the rest of the batch goes on."""
        batch = context.partition_key
        settings = inbox.for_folder(spec.inbox, spec.batch_by)
        read = settings.read(batch)
        documents = frame(read.documents, DOCUMENT_COLUMNS)
        quarantine = frame(read.quarantine, QUARANTINE_COLUMNS)
        ledger = read.ledger()
        log_quarantine(context.log, read.quarantine)
        if read.duplicates:
            context.log.info(f"dropped {len(read.duplicates)} byte-identical file(s) as exact_duplicate (see the ledger)")
        version = version_of(
            [fingerprint(documents, ["doc_id", "text", "messages"]), fingerprint(quarantine, ["source_path", "line", "reason"])],
            config=config_of(settings.limits(), {"forgotten": sorted(read.forgotten)}), code="3")
        artifact = Artifact.create(store, context.asset_key, version, batch)
        with artifact.writing() as out:
            write_table(out, "documents.parquet", documents)
            write_table(out, "quarantine.parquet", quarantine)
            write_json(out, "files.json", read.files)
            write_json(out, "forgotten.json", read.forgotten)  # doc ids dropped by the forget list (ids only)
            write_json(out, "duplicates.json", read.duplicates)  # files byte-identical to one read before them
            write_json(out, "ledger.json", ledger.to_dict())

        files = "\n".join(f"| {f['path']} | {f['sha256'][:16]} | {f['bytes']} | {f['records']} | {f['quarantined']} |"
                          for f in read.files)
        return emit(artifact, {
            **ledger_metadata(ledger),
            "files": MetadataValue.md("| file | sha256 | bytes | records | quarantined |\n|---|---|---|---|---|\n" + files),
            "source_files": MetadataValue.json([{k: f[k] for k in ("path", "sha256", "bytes", "records")} for f in read.files]),
            "kinds": MetadataValue.json(documents["kind"].value_counts().to_dict()),
            "exact_duplicate_files": MetadataValue.json([{k: d[k] for k in ("source_path", "duplicate_of")} for d in read.duplicates]),
        })

    @asset_check(asset=raw_documents, partitions_def=partitions, blocking=True,
                 description="Schema, unique doc_id, text length bounds and known kinds (great-expectations).")
    def raw_documents_expectations(raw_documents: Artifact) -> AssetCheckResult:
        return suite_result(raw_documents, "documents.parquet", "raw_documents_suite", document_expectations())

    @asset_check(asset=raw_documents, partitions_def=partitions, blocking=True,
                 description="Every record that came in is kept, dropped with a reason, or quarantined: nothing is lost.")
    def raw_documents_ledger(raw_documents: Artifact) -> AssetCheckResult:
        return ledger_result(raw_documents, "documents.parquet", expected_in=None)

    @asset_check(asset=raw_documents, partitions_def=partitions, description="Warns when this partition kept no records at all.")
    def raw_documents_not_empty(raw_documents: Artifact) -> AssetCheckResult:
        return non_empty_result(raw_documents)

    return [raw_documents, raw_documents_expectations, raw_documents_ledger, raw_documents_not_empty]
