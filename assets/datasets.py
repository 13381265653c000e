"""Datasets: a model's golden set, its instruction dataset and the dataset card, built from its corpus."""

from collections import Counter

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    AutomationCondition,
    Failure,
    MetadataValue,
    Output,
    asset,
    asset_check,
)

from assets.checks import ledger_result, parts_suite_result, suite_result
from assets.metadata import asset_args, emit, key, ledger_metadata, log_quarantine, reason_table
from resources.artifacts import Artifact, config_of, version_of
from resources.datasets.builder import (
    EXAMPLE_COLUMNS,
    GOLDEN_COLUMNS,
    apply_corrections,
    eval_split_of,
    build_examples,
    held_out_golden,
    read_golden_file,
    with_messages,
)
from resources.datasets.card import CARD_COLUMNS, build_card, card_markdown, token_lengths
from resources.datasets.segments import (EXTRA_PART, contamination_verdicts, golden_segments, instruction_segments,
                                        link_instruction_hf, link_instructions, segment_lengths)
from resources.datasets.export import save_splits
from resources.contamination import probes_of
from resources.evaluation.feedback import golden_corrections, training_documents
from resources.knowledge.examples import JUDGE_PROMPT, QA_PROMPT, held_out_qa, held_out_sections, unindexed_questions
from resources.knowledge.teacher import NOT_CONFIGURED, TeacherModel
from resources.models.base_model import BaseModelSource
from resources.quality import example_expectations
from resources.records import DROPPED_COLUMNS, Ledger, fingerprint, frame, pq_rows, rows
from resources.redaction.redactor import PiiRedactor
from resources.segments import segment_key
from resources.spec import ModelSpec
from resources.storage import ArtifactStore, write_json, write_table

# Datasets follow their inputs: when a batch lands in the corpus they rebuild, once nothing upstream is in
# progress (declarative automation; see README "Orchestration").
FOLLOW_UPSTREAM = AutomationCondition.eager()


def build(spec: ModelSpec) -> list:
    stage = asset_args(spec, "datasets")
    holdout = spec.dataset.golden_holdout_fraction > 0 or spec.dataset.unanswerable_holdout_fraction > 0

    @asset(key=key(spec, "golden_dataset"), kinds={"huggingface", "parquet"}, code_version="4",
           ins={"corpus": AssetIn(key=key(spec, "corpus")), "human_feedback": AssetIn(key=key(spec, "human_feedback")),
                "document_chunks": AssetIn(key=key(spec, "document_chunks"))},
           automation_condition=FOLLOW_UPSTREAM, **stage)
    def golden_dataset(context: AssetExecutionContext, redactor: PiiRedactor, teacher: TeacherModel, store: ArtifactStore,
                       corpus: Artifact, human_feedback: Artifact, document_chunks: Artifact) -> Output[Artifact]:
        """The held-out evaluation set the business trusts: the model's curated golden files plus, if configured,
        a hashed hold-out of its corpus (its documents asked about by their headings or, with
        knowledge.golden_from 'teacher', by the teacher model), with reviewers' corrections applied, redacted under the same policy as
        the training data. The hold-out is made one corpus segment at a time (`golden_segments`): a new batch's
        held-out documents are asked about (by their headings, or by the teacher) and redacted once."""
        ledger = Ledger(stage="golden_dataset")
        examples, quarantine, teacher_usage, held_out = [], [], None, None
        for path in spec.golden_files():
            found, bad = read_golden_file(path, path.name, require_facts=spec.dataset.golden_requires_facts)
            if not found and not bad:
                message = (f"golden file {path} holds no golden records: add questions with their reference answers "
                           "and must_include facts (see `tuneforge init`'s template), or remove it from the model's "
                           "golden list")
                if not holdout:
                    raise Failure(message, allow_retries=False)
                context.log.warning(message + "; the golden set is the hold-out's questions alone")
            examples += found
            quarantine += bad
        model_redactor = redactor.for_policy(spec.redaction_policy, spec.public_entities)
        chains = corpus.read_json("batches.json")["segments"] if holdout else None
        chunk_manifest = document_chunks.read_json("manifest.json") if holdout and document_chunks.exists("manifest.json") else {}
        teacher_written = spec.knowledge.golden_from == "teacher" and teacher.configured
        if holdout and chains is not None and chunk_manifest.get("corpus_segments") == chains:
            # one corpus segment at a time: a new batch's held-out documents asked about and redacted once
            session = teacher.session() if teacher_written and spec.dataset.text_strategy == "sections" else None
            held_out = golden_segments(store, spec.name, chains, chunk_manifest["segments"], spec.dataset, spec.knowledge,
                                       model_redactor, session=session,
                                       teacher_identity=teacher.identity() if session else None)
            context.log.info(f"golden segments: {held_out.made} made, {held_out.reused} reused")
            if session is not None:
                teacher_usage = {**session.usage.to_dict(), "counts": dict(held_out.counts),
                                 "segments_unfinished": held_out.partial}
                if teacher_usage["stopped"]:
                    context.log.warning(f"the teacher stopped early: {teacher_usage['stopped']}; the {held_out.partial} "
                                        "held-out segments left unfinished are made again by the next run")
            if spec.knowledge.golden_from == "teacher" and not teacher.configured:
                context.log.warning(f"knowledge.golden_from is 'teacher' but {NOT_CONFIGURED}: the held-out "
                                    "documents are asked about by their headings")
        elif holdout:
            examples += held_out_golden(rows(corpus.read_table()), spec.dataset.split_rules(), spec.dataset.text_strategy,
                                        spec.dataset.title_template)
            if spec.dataset.text_strategy == "sections":  # held-out documents are asked about, passage by passage
                chunks = rows(document_chunks.read_table("chunks.parquet"))
                if spec.knowledge.golden_from == "teacher" and teacher.configured:
                    session = teacher.session()  # only redacted passages reach it: chunks are cut from the corpus
                    written, build = held_out_qa(chunks, spec.dataset.split_rules(), spec.knowledge, session)
                    examples += written
                    teacher_usage = {**session.usage.to_dict(), "counts": dict(build.counts)}
                else:
                    if spec.knowledge.golden_from == "teacher":
                        context.log.warning(f"knowledge.golden_from is 'teacher' but {NOT_CONFIGURED}: the held-out "
                                            "documents are asked about by their headings")
                    examples += held_out_sections(chunks, spec.dataset.split_rules(), spec.knowledge,
                                                  spec.dataset.title_template)
                examples += unindexed_questions(chunks, spec.dataset.split_rules(), spec.knowledge)
        segmented = rows(held_out.examples) if held_out is not None else []  # redacted in their segments
        corrections = golden_corrections(rows(human_feedback.read_table("feedback.parquet")),
                                         {e["id"] for e in examples + segmented})
        reviewed = apply_corrections(examples, corrections)
        log_quarantine(context.log, quarantine, what="golden record")
        for row in quarantine:
            ledger.quarantined[row["reason"]] += 1
        redactions = model_redactor.redact_fields(examples, ("prompt", "answer"))
        if held_out is not None:
            corrected = [e for e in segmented if e["id"] in corrections]
            reviewed += apply_corrections(corrected, corrections)
            redactions += model_redactor.redact_fields(corrected, ("answer",)) + held_out.redactions
            examples += segmented
        table = frame([with_messages(e) for e in examples], GOLDEN_COLUMNS)
        table["eval_split"] = [eval_split_of(e, spec.dataset.golden_dev_fraction) for e in rows(table)]
        if not len(table):
            raise Failure(f"model {spec.name!r} has no golden questions: every record of its golden files was "
                          f"quarantined ({dict(ledger.quarantined)}; the reasons, with file and line, are in the log) and "
                          "no document is hashed into the hold-out (dataset.golden_holdout_fraction)", allow_retries=False)
        ledger.kept = len(table)
        ledger.records_in = ledger.kept + sum(ledger.quarantined.values())
        inputs = {"human_feedback": human_feedback.version,
                  **({"corpus": corpus.version, "document_chunks": document_chunks.version} if holdout else {})}
        teacher_config = [teacher.identity(), QA_PROMPT, JUDGE_PROMPT] if teacher_usage is not None else None
        version = version_of(fingerprint(table, ["id", "prompt", "answer", "source_doc_id"]), inputs,
                             [model_redactor.policy().content_hash(), *config_of(spec.dataset, spec.knowledge),
                              teacher_config], code="4")
        artifact = Artifact.create(store, context.asset_key, version)
        with artifact.writing() as out:
            write_table(out, "examples.parquet", table)
            write_table(out, "quarantine.parquet", pd.DataFrame(quarantine, columns=["source_path", "line", "reason", "detail"]))
            write_json(out, "ledger.json", ledger.to_dict())
            save_splits(table, ["golden"], out / "hf", {"prompt": "string", "answer": "string", "source_doc_id": "string",
                                                         "tags": "list", "origin": "string", "must_include": "list",
                                                         "must_not_include": "list", "eval_split": "string"})
        return emit(artifact, {
            **ledger_metadata(ledger),
            "examples": MetadataValue.int(len(table)),
            "reviewer_corrections": MetadataValue.int(reviewed),
            "by_origin": MetadataValue.json(table["origin"].value_counts().to_dict()),
            "by_eval_split": MetadataValue.json(table["eval_split"].value_counts().to_dict()),
            "unanswerable": MetadataValue.int(int(table["tags"].map(lambda t: "unanswerable" in list(t)).sum())),
            "with_facts": MetadataValue.int(int(table["must_include"].map(lambda f: len(list(f)) > 0).sum())),
            "redactions_by_entity": reason_table(redactions, header="entity"),
            "redaction_policy": MetadataValue.text(model_redactor.policy().ref),
            "teacher": MetadataValue.json(teacher_usage if teacher_usage is not None else {"used": False}),
            "holdout_segments_made": MetadataValue.int(held_out.made if held_out is not None else 0),
            "holdout_segments_reused": MetadataValue.int(held_out.reused if held_out is not None else 0),
        })

    @asset(key=key(spec, "instruction_dataset"), kinds={"huggingface", "parquet"}, code_version="6",
           ins={"corpus": AssetIn(key=key(spec, "corpus")), "golden_dataset": AssetIn(key=key(spec, "golden_dataset")),
                "human_feedback": AssetIn(key=key(spec, "human_feedback")),
                "knowledge_examples": AssetIn(key=key(spec, "knowledge_examples"))},
           automation_condition=FOLLOW_UPSTREAM, **stage)
    def instruction_dataset(context: AssetExecutionContext, store: ArtifactStore, corpus: Artifact, golden_dataset: Artifact,
                            human_feedback: Artifact, knowledge_examples: Artifact) -> Output[Artifact]:
        """Chat-format training and validation examples from the model's corpus, the sections of its documents
        (knowledge_examples) and reviewers' corrections, split by hashed document id, with anything that
        duplicates a golden question removed (the contamination guard). Incremental where knowledge_examples is
        (one segment per corpus segment, made once for the same curated golden prompts and policy; the golden
        hold-out makes again only the segments that may duplicate one of its questions)."""
        golden = golden_dataset.read_table("examples.parquet")
        feedback_docs = training_documents(rows(human_feedback.read_table("feedback.parquet")), set(golden["id"]))
        policy = spec.dataset
        # the contamination guard: golden prompts, the sentences of golden answers, the documents golden questions name
        held_out = golden["origin"].astype(str).str.startswith("holdout")
        curated_probes, held_out_probes = probes_of(rows(golden[~held_out])), probes_of(rows(golden[held_out]))
        sources = sorted({str(s) for s in golden.loc[~held_out, "source_doc_id"].dropna()}) if policy.hold_out_golden_sources else []
        batches = corpus.read_json("batches.json")
        included = [b for b in batches["batches"] if b not in batches["excluded"]]
        superseded = set(batches.get("superseded") or {})  # earlier versions of documents: no example
        inputs = {"corpus": corpus.version, "golden_dataset": golden_dataset.version, "human_feedback": human_feedback.version,
                  "knowledge_examples": knowledge_examples.version}
        manifest = knowledge_examples.read_json("manifest.json") if knowledge_examples.exists("manifest.json") else {}
        segmented = manifest.get("segments") is not None and manifest.get("corpus_segments") == batches["segments"]
        if segmented:  # made one corpus segment at a time: a new batch's documents and sections only
            segments = instruction_segments(store, spec.name, batches["segments"], manifest["segments"], policy,
                                            list(golden.loc[~held_out, "prompt"]), list(golden.loc[held_out, "prompt"]),
                                            golden_probes=curated_probes, golden_sources=sources,
                                            held_out_probes=held_out_probes, superseded=superseded)
            context.log.info(f"instruction segments: {segments.made} made, {segments.reused} reused, "
                             f"{segments.guarded} guarded against held-out golden questions")
            feedback = build_examples(feedback_docs, policy.split_rules(), policy.text_strategy, policy.title_template,
                                      golden_prompts=list(golden["prompt"]), golden_probes=curated_probes + held_out_probes,
                                      golden_sources=sources)
            ledger = segments.ledger
            ledger.records_in += feedback.ledger.records_in
            ledger.kept += feedback.ledger.kept
            ledger.dropped.update(feedback.ledger.dropped)
            extra = frame(feedback.examples, EXAMPLE_COLUMNS)
            version = version_of([segment_key(segments.keys), fingerprint(extra, ["id", "prompt", "answer", "split"])],
                                 inputs, config_of(policy), code="6")
        else:
            section_docs = rows(knowledge_examples.read_table("examples.parquet"))
            build = build_examples(rows(corpus.read_table()) + section_docs + feedback_docs, policy.split_rules(),
                                   policy.text_strategy, policy.title_template, golden_prompts=list(golden["prompt"]),
                                   golden_probes=curated_probes + held_out_probes, golden_sources=sources,
                                   superseded=superseded)
            ledger = build.ledger
            table = frame(build.examples, EXAMPLE_COLUMNS)
            version = version_of(fingerprint(table, ["id", "prompt", "answer", "split"]), inputs, config_of(policy), code="6")
        artifact = Artifact.create(store, context.asset_key, version)
        with artifact.writing() as out:
            if segmented:  # each segment's tables and HF shards linked; the feedback examples the last part
                link_instructions(store, spec.name, segments.keys, out, extra, frame(feedback.dropped, DROPPED_COLUMNS))
                extra_counts = link_instruction_hf(store, spec.name, segments.keys, out, extra)
                sizes = dict(segments.splits + Counter(extra_counts["splits"]))
                mix = dict(segments.origins + Counter(extra_counts["origins"]))
            else:
                write_table(out, "examples.parquet", table)
                write_table(out, "dropped.parquet", frame(build.dropped, DROPPED_COLUMNS))
                sizes = save_splits(table, ["train", "validation"], out / "hf", {"source_doc_id": "string",
                                                                                  "batch": "string", "origin": "string"})
                mix = table["origin"].value_counts().to_dict() if len(table) else {}
            write_json(out, "ledger.json", ledger.to_dict())
            write_json(out, "manifest.json", {"batches": included, "corpus": corpus.key, "golden": golden_dataset.key,
                                              "feedback_examples": len(feedback_docs), "policy": policy.model_dump(),
                                              "knowledge_examples": pq_rows(knowledge_examples.file("examples.parquet")),
                                              "corpus_documents": int(corpus.read_json("ledger.json")["kept"]),
                                              "segments": segments.keys if segmented else None})
        return emit(artifact, {
            **ledger_metadata(ledger),
            "segments_made": MetadataValue.int(segments.made if segmented else 0),
            "segments_reused": MetadataValue.int(segments.reused if segmented else 0),
            "segments_guarded_against_holdout": MetadataValue.int(segments.guarded if segmented else 0),
            "train_examples": MetadataValue.int(sizes.get("train", 0)),
            "validation_examples": MetadataValue.int(sizes.get("validation", 0)),
            "batches": MetadataValue.int(len(included)),
            "batch_names": MetadataValue.json(included),
            "feedback_examples": MetadataValue.int(len(feedback_docs)),
            "mix": MetadataValue.json({str(k): int(v) for k, v in sorted(mix.items())}),
            "text_strategy": MetadataValue.text(policy.text_strategy),
        })

    @asset(key=key(spec, "dataset_card"), kinds={"markdown"}, code_version="3",
           ins={"instruction_dataset": AssetIn(key=key(spec, "instruction_dataset"))},
           automation_condition=FOLLOW_UPSTREAM, **stage)
    def dataset_card(context: AssetExecutionContext, model_source: BaseModelSource, store: ArtifactStore,
                     instruction_dataset: Artifact) -> Output[Artifact]:
        """A datasheet for the training data: volume and tokens per split, lengths, source mix, drop and
        duplicate ratios, redaction counts and diversity, with a warning when training data is thin. It
        describes exactly the golden set and corpus versions the dataset was built from. Token lengths are
        counted once per instruction segment (reviewers' examples each time); diversity is read from up to
        DIVERSITY_SAMPLE train examples."""
        manifest = instruction_dataset.read_json("manifest.json")
        tokenizer = model_source.for_model(spec.base_model, spec.base_model_revision).tokenizer()
        lengths, counted = None, None
        if manifest.get("segments") is not None:  # token lengths counted once per segment; the text is not read whole
            counted = segment_lengths(store, spec.name, manifest["segments"], tokenizer)
            lengths = counted.lengths
            examples = instruction_dataset.read_table("examples.parquet", columns=CARD_COLUMNS)
            extra = instruction_dataset.file("examples.parquet") / EXTRA_PART  # reviewers' examples, the last part
            if extra.exists():
                added = pd.read_parquet(extra, columns=["split", "messages"])
                for split in lengths:
                    lengths[split] = lengths[split] + token_lengths(added[added["split"] == split], tokenizer)
        else:
            examples = instruction_dataset.read_table("examples.parquet")
        golden = store.read_table(f"{spec.name}/golden_dataset", manifest["golden"], "examples.parquet")
        batches = store.read_json(f"{spec.name}/corpus", manifest["corpus"], "batches.json")["batches"]
        corpus_ledger = store.read_json(f"{spec.name}/corpus", manifest["corpus"], "ledger.json")
        curation, redactions, raw_records = Counter(), Counter(), 0
        for batch in manifest["batches"]:
            ledgers = batches[batch]["ledgers"]
            raw_records += ledgers["raw_documents"]["records_in"]
            curation.update(ledgers["raw_documents"]["quarantined"])
            curation.update(ledgers["cleaned_documents"]["dropped"])
            redactions.update(batches[batch]["audit"]["entities"])
        curation.update(corpus_ledger["dropped"])
        dataset_drops = instruction_dataset.read_json("ledger.json")["dropped"]
        card = build_card(examples, golden, tokenizer, dict(curation), raw_records, dict(redactions), dataset_drops,
                          spec.dataset.min_train_examples, lengths)
        card["instruction_dataset_version"] = instruction_dataset.version
        card["model"] = spec.name
        markdown = card_markdown(card)
        version = version_of(markdown, {"instruction_dataset": instruction_dataset.version})
        artifact = Artifact.create(store, context.asset_key, version)
        with artifact.writing() as out:
            write_json(out, "card.json", card)
            (out / "card.md").write_text(markdown, encoding="utf-8")
        splits = card["splits"]
        return emit(artifact, {
            "card": MetadataValue.md(markdown),
            "train_examples": MetadataValue.int(splits.get("train", {}).get("examples", 0)),
            "train_tokens": MetadataValue.int(splits.get("train", {}).get("tokens", 0)),
            "drop_ratio": MetadataValue.float(card["curation"]["drop_ratio"]),
            "duplicate_ratio": MetadataValue.float(card["curation"]["duplicate_ratio"]),
            "segments_tokenized": MetadataValue.int(counted.made if counted else 0),
            "segments_reused": MetadataValue.int(counted.reused if counted else 0),
        })

    @asset_check(asset=instruction_dataset, blocking=True,
                 description="No golden question appears, exactly or as a near-duplicate, in train or validation.")
    def golden_train_disjoint(instruction_dataset: Artifact) -> AssetCheckResult:
        """Each part of the examples table is checked once against these golden prompts (the verdict kept by the
        part's sha256 and the prompts' hash): one more batch checks one more part."""
        golden_key = instruction_dataset.read_json("manifest.json")["golden"]
        golden = instruction_dataset.store.read_table(f"{spec.name}/golden_dataset", golden_key, "examples.parquet")
        checked = contamination_verdicts(instruction_dataset.store, spec.name, instruction_dataset.file("examples.parquet"),
                                         list(golden["prompt"]))
        hits = sum(v["contaminated"] for v in checked.verdicts)
        return AssetCheckResult(passed=not hits, metadata={
            "golden_examples": MetadataValue.int(len(golden)),
            "examples_checked": MetadataValue.int(sum(v["examples"] for v in checked.verdicts)),
            "contaminated_examples": MetadataValue.int(hits),
            "parts_checked_now": MetadataValue.int(checked.made), "parts_checked_before": MetadataValue.int(checked.reused)})

    @asset_check(asset=instruction_dataset, blocking=True,
                 description="Examples: unique ids, known splits, non-empty prompts and answers (great-expectations).")
    def instruction_dataset_expectations(instruction_dataset: Artifact) -> AssetCheckResult:
        return parts_suite_result(instruction_dataset, spec.name, "examples.parquet", "instruction_dataset_suite",
                                  example_expectations(("train", "validation"), "rows"),
                                  example_expectations(("train", "validation"), "table"),
                                  ["id", "split", "prompt", "answer"], ["id"])

    @asset_check(asset=instruction_dataset, blocking=True,
                 description="Records in = the corpus documents + examples from sections + feedback examples = kept + "
                 "dropped (by reason).")
    def instruction_dataset_ledger(instruction_dataset: Artifact) -> AssetCheckResult:
        manifest = instruction_dataset.read_json("manifest.json")
        expected = manifest["corpus_documents"] + manifest.get("knowledge_examples", 0) + manifest["feedback_examples"]
        return ledger_result(instruction_dataset, "examples.parquet", expected, "corpus + knowledge examples + feedback")

    @asset_check(asset=golden_dataset, blocking=True,
                 description="Golden examples: unique ids, non-empty questions and reference answers (great-expectations).")
    def golden_dataset_expectations(golden_dataset: Artifact) -> AssetCheckResult:
        return suite_result(golden_dataset, "examples.parquet", "golden_dataset_suite", example_expectations(("golden",)))

    @asset_check(asset=golden_dataset, blocking=True,
                 description="Every golden record read is kept or quarantined with file, line and reason.")
    def golden_dataset_ledger(golden_dataset: Artifact) -> AssetCheckResult:
        return ledger_result(golden_dataset, "examples.parquet", expected_in=None)

    @asset_check(asset=dataset_card, description="Warns when the training split is smaller than the model's "
                 "dataset.min_train_examples (overfitting risk).")
    def training_set_size(dataset_card: Artifact) -> AssetCheckResult:
        train = dataset_card.read_json("card.json")["splits"].get("train", {}).get("examples", 0)
        return AssetCheckResult(passed=train >= spec.dataset.min_train_examples, severity=AssetCheckSeverity.WARN,
                                metadata={"train_examples": MetadataValue.int(train),
                                          "minimum": MetadataValue.int(spec.dataset.min_train_examples)})

    return [golden_dataset, instruction_dataset, dataset_card, golden_train_disjoint, instruction_dataset_expectations,
            instruction_dataset_ledger, golden_dataset_expectations, golden_dataset_ledger, training_set_size]
