"""Datasets: the golden set, the instruction dataset and its card, built from all redacted batches."""


from collections import Counter

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AutomationCondition,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from assets.checks import ledger_check, suite_check
from assets.curation import redacted_documents
from assets.feedback import human_feedback, stored_feedback
from assets.metadata import ledger_metadata, reason_table
from assets.partitions import ingestion_batches
from resources.datasets.builder import (
    EXAMPLE_COLUMNS,
    GOLDEN_COLUMNS,
    build_examples,
    contamination,
    golden_guard,
    held_out_golden,
    read_golden_file,
)
from resources.datasets.card import build_card, card_markdown
from resources.datasets.export import save_splits
from resources.datasets.policy import DatasetPolicy
from resources.evaluation.feedback import golden_corrections, training_documents
from resources.models.base_model import BaseModelSource
from resources.quality import example_expectations
from resources.records import DROPPED_COLUMNS, Ledger, fingerprint, frame, rows
from resources.redaction.redactor import PiiRedactor
from resources.storage import ArtifactStore, write_json, write_table

# Unpartitioned datasets follow their partitioned inputs: when new batches land, they rebuild once
# the inputs are complete (declarative automation; see README "Orchestration").
FOLLOW_UPSTREAM = AutomationCondition.eager()


def redacted_batches(context, store: ArtifactStore) -> list[str]:
    """Registered batches whose redacted documents exist (what the datasets are built from)."""
    return [
        b for b in context.instance.get_dynamic_partitions(ingestion_batches.name)
        if store.exists("redacted_documents", b, "documents.parquet")
    ]


def all_redacted(context, store: ArtifactStore) -> pd.DataFrame:
    tables = [store.read_table("redacted_documents", b) for b in redacted_batches(context, store)]
    if not tables:
        raise ValueError("no redacted_documents partition is materialized yet: ingest a batch first")
    return pd.concat(tables, ignore_index=True)


@asset(
    deps=[redacted_documents, human_feedback],
    group_name="datasets",
    kinds={"huggingface", "parquet"},
    code_version="1",
    automation_condition=FOLLOW_UPSTREAM,
)
def golden_dataset(
    context: AssetExecutionContext, datasets: DatasetPolicy, redactor: PiiRedactor, store: ArtifactStore
) -> MaterializeResult:
    """The held-out evaluation set the business trusts: curated golden files plus, if configured, a
    hashed hold-out of the corpus, with reviewers' corrections applied, redacted under the same policy
    as the training data."""
    ledger = Ledger(stage="golden_dataset")
    examples, quarantine = [], []
    for path in datasets.golden_files():
        found, bad = read_golden_file(path, path.as_posix())
        examples += found
        quarantine += bad
    if datasets.golden_holdout_fraction > 0:
        corpus = rows(all_redacted(context, store))
        examples += held_out_golden(corpus, datasets.split_rules(), datasets.text_strategy, datasets.title_template)
    corrections = golden_corrections(stored_feedback(store), {e["id"] for e in examples})
    for example in examples:
        if example["id"] in corrections:
            example["answer"] = corrections[example["id"]]
            example["origin"] = f"{example['origin']}+reviewed"
    for row in quarantine:
        context.log.warning(f"golden record quarantined ({row['reason']}): {row['detail']}")
        ledger.quarantined[row["reason"]] += 1

    redacted = iter(redactor.engine().redact([t for e in examples for t in (e["prompt"], e["answer"])]))
    redactions = Counter()
    for example in examples:
        q, a = next(redacted), next(redacted)
        redactions.update(q.counts + a.counts)
        example.update(prompt=q.text, answer=a.text,
                       messages=[{"role": "user", "content": q.text}, {"role": "assistant", "content": a.text}])
    table = frame(examples, GOLDEN_COLUMNS)
    ledger.kept = len(table)
    ledger.records_in = ledger.kept + sum(ledger.quarantined.values())

    version = fingerprint(table, ["id", "prompt", "answer"])
    with store.writing("golden_dataset", version) as out:
        write_table(out, "examples.parquet", table)
        write_table(out, "quarantine.parquet", pd.DataFrame(quarantine, columns=["source_path", "line", "reason", "detail"]))
        write_json(out, "ledger.json", ledger.to_dict())
        save_splits(table, ["golden"], out / "hf", {"prompt": "string", "answer": "string", "source_doc_id": "string", "tags": "list", "origin": "string"})
    store.set_latest("golden_dataset", version)

    return MaterializeResult(
        metadata={
            **ledger_metadata(ledger, store.partition_dir("golden_dataset", version)),
            "examples": MetadataValue.int(len(table)),
            "reviewer_corrections": MetadataValue.int(len(corrections)),
            "by_origin": MetadataValue.json(table["origin"].value_counts().to_dict()),
            "redactions_by_entity": reason_table(redactions, header="entity"),
            "redaction_policy": MetadataValue.text(redactor.policy().ref),
            "version": MetadataValue.text(version),
        },
        data_version=DataVersion(version),
    )


@asset(
    deps=[redacted_documents, golden_dataset, human_feedback],
    group_name="datasets",
    kinds={"huggingface", "parquet"},
    code_version="1",
    automation_condition=FOLLOW_UPSTREAM,
)
def instruction_dataset(context: AssetExecutionContext, datasets: DatasetPolicy, store: ArtifactStore) -> MaterializeResult:
    """Chat-format training and validation examples from every redacted batch and from reviewers'
    corrections, split by hashed id, with anything that duplicates a golden question removed (the
    contamination guard)."""
    batches = redacted_batches(context, store)
    corpus = all_redacted(context, store)
    golden = store.read_table("golden_dataset", store.latest("golden_dataset"), "examples.parquet")
    feedback_docs = training_documents(stored_feedback(store), set(golden["id"]))
    build = build_examples(
        rows(corpus) + feedback_docs, datasets.split_rules(), datasets.text_strategy, datasets.title_template,
        golden_prompts=list(golden["prompt"]),
    )
    table = frame(build.examples, EXAMPLE_COLUMNS)
    version = fingerprint(table, ["id", "prompt", "answer", "split"])
    with store.writing("instruction_dataset", version) as out:
        write_table(out, "examples.parquet", table)
        write_table(out, "dropped.parquet", frame(build.dropped, DROPPED_COLUMNS))
        write_json(out, "ledger.json", build.ledger.to_dict())
        write_json(out, "manifest.json", {"batches": batches, "golden_version": store.latest("golden_dataset"),
                                          "feedback_examples": len(feedback_docs), "policy": datasets.model_dump()})
        sizes = save_splits(table, ["train", "validation"], out / "hf", {"source_doc_id": "string", "batch": "string", "origin": "string"})
    store.set_latest("instruction_dataset", version)

    return MaterializeResult(
        metadata={
            **ledger_metadata(build.ledger, store.partition_dir("instruction_dataset", version)),
            "train_examples": MetadataValue.int(sizes["train"]),
            "validation_examples": MetadataValue.int(sizes["validation"]),
            "batches": MetadataValue.int(len(batches)),
            "batch_names": MetadataValue.json(batches),
            "feedback_examples": MetadataValue.int(len(feedback_docs)),
            "text_strategy": MetadataValue.text(datasets.text_strategy),
            "version": MetadataValue.text(version),
        },
        data_version=DataVersion(version),
    )


@asset(
    deps=[instruction_dataset, golden_dataset],
    group_name="datasets",
    kinds={"markdown"},
    code_version="1",
    automation_condition=FOLLOW_UPSTREAM,
)
def dataset_card(
    context: AssetExecutionContext, datasets: DatasetPolicy, model_source: BaseModelSource, store: ArtifactStore
) -> MaterializeResult:
    """A datasheet for the training data: volume and tokens per split, lengths, source mix, drop and
    duplicate ratios, redaction counts and diversity, with a warning when training data is thin."""
    version = store.latest("instruction_dataset")
    examples = store.read_table("instruction_dataset", version, "examples.parquet")
    golden = store.read_table("golden_dataset", store.latest("golden_dataset"), "examples.parquet")
    batches = redacted_batches(context, store)
    curation, redactions, raw_records = Counter(), Counter(), 0
    for b in batches:
        raw = store.read_json("raw_documents", b, "ledger.json")
        raw_records += raw["records_in"]
        curation.update(raw["quarantined"])
        curation.update(store.read_json("cleaned_documents", b, "ledger.json")["dropped"])
        redactions.update(store.read_json("redacted_documents", b, "audit.json")["entities"])
    dataset_drops = store.read_json("instruction_dataset", version, "ledger.json")["dropped"]
    card = build_card(examples, golden, model_source.tokenizer(), dict(curation), raw_records, dict(redactions),
                      dataset_drops, datasets.min_train_examples)
    card["instruction_dataset_version"] = version
    markdown = card_markdown(card)
    with store.writing("dataset_card", version) as out:
        write_json(out, "card.json", card)
        (out / "card.md").write_text(markdown, encoding="utf-8")
    store.set_latest("dataset_card", version)

    splits = card["splits"]
    return MaterializeResult(
        metadata={
            "card": MetadataValue.md(markdown),
            "train_examples": MetadataValue.int(splits.get("train", {}).get("examples", 0)),
            "train_tokens": MetadataValue.int(splits.get("train", {}).get("tokens", 0)),
            "drop_ratio": MetadataValue.float(card["curation"]["drop_ratio"]),
            "duplicate_ratio": MetadataValue.float(card["curation"]["duplicate_ratio"]),
            "path": MetadataValue.path(str(store.partition_dir("dataset_card", version) / "card.md")),
        },
        data_version=DataVersion(version),
    )


@asset_check(
    asset=instruction_dataset,
    blocking=True,
    description="No golden question appears, exactly or as a near-duplicate, in train or validation.",
)
def golden_train_disjoint(store: ArtifactStore) -> AssetCheckResult:
    examples = store.read_table("instruction_dataset", store.latest("instruction_dataset"), "examples.parquet")
    golden = store.read_table("golden_dataset", store.latest("golden_dataset"), "examples.parquet")
    guard = golden_guard(golden["prompt"])
    hits = [e for e in examples["prompt"] if contamination(guard, e)]
    return AssetCheckResult(
        passed=not hits,
        metadata={
            "golden_examples": MetadataValue.int(len(golden)),
            "examples_checked": MetadataValue.int(len(examples)),
            "contaminated_examples": MetadataValue.int(len(hits)),
        },
    )


@asset_check(
    asset=dataset_card,
    description="Warns when the training split is smaller than DatasetPolicy.min_train_examples (overfitting risk).",
)
def training_set_size(datasets: DatasetPolicy, store: ArtifactStore) -> AssetCheckResult:
    card = store.read_json("dataset_card", store.latest("dataset_card"), "card.json")
    train = card["splits"].get("train", {}).get("examples", 0)
    return AssetCheckResult(
        passed=train >= datasets.min_train_examples,
        severity=AssetCheckSeverity.WARN,
        metadata={"train_examples": MetadataValue.int(train), "minimum": MetadataValue.int(datasets.min_train_examples)},
    )


def _redacted_rows(context, store: ArtifactStore) -> int:
    manifest = store.read_json("instruction_dataset", store.latest("instruction_dataset"), "manifest.json")
    redacted = sum(len(store.read_table("redacted_documents", b)) for b in manifest["batches"])
    return redacted + manifest.get("feedback_examples", 0)


golden_dataset_expectations = suite_check(
    golden_dataset, lambda: example_expectations(("golden",)), "examples.parquet",
    "Golden examples: unique ids, non-empty questions and reference answers (great-expectations).", partitioned=False,
)
instruction_dataset_expectations = suite_check(
    instruction_dataset, lambda: example_expectations(("train", "validation")), "examples.parquet",
    "Examples: unique ids, known splits, non-empty prompts and answers (great-expectations).", partitioned=False,
)
instruction_dataset_ledger = ledger_check(instruction_dataset, upstream="redacted_documents", upstream_rows=_redacted_rows)
golden_dataset_ledger = ledger_check(golden_dataset, upstream=None)
