"""The data graph of both sample models in a temporary project and Dagster instance: the inbox sensors register
each model's batches, the ingestion runs and dataset builds succeed with every blocking check, nothing planted in
the raw data survives into what training will read, the models stay apart, and every step's recorded input
versions are the versions it loaded."""

import json
from collections import Counter

import pytest

from helpers import SAMPLE, new_instance, project_for, sample_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Run once for the module: copy each model's sample inbox, tick its sensor, run what it asks for."""
    from orchestration import workflows

    tmp = tmp_path_factory.mktemp("pipeline")
    support, policy = sample_model("support", tmp / "data"), sample_model("policy", tmp / "data")
    project = project_for(tmp, [support, policy])
    instance = new_instance(project.dagster_home)
    runs = {}
    for spec in project.models:
        batches = workflows.ingest(project, instance, spec, log=lambda _: None)
        datasets = workflows.run_job(project, instance, spec, "build_datasets")[0]
        runs[spec.name] = {"batches": batches, "datasets": datasets}
    yield {"project": project, "instance": instance, "runs": runs, "store": project.definitions.resources["store"],
           "tmp": tmp}
    instance.dispose()


def latest(pipeline, model, asset, partition=None):
    """The artifact of the asset's latest materialization (partition given: of that partition)."""
    from dagster import AssetKey, AssetRecordsFilter

    from resources.artifacts import Artifact

    key = AssetKey([model, asset])
    flt = AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None)
    record = pipeline["instance"].fetch_materializations(flt, limit=1).records[0]
    m = record.event_log_entry.asset_materialization
    return Artifact(f"{model}/{asset}", m.metadata["artifact"].value, m.tags["dagster/data_version"], m.partition,
                    record.storage_id, record.run_id, store=pipeline["store"])


def manifest():
    return [json.loads(line) for line in (SAMPLE / "pii_manifest.jsonl").read_text().splitlines()]


def test_every_batch_ran_and_every_blocking_check_passed(pipeline):
    for model in ("support", "policy"):
        runs = pipeline["runs"][model]
        assert sorted(runs["batches"]) == sorted(p.name for p in (SAMPLE / model / "inbox").iterdir())
        for outcome in [*runs["batches"].values(), runs["datasets"]]:
            assert outcome.success, outcome.message()
            assert [c for c in outcome.failed_checks if c["blocking"]] == []


def test_each_model_has_its_own_partitions_artifacts_and_sensors(pipeline):
    instance, store = pipeline["instance"], pipeline["store"]
    assert sorted(instance.get_dynamic_partitions("policy_batches")) == ["handbooks", "policies", "runbooks.json",
                                                                         "staff_questions.csv", "updates_2026_12"]
    assert "support_qa.csv" in instance.get_dynamic_partitions("support_batches")
    assert store.partitions("policy/raw_documents") and all(
        k.split("@")[0] in {"handbooks", "policies", "runbooks.json", "staff_questions.csv", "updates_2026_12"}
        for k in store.partitions("policy/raw_documents"))
    support_docs = set(latest(pipeline, "support", "corpus").read_table()["doc_id"])
    policy_docs = set(latest(pipeline, "policy", "corpus").read_table()["doc_id"])
    assert support_docs and policy_docs and not support_docs & policy_docs


def test_ledgers_balance_and_chain_stage_to_stage(pipeline):
    from resources.records import Ledger

    for model in ("support", "policy"):
        for batch in pipeline["instance"].get_dynamic_partitions(f"{model}_batches"):
            raw, cleaned, redacted = (Ledger.from_dict(latest(pipeline, model, a, batch).read_json("ledger.json"))
                                      for a in ("raw_documents", "cleaned_documents", "redacted_documents"))
            assert raw.balanced() and cleaned.balanced() and redacted.balanced(), batch
            assert cleaned.records_in == raw.kept and redacted.records_in == cleaned.kept, batch
        corpus = latest(pipeline, model, "corpus")
        batches = corpus.read_json("batches.json")["batches"]
        ledger = corpus.read_json("ledger.json")
        assert ledger["records_in"] == sum(b["documents"] for b in batches.values()) and ledger["balanced"]
        dataset = latest(pipeline, model, "instruction_dataset")
        manifest_ = dataset.read_json("manifest.json")
        assert dataset.read_json("ledger.json")["records_in"] == (ledger["kept"] + manifest_["knowledge_examples"]
                                                                  + manifest_["feedback_examples"])
    assert latest(pipeline, "support", "instruction_dataset").read_json("manifest.json")["feedback_examples"] == 1


def test_documents_of_every_format_become_passages_that_trace_to_their_files(pipeline):
    """The policy model's handbooks (a DOCX, a PDF with an outline, a Markdown manual over 50,000 characters):
    each is one document, none refused for its length; its passages carry their sections and the file's sha256."""
    import hashlib

    raw = latest(pipeline, "policy", "raw_documents", "handbooks")
    docs = raw.read_table()
    assert sorted(docs["source_path"]) == ["handbooks/admin_manual.md", "handbooks/employee_handbook.docx",
                                           "handbooks/services_agreement.pdf"]
    assert raw.read_table("quarantine.parquet").empty and docs["text"].str.len().max() > 50_000
    chunks = latest(pipeline, "policy", "document_chunks").read_table("chunks.parquet")
    for path in docs["source_path"]:
        sha = hashlib.sha256((SAMPLE / "policy" / "inbox" / path).read_bytes()).hexdigest()
        mine = chunks[chunks["source_path"] == path]
        assert len(mine) >= 3 and set(mine["source_sha256"]) == {sha} and (mine["section"] != "").all(), path
    sections = set(chunks["section"])
    assert "Quillstack employee handbook > Leave > Carry-over" in sections
    assert "Quillstack master services agreement > 3. Service credits" in sections
    assert any(s.startswith("Quillstack administrator manual > 2. Audit log") for s in sections)
    carry = chunks[chunks["section"] == "Quillstack employee handbook > Leave > Carry-over"]["text"].iloc[0]
    assert "Up to 5 unused days" in carry
    index = latest(pipeline, "policy", "knowledge_index").read_json("index.json")
    assert index["passages"] == len(chunks) and index["documents"] == chunks["doc_id"].nunique()


def test_bad_inputs_are_quarantined_with_reasons(pipeline):
    tickets = latest(pipeline, "support", "raw_documents", "ticket_export_2026_11.jsonl").read_table("quarantine.parquet")
    assert {"malformed_json", "invalid_utf8", "empty_record", "unrecognised_schema", "oversized_record"} <= set(tickets["reason"])
    assert tickets["line"].notna().all()
    attachment = latest(pipeline, "support", "raw_documents", "attachment.bin").read_table("quarantine.parquet")
    assert list(attachment["reason"]) == ["unsupported_format"]


def test_the_corpus_reads_every_batchs_check_verdicts_in_one_query_per_check(pipeline):
    """check_statuses (what the corpus asks, one query per check for all batches) gives each batch the verdicts
    check_status reads from that batch's own history."""
    from dagster import AssetKey

    from resources.artifacts import check_status, check_statuses, materialization_record

    instance = pipeline["instance"]
    names = ["no_residual_pii", "redacted_documents_expectations", "redacted_documents_ledger"]
    for model in ("support", "policy"):
        loaded = {b: latest(pipeline, model, "redacted_documents", b) for b in instance.get_dynamic_partitions(f"{model}_batches")}
        fast = check_statuses(instance, AssetKey([model, "redacted_documents"]), {b: a.storage_id for b, a in loaded.items()}, names)
        assert len(fast) == len(loaded) >= 2
        for batch, artifact in loaded.items():
            assert fast[batch] is not None and set(fast[batch].values()) <= {"passed", "failed"}
            assert fast[batch] == check_status(instance, materialization_record(instance, artifact), names)
        stale = check_statuses(instance, AssetKey([model, "redacted_documents"]), {b: 1 for b in loaded}, names)
        assert set(stale.values()) == {None}  # not the materialization the checks evaluated: asked one by one


def test_duplicates_are_dropped_within_a_batch_and_across_batches_in_arrival_order(pipeline):
    reasons = Counter()
    for batch in pipeline["instance"].get_dynamic_partitions("support_batches"):
        reasons.update(latest(pipeline, "support", "cleaned_documents", batch).read_json("ledger.json")["dropped"])
    assert reasons["exact_duplicate"] >= 8 and reasons["near_duplicate"] >= 4  # the planted copies inside support_qa
    assert reasons["language"] >= 3 and reasons["too_short"] >= 1 and reasons["repeated_lines"] >= 1
    corpus = latest(pipeline, "support", "corpus")
    dropped = corpus.read_table("dropped.parquet")
    earlier = set(latest(pipeline, "support", "redacted_documents", "support_qa.csv").read_table()["doc_id"])
    later = set(latest(pipeline, "support", "redacted_documents", "ticket_export_2026_11.jsonl").read_table()["doc_id"])
    cross = dropped[dropped["doc_id"].isin(later)]
    assert len(cross) >= 4 and all(any(i in d for i in earlier) for d in cross["detail"])  # the later copy goes


def test_no_planted_pii_reaches_training_or_golden_data(pipeline):
    from datasets import load_from_disk

    texts = []
    for model in ("support", "policy"):
        for asset in ("instruction_dataset", "golden_dataset"):
            data = load_from_disk(str(latest(pipeline, model, asset).path / "hf"))
            texts += [m["content"] for split in data.values() for row in split for m in row["messages"]]
    blob = "\n".join(texts)
    assert [(p["entity_type"], p["record_id"]) for p in manifest() if p["value"] in blob] == []
    canaries = json.loads((SAMPLE / "canaries.json").read_text())["canaries"]
    assert not any(c["value"] in blob for c in canaries)


def test_golden_contamination_is_removed_from_training(pipeline):
    dataset = latest(pipeline, "support", "instruction_dataset")
    assert (dataset.read_table("dropped.parquet")["reason"] == "golden_contamination").sum() >= 2
    assert set(dataset.read_table("examples.parquet")["split"]) == {"train", "validation"}


def test_reviewer_corrections_reach_golden_and_training_redacted(pipeline):
    golden = latest(pipeline, "support", "golden_dataset").read_table("examples.parquet").set_index("id")
    assert golden.loc["G-001", "answer"].startswith("The Free plan allows 3 boards per workspace, up to 5 members")
    assert golden.loc["G-001", "origin"] == "curated+reviewed"
    examples = latest(pipeline, "support", "instruction_dataset").read_table("examples.parquet")
    [added] = examples[examples["batch"] == "human_feedback"].to_dict("records")
    assert added["external_id"] == "srv-000173" and "<EMAIL_ADDRESS>" in added["answer"]
    assert "maria.lopez@example.com" not in added["answer"]
    ledger = latest(pipeline, "support", "human_feedback").read_json("ledger.json")
    assert ledger["kept"] == 5 and ledger["quarantined"] == {"invalid_verdict": 1} and ledger["balanced"]
    assert latest(pipeline, "policy", "human_feedback").read_json("ledger.json")["kept"] == 0  # its own (none)


def test_knowledge_index_finds_golden_sources(pipeline):
    index = latest(pipeline, "support", "knowledge_index")
    info = index.read_json("index.json")
    assert info["documents"] == latest(pipeline, "support", "corpus").read_json("ledger.json")["kept"] and info["dim"] == 384
    hidden = json.loads((index.path / "hidden.json").read_text())
    assert len(hidden["superseded"]) == 2 and hidden["unindexed"] == []  # KB-0002 and QA-0135: a later version each
    # freshness: the trial went from 14 to 30 days in a later batch; retrieval serves only the new version
    from resources.retrieval.index import KnowledgeIndexer

    found = KnowledgeIndexer().load(index.path).passages(["How long is the free trial of the Business plan?"], 10)[0]
    texts = " ".join(p["text"] for p in found)
    assert "30-day trial" in texts and "14-day trial" not in texts
    examples = latest(pipeline, "support", "instruction_dataset").read_table("examples.parquet")
    assert not examples["answer"].str.contains("14-day trial").any()  # no example of the superseded versions
    assert info["golden_questions_with_source"] >= 25
    assert info["recall"]["recall@5"] >= 0.6 and info["recall"]["recall@1"] <= info["recall"]["recall@5"]


def test_dataset_card_describes_the_data(pipeline):
    card_artifact = latest(pipeline, "support", "dataset_card")
    card = card_artifact.read_json("card.json")
    assert card["splits"]["train"]["examples"] > 100 and card["splits"]["train"]["tokens"] > 5000
    assert card["splits"]["golden"]["examples"] == 57  # data/sample/support/golden.jsonl: 45 answerable, 12 not
    assert set(card["redactions_by_entity"]) >= {"PERSON", "EMAIL_ADDRESS", "API_KEY", "CREDIT_CARD"}
    assert 0 < card["curation"]["duplicate_ratio"] < card["curation"]["drop_ratio"] < 1
    assert (card_artifact.path / "card.md").read_text().startswith("# Dataset card")


def test_redaction_counts_are_a_picture_in_the_ui_and_beside_the_artifact(pipeline):
    from dagster import AssetKey

    redacted = latest(pipeline, "support", "redacted_documents", "support_qa.csv")
    assert (redacted.path / "redactions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    event = pipeline["instance"].get_latest_materialization_event(AssetKey(["support", "redacted_documents"]))
    assert event.asset_materialization.metadata["redactions_chart"].value.startswith("![redactions by entity](data:image/png;base64,")
    # per file: where false positives would stand out (counts per entity type, never the values)
    from dagster import AssetRecordsFilter

    [record] = pipeline["instance"].fetch_materializations(AssetRecordsFilter(
        asset_key=AssetKey(["support", "redacted_documents"]), asset_partitions=["support_qa.csv"]), limit=1).records
    by_file = redacted.read_json("audit.json")["by_file"]
    table = record.event_log_entry.asset_materialization.metadata["redactions_by_file"].value
    assert by_file and all(sum(c.values()) > 0 for c in by_file.values())
    top = max(by_file, key=lambda f: sum(by_file[f].values()))
    assert f"| {top} | {sum(by_file[top].values())} |" in table and "PERSON" in table


def test_every_step_loaded_exactly_the_versions_dagster_recorded(pipeline):
    """For every materialization: the upstream versions the step loaded (the `inputs` metadata) are the input data
    versions and event pointers Dagster recorded for it — the partition fan-in of the corpus (Dagster's hash of
    the partitions' versions), the same-partition handoffs and human_feedback included."""
    from dagster import AssetRecordsFilter

    from resources.artifacts import partitions_version

    instance = pipeline["instance"]
    checked = Counter()
    for key in instance.get_asset_keys():
        for record in instance.fetch_materializations(AssetRecordsFilter(asset_key=key), limit=1000).records:
            m = record.event_log_entry.asset_materialization
            recorded = {k.removeprefix("dagster/input_data_version/"): v for k, v in m.tags.items()
                        if k.startswith("dagster/input_data_version/")}
            pointers = {k.removeprefix("dagster/input_event_pointer/"): v for k, v in m.tags.items()
                        if k.startswith("dagster/input_event_pointer/")}
            loaded = m.metadata["inputs"].value if "inputs" in m.metadata else {}
            assert set(loaded) == set(recorded), (key, m.partition)
            for upstream, info in loaded.items():
                if "partitions" in info:
                    versions = {p: i["data_version"] for p, i in info["partitions"].items()}
                    assert partitions_version(versions) == recorded[upstream]
                    assert max(i["storage_id"] for i in info["partitions"].values()) <= int(pointers[upstream])
                    checked["fan-in"] += 1
                elif m.partition:
                    assert partitions_version({m.partition: info["data_version"]}) == recorded[upstream]
                    checked["partition"] += 1
                elif info.get("missing"):  # an optional input never materialized
                    assert recorded[upstream] == "INITIAL" and pointers[upstream] == "NULL"
                else:
                    assert info["data_version"] == recorded[upstream], (key, upstream)
                    assert str(info["storage_id"]) == pointers[upstream], (key, upstream)
                    checked[upstream.split("/")[-1]] += 1
    assert checked["fan-in"] >= 2 and checked["partition"] >= 16 and checked["human_feedback"] >= 4


def test_passages_vectors_and_examples_are_built_one_corpus_segment_at_a_time(pipeline):
    """document_chunks, knowledge_index, knowledge_examples and instruction_dataset each hold one segment per corpus
    segment, in the corpus's order (the sample models' examples are document-local: titles to instructions, Q/A
    records, no sections for policy)."""
    corpus = latest(pipeline, "support", "corpus")
    chains = corpus.read_json("batches.json")["segments"]
    chunks = latest(pipeline, "support", "document_chunks").read_json("manifest.json")
    assert chunks["corpus_segments"] == chains and len(chunks["segments"]) == len(chains) >= 3
    index = latest(pipeline, "support", "knowledge_index")
    assert len(index.read_json("index.json")["segments"]) == len(chains)
    assert index.read_json("index.json")["passages"] == len(index.read_table("passages.parquet"))
    examples = latest(pipeline, "support", "knowledge_examples").read_json("manifest.json")
    assert examples["corpus_segments"] == chains and len(examples["segments"]) == len(chains)
    dataset = latest(pipeline, "support", "instruction_dataset")
    assert len(dataset.read_json("manifest.json")["segments"]) == len(chains)
    assert dataset.read_json("ledger.json")["balanced"]
    assert dataset.read_json("ledger.json")["kept"] == len(dataset.read_table("examples.parquet")) > 20
    policy = latest(pipeline, "policy", "instruction_dataset")
    assert len(policy.read_json("manifest.json")["segments"]) == len(latest(pipeline, "policy", "corpus").read_json("batches.json")["segments"])
    # what training loads: the segments' HF shards linked, the same rows as the examples table; the card counts them
    from datasets import load_from_disk

    table, hf = dataset.read_table("examples.parquet"), load_from_disk(str(dataset.file("hf")))
    for split in ("train", "validation"):
        assert hf[split]["id"] == list(table[table["split"] == split]["id"])
    assert len(list(dataset.file("hf").joinpath("train").glob("*.arrow"))) >= len(chains)
    card = latest(pipeline, "support", "dataset_card").read_json("card.json")
    assert card["splits"]["train"]["examples"] == len(hf["train"]) and card["splits"]["train"]["tokens"] > 0
    assert card["diversity"]["examples_read"] == len(hf["train"])


def test_a_new_batch_processes_only_that_batch_and_only_its_model(pipeline):
    from orchestration import workflows

    project, instance = pipeline["project"], pipeline["instance"]
    support, policy = project.model("support"), project.model("policy")
    before = {b: latest(pipeline, "support", "cleaned_documents", b).key for b in instance.get_dynamic_partitions("support_batches")}
    runs_before = len(instance.get_run_records())
    assert workflows.ingest(project, instance, support, lambda _: None) == {}  # same content, no new runs
    (pipeline["tmp"] / "data" / "support" / "inbox" / "late_tickets.jsonl").write_text(
        json.dumps({"id": "LT-1", "prompt": "Can I pause my subscription for a month?",
                    "completion": "Yes, workspace owners can pause billing for up to 3 months from Settings > Billing."}) + "\n")
    assert workflows.ingest(project, instance, policy, lambda _: None) == {}  # the other model sees nothing
    third = workflows.ingest(project, instance, support, lambda _: None)
    assert list(third) == ["late_tickets.jsonl"] and third["late_tickets.jsonl"].success
    assert len(instance.get_run_records()) == runs_before + 1
    for batch, key in before.items():
        assert latest(pipeline, "support", "cleaned_documents", batch).key == key
    assert "late_tickets.jsonl" not in instance.get_dynamic_partitions("policy_batches")


def test_no_planted_pii_in_dagster_event_log_or_metadata(pipeline):
    """Dagster's own storage (run logs, materialization metadata, check results) and every artifact outside the raw
    zone never hold a planted value: only counts, hashes and ids leave the raw zone."""
    import pandas as pd
    from dagster._serdes import serialize_value

    instance = pipeline["instance"]
    text = "\n".join(serialize_value(entry) for run in instance.get_runs() for entry in instance.all_logs(run.run_id))
    planted = {row["value"] for row in manifest() if len(row["value"]) >= 6}
    assert len(text) > 10_000 and planted
    assert sorted(v for v in planted if v in text) == []

    root = pipeline["project"].state / "artifacts"
    blobs = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        zone = path.relative_to(root).parts[1]
        if zone in {"raw_documents", "cleaned_documents"} or path.suffix in (".npy", ".png"):
            continue
        blobs.append(pd.read_parquet(path).to_json() if path.suffix == ".parquet" else path.read_bytes().decode("latin-1"))
    assert len(blobs) > 20
    outside = "\n".join(blobs)
    assert sorted(v for v in planted if v in outside) == []


def test_forget_removes_a_document_from_every_version_of_every_stage(pipeline):
    """Right to be forgotten (runs last: it changes the module's data). A support answer that reached the
    instruction dataset is forgotten: it leaves every stage and, with purge, every stored version."""
    from orchestration import workflows
    from resources.governance.forget import reach

    project, store = pipeline["project"], pipeline["store"]
    dataset = latest(pipeline, "support", "instruction_dataset")
    examples = dataset.read_table("examples.parquet")
    doc_id = examples[examples["batch"] == "support_qa.csv"]["source_doc_id"].iloc[0]
    before = reach(store, project.names, {doc_id})
    assert len(before["support/raw_documents"]) == 1 and dataset.key in before["support/instruction_dataset"]
    assert not [k for k in before if k.startswith("policy/")]

    result = workflows.forget(project, doc_id=doc_id, purge_versions=True)
    assert result.after == {} and all(o.success for o in result.reruns)
    assert latest(pipeline, "support", "instruction_dataset").key != dataset.key
    for key in store.partitions("support/instruction_dataset"):  # every stored version, not only the latest
        assert doc_id not in set(store.read_table("support/instruction_dataset", key, "examples.parquet")["source_doc_id"])
    raw = latest(pipeline, "support", "raw_documents", "support_qa.csv")
    assert raw.read_json("ledger.json")["dropped"] == {"forgotten": 1} and raw.read_json("ledger.json")["balanced"]
    assert raw.read_json("forgotten.json") == [doc_id]



def test_raft_and_qa_examples_are_made_one_batch_at_a_time_through_the_graph(tmp_path):
    """A model whose sections train by `headings`, `raft` and `qa` (the scripted teacher on 127.0.0.1 stands in for
    a large teacher LLM): knowledge_examples is made one segment per batch through Dagster, each raft question
    grounded among retrieved passages; a late batch makes its own segment only, asks the teacher about its own
    passages only, and leaves every earlier segment as it was."""
    from orchestration import workflows
    from resources.knowledge.teacher import TeacherModel
    from servers.openai_server import serve
    from servers.scripted_teacher import build_teacher

    support = sample_model("support", tmp_path / "data", dataset={"validation_fraction": 0.1, "text_strategy": "sections",
                                                                  "min_train_examples": 10, "golden_holdout_fraction": 0.2},
                           knowledge={"chunk_tokens": 128, "chunk_overlap_tokens": 16, "strategies": ["headings", "raft", "qa"],
                                      "raft_distractors": 2, "golden_from": "teacher"})
    teacher = build_teacher()
    server = serve(teacher)
    url = server.__enter__()
    project = project_for(tmp_path, [support], teacher=TeacherModel(base_url=url, model="teacher",
                                                                     cache_dir=str(tmp_path / "teacher_cache")))
    instance = new_instance(project.dagster_home)
    try:
        workflows.ingest(project, instance, support, log=lambda _: None)
        outcome = workflows.run_job(project, instance, support, "build_datasets")[0]
        assert outcome.success, (outcome.failed_steps, outcome.failed_checks)
        view = {"instance": instance, "store": project.definitions.resources["store"]}
        first = latest(view, "support", "knowledge_examples")
        counts = first.read_json("counts.json")
        assert first.read_json("manifest.json")["segments"] and counts["raft_kept"] > 0 and counts["headings_kept"] > 0
        assert counts["qa_kept"] > 0 and counts["qa_dropped_unsupported"] > 0  # the judge drops the scripted wrong pair
        asked, judged = teacher.state.calls["qa"], teacher.state.calls["judge"]
        (tmp_path / "data" / "support" / "inbox" / "late_article.jsonl").write_text(json.dumps({
            "id": "KB-LATE", "title": "Pausing a subscription",
            "text": "## Pausing\n\nWorkspace owners can pause billing for up to 3 months from Settings > Billing. "
                    "Paused workspaces keep their data.\n\n## Resuming\n\nBilling resumes on the date you choose, or "
                    "when an owner resumes it from Settings > Billing."}) + "\n")
        assert workflows.ingest(project, instance, support, log=lambda _: None)
        outcome = workflows.run_job(project, instance, support, "build_datasets")[0]
        assert outcome.success, (outcome.failed_steps, outcome.failed_checks)
        second = latest(view, "support", "knowledge_examples")
        before, after = first.read_json("manifest.json")["segments"], second.read_json("manifest.json")["segments"]
        assert after[: len(before)] == before and len(after) == len(before) + 1
        from dagster import AssetKey

        [record] = instance.fetch_materializations(AssetKey(["support", "knowledge_examples"]), limit=1).records
        metadata = record.event_log_entry.asset_materialization.metadata
        assert (metadata["segments_made"].value, metadata["segments_reused"].value) == (1, len(before))
        usage = metadata["teacher"].value
        assert usage["calls"] == teacher.state.calls["qa"] - asked + teacher.state.calls["judge"] - judged
        assert usage["cached"] == 0 and 0 < teacher.state.calls["qa"] - asked <= 4  # the late article's passages only
        assert second.read_json("counts.json")["qa_kept"] > counts["qa_kept"]
        [record] = instance.fetch_materializations(AssetKey(["support", "golden_dataset"]), limit=1).records
        golden = record.event_log_entry.asset_materialization.metadata  # the teacher's hold-out, one segment per batch
        assert golden["holdout_segments_made"].value == 1 and golden["holdout_segments_reused"].value == len(before)
        assert golden["by_origin"].value.get("holdout:qa", 0) > 0 and golden["teacher"].value["segments_unfinished"] == 0
    finally:
        instance.dispose()
        server.__exit__(None, None, None)
