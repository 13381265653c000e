"""The whole data graph on the shipped sample corpus, in a temporary Dagster instance: the sensor
registers the batches, the ingestion runs and the dataset build succeed with every blocking check,
and nothing planted in the raw data survives into what training will read."""

import json
import shutil
import subprocess
import sys
from collections import Counter

import pytest

from orchestration.cli import run_pipeline
from orchestration.definitions import build_definitions
from resources.datasets.policy import DatasetPolicy
from resources.evaluation.feedback import FeedbackSource
from resources.ingestion.inbox import Inbox
from resources.storage import ArtifactStore
from conftest import ROOT, SAMPLE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Run once for the module: copy the sample inbox, tick the sensor, run what it asks for."""
    import os

    from dagster import DagsterInstance

    tmp = tmp_path_factory.mktemp("pipeline")
    home = tmp / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "config" / "dagster" / "dagster.yaml").read_text())
    os.environ["DAGSTER_HOME"] = str(home)
    inbox_dir = tmp / "inbox"
    shutil.copytree(SAMPLE / "inbox", inbox_dir)
    shutil.copytree(SAMPLE / "feedback", tmp / "feedback")
    defs = build_definitions(
        inbox=Inbox(path=str(inbox_dir), settle_seconds=0, forget_list=str(tmp / "forget.yaml")),
        feedback=FeedbackSource(path=str(tmp / "feedback"), endpoint_database_url=None),
        store=ArtifactStore(root=str(tmp / "artifacts")),
        datasets=DatasetPolicy(golden_paths=[str(SAMPLE / "golden.jsonl")]),
    )
    instance = DagsterInstance.get()
    summary = run_pipeline(instance, defs, log=lambda *_: None)
    yield {"defs": defs, "instance": instance, "summary": summary, "store": defs.resources["store"], "inbox": inbox_dir}
    instance.dispose()


def manifest():
    return [json.loads(line) for line in (SAMPLE / "pii_manifest.jsonl").read_text().splitlines()]


def test_every_batch_ran_and_every_check_passed(pipeline):
    instance, summary = pipeline["instance"], pipeline["summary"]
    batches = sorted(p.name for p in (SAMPLE / "inbox").iterdir())
    assert sorted(summary["batches"]) == batches

    repo = pipeline["defs"].get_repository_def()
    failed = []
    for check_key in repo.asset_graph.asset_check_keys:
        for record in instance.event_log_storage.get_asset_check_execution_history(check_key, limit=100):
            evaluation = record.event.dagster_event.event_specific_data if record.event and record.event.dagster_event else None
            if evaluation is not None and hasattr(evaluation, "passed") and not evaluation.passed:
                failed.append((check_key.to_user_string(), evaluation.severity.value))
    blocking_failures = [f for f in failed if f[1] == "ERROR"]
    assert blocking_failures == []


def test_ledgers_balance_and_chain_stage_to_stage(pipeline):
    store = pipeline["store"]
    for batch in store.partitions("raw_documents"):
        raw = store.read_json("raw_documents", batch, "ledger.json")
        cleaned = store.read_json("cleaned_documents", batch, "ledger.json")
        redacted = store.read_json("redacted_documents", batch, "ledger.json")
        assert raw["balanced"] and cleaned["balanced"] and redacted["balanced"], batch
        assert cleaned["records_in"] == raw["kept"] and redacted["records_in"] == cleaned["kept"], batch
    total_redacted = sum(len(store.read_table("redacted_documents", b)) for b in store.partitions("redacted_documents"))
    dataset = store.read_json("instruction_dataset", store.latest("instruction_dataset"), "ledger.json")
    manifest = store.read_json("instruction_dataset", store.latest("instruction_dataset"), "manifest.json")
    assert manifest["feedback_examples"] == 1
    assert dataset["records_in"] == total_redacted + 1 and dataset["balanced"]


def test_bad_inputs_are_quarantined_with_reasons(pipeline):
    store = pipeline["store"]
    tickets = store.read_table("raw_documents", "ticket_export_2026_11.jsonl", "quarantine.parquet")
    assert {"malformed_json", "invalid_utf8", "empty_record", "unrecognised_schema", "oversized_record"} <= set(tickets["reason"])
    assert tickets["line"].notna().all()
    attachment = store.read_table("raw_documents", "attachment.bin", "quarantine.parquet")
    assert list(attachment["reason"]) == ["unsupported_format"]


def test_curation_drops_junk_and_duplicates_across_batches(pipeline):
    store = pipeline["store"]
    reasons = Counter()
    for batch in store.partitions("cleaned_documents"):
        reasons.update(store.read_json("cleaned_documents", batch, "ledger.json")["dropped"])
    assert reasons["exact_duplicate"] >= 8 and reasons["near_duplicate"] >= 4
    assert reasons["language"] >= 3
    assert reasons["too_short"] >= 1 and reasons["repeated_lines"] >= 1
    later = store.read_table("cleaned_documents", "ticket_export_2026_11.jsonl", "dropped.parquet")
    earlier_ids = set(store.read_table("cleaned_documents", "support_qa.csv")["doc_id"])
    cross = [d for d in later["detail"] if any(i in d for i in earlier_ids)]
    assert len(cross) >= 4, "the later batch must be de-duplicated against the earlier one"


def test_no_planted_pii_reaches_training_or_golden_data(pipeline):
    from datasets import load_from_disk

    store = pipeline["store"]
    version = store.latest("instruction_dataset")
    dataset = load_from_disk(str(store.partition_dir("instruction_dataset", version) / "hf"))
    golden = load_from_disk(str(store.partition_dir("golden_dataset", store.latest("golden_dataset")) / "hf"))
    texts = [m["content"] for split in dataset.values() for row in split for m in row["messages"]]
    texts += [m["content"] for split in golden.values() for row in split for m in row["messages"]]
    blob = "\n".join(texts)
    leaked = [(p["entity_type"], p["record_id"]) for p in manifest() if p["value"] in blob]
    assert leaked == []
    canaries = json.loads((SAMPLE / "canaries.json").read_text())["canaries"]
    assert not any(c["value"] in blob for c in canaries)


def test_golden_contamination_is_removed_from_training(pipeline):
    store = pipeline["store"]
    dropped = store.read_table("instruction_dataset", store.latest("instruction_dataset"), "dropped.parquet")
    assert (dropped["reason"] == "golden_contamination").sum() >= 2
    examples = store.read_table("instruction_dataset", store.latest("instruction_dataset"), "examples.parquet")
    assert set(examples["split"]) == {"train", "validation"}


def test_reviewer_corrections_reach_golden_and_training_redacted(pipeline):
    store = pipeline["store"]
    golden = store.read_table("golden_dataset", store.latest("golden_dataset"), "examples.parquet").set_index("id")
    assert golden.loc["G-001", "answer"].startswith("The Free plan allows 3 boards per workspace, up to 5 members")
    assert golden.loc["G-001", "origin"] == "curated+reviewed"
    examples = store.read_table("instruction_dataset", store.latest("instruction_dataset"), "examples.parquet")
    [added] = examples[examples["batch"] == "human_feedback"].to_dict("records")
    assert added["external_id"] == "srv-000173" and "<EMAIL_ADDRESS>" in added["answer"]
    assert "maria.lopez@example.com" not in added["answer"]
    ledger = store.read_json("human_feedback", "current", "ledger.json")
    assert ledger["kept"] == 5 and ledger["quarantined"] == {"invalid_verdict": 1} and ledger["balanced"]


def test_knowledge_index_finds_golden_sources(pipeline):
    store = pipeline["store"]
    info = store.read_json("knowledge_index", store.latest("knowledge_index"), "index.json")
    redacted = sum(len(store.read_table("redacted_documents", b)) for b in store.partitions("redacted_documents"))
    assert info["documents"] == redacted and info["dim"] == 384
    assert info["golden_questions_with_source"] >= 25
    assert info["recall"]["recall@5"] >= 0.6 and info["recall"]["recall@1"] <= info["recall"]["recall@5"]


def test_dataset_card_describes_the_data(pipeline):
    store = pipeline["store"]
    card = store.read_json("dataset_card", store.latest("dataset_card"), "card.json")
    assert card["splits"]["train"]["examples"] > 100 and card["splits"]["train"]["tokens"] > 5000
    assert card["splits"]["golden"]["examples"] == 30
    assert set(card["redactions_by_entity"]) >= {"PERSON", "EMAIL_ADDRESS", "API_KEY", "CREDIT_CARD"}
    assert 0 < card["curation"]["duplicate_ratio"] < card["curation"]["drop_ratio"] < 1
    assert (store.partition_dir("dataset_card", store.latest("dataset_card")) / "card.md").read_text().startswith("# Dataset card")


def test_a_new_batch_processes_only_that_batch(pipeline):
    instance, store, defs = pipeline["instance"], pipeline["store"], pipeline["defs"]
    before = {b: store.read_json("cleaned_documents", b, "ledger.json") for b in store.partitions("cleaned_documents")}
    runs_before = len(instance.get_run_records())
    again = run_pipeline(instance, defs, log=lambda *_: None)
    assert again["batches"] == {}  # same content, no new runs
    (pipeline["inbox"] / "late_tickets.jsonl").write_text(
        json.dumps({"id": "LT-1", "prompt": "Can I pause my subscription for a month?",
                    "completion": "Yes, workspace owners can pause billing for up to 3 months from Settings > Billing."}) + "\n"
    )
    third = run_pipeline(instance, defs, log=lambda *_: None)
    assert list(third["batches"]) == ["late_tickets.jsonl"]
    assert len(instance.get_run_records()) == runs_before + 1 + 1 + 1  # datasets rebuilt twice, one ingestion
    for batch, ledger in before.items():
        assert store.read_json("cleaned_documents", batch, "ledger.json") == ledger


def test_definitions_validate_from_the_workspace():
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Validation successful" in result.stderr + result.stdout


def test_no_planted_pii_in_dagster_event_log_or_metadata(pipeline):
    """Dagster's own storage (run logs, materialization metadata, check results) and every artifact
    outside the raw zone never hold a planted value: only counts, hashes and ids leave the raw zone."""
    from dagster._serdes import serialize_value

    instance = pipeline["instance"]
    text = "\n".join(serialize_value(entry) for run in instance.get_runs() for entry in instance.all_logs(run.run_id))
    planted = {row["value"] for row in manifest() if len(row["value"]) >= 6}
    assert len(text) > 10_000 and planted
    leaked = sorted(v for v in planted if v in text)
    assert leaked == []

    # every artifact outside the raw zone (raw_documents and cleaned_documents hold unredacted text)
    import pandas as pd

    store = pipeline["store"]
    blobs = []
    for path in sorted(p for p in (store.asset_dir("x").parent).rglob("*") if p.is_file()):
        zone = path.relative_to(store.asset_dir("x").parent).parts[0]
        if zone in {"raw_documents", "cleaned_documents"} or path.suffix == ".npy":
            continue
        blobs.append(pd.read_parquet(path).to_json() if path.suffix == ".parquet" else path.read_bytes().decode("latin-1"))
    outside = "\n".join(blobs)
    assert len(blobs) > 20
    assert sorted(v for v in planted if v in outside) == []


def test_forget_removes_a_document_from_every_dataset_version(pipeline):
    """Right to be forgotten (runs last: it changes the module's data). A support answer that reached the
    instruction dataset is forgotten: it leaves every stage and, with purge, every stored dataset version."""
    from orchestration.cli import forget
    from resources.governance.forget import reach

    store, defs, instance = pipeline["store"], pipeline["defs"], pipeline["instance"]
    dataset = store.read_table("instruction_dataset", store.latest("instruction_dataset"), "examples.parquet")
    doc_id = dataset[dataset["batch"] == "support_qa.csv"]["source_doc_id"].iloc[0]
    old_version = store.latest("instruction_dataset")
    before = reach(store, doc_id=doc_id)
    assert before["raw_documents"] == ["support_qa.csv"] and old_version in before["instruction_dataset"]

    result = forget(instance, defs, doc_id=doc_id, purge_versions=True, log=lambda *_: None)
    assert result["after"] == {}
    assert store.latest("instruction_dataset") != old_version
    for version in store.partitions("instruction_dataset"):  # every stored version, not only the latest
        assert doc_id not in set(store.read_table("instruction_dataset", version, "examples.parquet")["source_doc_id"])
    ledger = store.read_json("raw_documents", "support_qa.csv", "ledger.json")
    assert ledger["dropped"] == {"forgotten": 1} and ledger["balanced"]
    assert store.read_json("raw_documents", "support_qa.csv", "forgotten.json") == [doc_id]
