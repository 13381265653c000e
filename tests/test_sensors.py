"""The sensors: an inbox batch becomes one partition and one run of its model, exactly once; a dataset version
starts retraining only once its blocking checks (and those of the golden set and corpus it was built from)
passed, never when they failed or have not run, and the run it starts is pinned to that version — also when
the daemon itself evaluates the sensor."""

import json
import os
import shutil
import subprocess
import time

import pytest
from dagster import SkipReason, build_sensor_context

from helpers import ROOT, SAMPLE, project_for, sample_model


def inbox_project(tmp_path, settle_seconds=0):
    from resources.ingestion.inbox import Inbox

    spec = sample_model("support", tmp_path / "data", copy_data=False)
    return project_for(tmp_path, [spec], inbox=Inbox(settle_seconds=settle_seconds)), tmp_path / "data" / "support" / "inbox"


def tick(project, instance, cursor=None, model="support"):
    sensor = project.definitions.resolve_sensor_def(f"{model}_inbox_sensor")
    with build_sensor_context(instance=instance, cursor=cursor, resources={"inbox": project.definitions.resources["inbox"]}) as context:
        result = sensor(context)
    if isinstance(result, SkipReason):
        return result, cursor
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result, result.cursor


def test_new_file_one_request_same_file_none_changed_file_again(tmp_path, dagster_instance):
    project, inbox = inbox_project(tmp_path)
    (inbox / "tickets.jsonl").write_text('{"text": "first version"}\n')
    (inbox / "policies").mkdir()
    (inbox / "policies" / "sla.md").write_text("# SLA\n\n99.9%\n")
    (inbox / ".hidden.jsonl").write_text("ignored")
    (inbox / "upload.jsonl.part").write_text("still copying")

    result, cursor = tick(project, dagster_instance)
    assert sorted(r.partition_key for r in result.run_requests) == ["policies", "tickets.jsonl"]
    assert all(r.tags["tuneforge/model"] == "support" for r in result.run_requests)
    assert sorted(dagster_instance.get_dynamic_partitions("support_batches")) == ["policies", "tickets.jsonl"]
    first_key = next(r.run_key for r in result.run_requests if r.partition_key == "tickets.jsonl")

    again, cursor = tick(project, dagster_instance, cursor)
    assert isinstance(again, SkipReason)

    path = inbox / "tickets.jsonl"  # copied again with the same bytes (new mtime): still nothing
    os.utime(path, (time.time() - 50, time.time() - 50))
    touched, cursor = tick(project, dagster_instance, cursor)
    assert isinstance(touched, SkipReason)

    path.write_text('{"text": "second version"}\n')  # changed content: the same partition again, a new run key
    os.utime(path, (time.time() - 20, time.time() - 20))
    changed, cursor = tick(project, dagster_instance, cursor)
    [request] = changed.run_requests
    assert request.partition_key == "tickets.jsonl" and request.run_key != first_key
    assert changed.dynamic_partitions_requests == []  # the partition already exists


def test_without_cursor_the_run_key_still_deduplicates(tmp_path, dagster_instance):
    project, inbox = inbox_project(tmp_path)
    (inbox / "a.jsonl").write_text('{"text": "x"}\n')
    first, _ = tick(project, dagster_instance)
    second, _ = tick(project, dagster_instance)  # cursor lost: same run key, which Dagster runs once
    assert first.run_requests[0].run_key == second.run_requests[0].run_key


def test_files_still_being_written_wait(tmp_path, dagster_instance):
    project, inbox = inbox_project(tmp_path, settle_seconds=60)
    (inbox / "fresh.jsonl").write_text('{"text": "x"}\n')
    result, _ = tick(project, dagster_instance)
    assert isinstance(result, SkipReason)


def test_a_large_jsonl_file_becomes_one_partition_per_part_and_a_change_reruns_its_parts(tmp_path, dagster_instance):
    from resources.ingestion.inbox import Inbox

    spec = sample_model("support", tmp_path / "data", copy_data=False)
    project = project_for(tmp_path, [spec], inbox=Inbox(settle_seconds=0, records_per_partition=40))
    inbox = tmp_path / "data" / "support" / "inbox"
    path = inbox / "export.jsonl"
    path.write_text("".join(json.dumps({"text": f"record {i} of the export"}) + "\n" for i in range(100)))
    result, cursor = tick(project, dagster_instance)
    parts = ["export.jsonl--part-0000", "export.jsonl--part-0001", "export.jsonl--part-0002"]
    assert sorted(r.partition_key for r in result.run_requests) == parts
    assert sorted(dagster_instance.get_dynamic_partitions("support_batches")) == parts
    assert isinstance(tick(project, dagster_instance, cursor)[0], SkipReason)
    path.write_text(path.read_text() + json.dumps({"text": "one more record"}) + "\n")
    os.utime(path, (time.time() - 20, time.time() - 20))
    changed, _ = tick(project, dagster_instance, cursor)
    assert sorted(r.partition_key for r in changed.run_requests) == parts  # the file changed: each part again


def test_a_folder_inbox_is_one_batch(tmp_path, dagster_instance):
    from resources.ingestion.inbox import Inbox

    docs = tmp_path / "my-docs"
    (docs / "guides").mkdir(parents=True)
    (docs / "a.md").write_text("# A\n\ntext\n")
    (docs / "guides" / "b.txt").write_text("b\n")
    project = project_for(tmp_path, [sample_model("support", tmp_path / "data", copy_data=False, inbox=str(docs), batch_by="folder")],
                          inbox=Inbox(settle_seconds=0))
    result, _ = tick(project, dagster_instance)
    [request] = result.run_requests
    assert request.partition_key == "my-docs"
    read = project.definitions.resources["inbox"].for_folder(str(docs), "folder").read("my-docs")
    assert sorted(f["path"] for f in read.files) == ["a.md", "guides/b.txt"]


# -- retraining: gated on the blocking checks ------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A support model over a small slice of the sample, its data stages run for real in a project folder of its
    own (with a workspace.yaml the daemon can load)."""
    from orchestration import workflows

    tmp = tmp_path_factory.mktemp("retraining")
    inbox = tmp / "inbox"
    inbox.mkdir()
    lines = (SAMPLE / "support" / "inbox" / "support_qa.csv").read_text().splitlines()
    (inbox / "support_qa.csv").write_text("\n".join(lines[:61]) + "\n")
    shutil.copy(SAMPLE / "support" / "inbox" / "kb_articles.jsonl", inbox)
    (tmp / "models" / "support").mkdir(parents=True)
    (tmp / "models" / "support" / "defs.yaml").write_text(
        "type: orchestration.model.TuneforgeModel\nattributes:\n  name: support\n  inbox: inbox\n"
        f"  golden: [{SAMPLE / 'support' / 'golden.jsonl'}]\n  redaction_policy: {ROOT / 'policies' / 'redaction.yaml'}\n")
    (tmp / "workspace.yaml").write_text(f"load_from:\n  - python_module:\n      module_name: orchestration.definitions\n"
                                       f"      working_directory: {tmp}\n      location_name: retraining\n")
    from orchestration.project import load_project

    project = load_project(tmp)
    instance = workflows.open_instance(project)
    for outcome in workflows.ingest(project, instance, project.model("support"), lambda _: None).values():
        outcome.raise_for_failure()
    workflows.run_job(project, instance, project.model("support"), "build_datasets")[0].raise_for_failure()
    yield {"project": project, "instance": instance, "tmp": tmp}
    instance.dispose()


def retraining_tick(built, cursor=None):
    sensor = built["project"].definitions.resolve_sensor_def("support_retraining_sensor")
    with build_sensor_context(instance=built["instance"], cursor=cursor) as context:
        result = sensor(context)
    return result


def dataset_record(instance):
    from dagster import AssetKey, AssetRecordsFilter

    return instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey(["support", "instruction_dataset"])), limit=1).records[0]


@pytest.mark.slow
def test_a_dataset_whose_checks_passed_starts_one_retraining_pinned_to_it(built):
    from dagster import AssetKey

    from resources.artifacts import PIN_TAG_PREFIX, loaded_pointers

    result = retraining_tick(built)
    [request] = result.run_requests
    record = dataset_record(built["instance"])
    version = record.event_log_entry.asset_materialization.tags["dagster/data_version"]
    assert request.run_key == f"dataset@{version}"
    golden = loaded_pointers(record)[AssetKey(["support", "golden_dataset"])]
    assert request.tags[PIN_TAG_PREFIX + "support/instruction_dataset"] == str(record.storage_id)
    assert request.tags[PIN_TAG_PREFIX + "support/golden_dataset"] == str(golden)
    again = retraining_tick(built, result.cursor)
    assert not again.run_requests  # once


@pytest.mark.slow
def test_a_pinned_run_reads_the_pinned_version_not_a_newer_one(built, tmp_path):
    """What the retraining run does with the pin: the dataset version the sensor saw, even after a newer one."""
    from dagster import AssetIn, AssetKey, AssetSpec, MaterializeResult, asset

    from resources.artifacts import PIN_TAG_PREFIX, Artifact

    pinned = dataset_record(built["instance"])
    seen = {}

    @asset(key=["support", "probe"], ins={"instruction_dataset": AssetIn(key=["support", "instruction_dataset"])})
    def probe(instruction_dataset: Artifact):
        seen["storage_id"] = instruction_dataset.storage_id
        return MaterializeResult()

    project = built["project"]
    rebuild = project.definitions.resolve_job_def("support_build_datasets")
    assert rebuild.execute_in_process(instance=built["instance"]).success
    newer = dataset_record(built["instance"])
    assert newer.storage_id > pinned.storage_id
    from dagster import materialize

    from resources.artifacts import ArtifactIOManager

    store = project.definitions.resources["store"]
    dataset_def = AssetSpec(key=AssetKey(["support", "instruction_dataset"]))  # the real one's records, read as a source
    assert materialize([dataset_def, probe], selection=[probe], instance=built["instance"],
                       resources={"io_manager": ArtifactIOManager(store=store)},
                       tags={PIN_TAG_PREFIX + "support/instruction_dataset": str(pinned.storage_id)}).success
    assert seen["storage_id"] == pinned.storage_id


def run_check(built, check_name):
    from dagster import AssetCheckKey, AssetKey, AssetSelection, define_asset_job

    project = built["project"]
    check = AssetCheckKey(AssetKey(["support", "instruction_dataset"]), check_name)
    job = define_asset_job("only_the_check", selection=AssetSelection.checks(check))
    from dagster import Definitions

    defs = Definitions.merge(project.definitions, Definitions(jobs=[job]))
    return defs.resolve_job_def("only_the_check").execute_in_process(instance=built["instance"], raise_on_error=False)


@pytest.mark.slow
def test_a_dataset_failing_a_blocking_check_never_starts_retraining_also_under_the_daemon(built):
    """The dataset's stored examples are made to carry a golden question (as a bug upstream would) and its blocking
    check `golden_train_disjoint` is run again: it fails. Neither a sensor tick here nor the daemon's own
    evaluation of the sensor requests a retraining run."""
    import pandas as pd

    record = dataset_record(built["instance"])
    m = record.event_log_entry.asset_materialization
    store = built["project"].definitions.resources["store"]
    path = store.path("support/instruction_dataset", m.metadata["artifact"].value, "examples.parquet")
    examples = pd.read_parquet(path)
    golden = store.read_table("support/golden_dataset", json.loads(store.path("support/instruction_dataset",
                              m.metadata["artifact"].value, "manifest.json").read_text())["golden"], "examples.parquet")
    examples.loc[0, "prompt"] = golden["prompt"].iloc[0]
    if path.is_dir():  # a folder of parts linked from the dataset's segments: replace the links, never write through them
        for part in path.iterdir():
            part.unlink()
        path = path / "part-000000.parquet"
    examples.to_parquet(path)
    result = run_check(built, "golden_train_disjoint")
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.target_materialization_data.storage_id == record.storage_id

    tick = retraining_tick(built)
    assert not tick.run_requests and "failed its blocking checks" in tick.skip_reason.skip_message

    instance, tmp = built["instance"], built["tmp"]
    runs_before = {r.run_id for r in instance.get_runs()}
    env = {**os.environ, "DAGSTER_HOME": str(tmp / ".dagster"), "PYTHONPATH": str(ROOT)}
    daemon = subprocess.Popen([str(ROOT / ".venv" / "bin" / "dagster-daemon"), "run", "-w", str(tmp / "workspace.yaml")],
                              cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        ticks = _wait_for_ticks(instance, "support_retraining_sensor", timeout=240)
    finally:
        os.killpg(daemon.pid, 15)
        daemon.wait(timeout=60)
    assert ticks and all(t.status.value == "SKIPPED" for t in ticks)
    assert any("failed its blocking checks" in (t.skip_reason or "") for t in ticks)
    retrains = [r for r in instance.get_runs() if r.run_id not in runs_before and r.job_name == "support_retrain"]
    assert retrains == []


def _wait_for_ticks(instance, sensor_name: str, timeout: float):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for state in instance.all_instigator_state():
            if state.instigator_name == sensor_name:
                ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
                if ticks and all(t.status.value != "STARTED" for t in ticks):
                    return ticks
        time.sleep(2)
    return []


@pytest.mark.slow
def test_a_dataset_whose_checks_have_not_run_waits(built):
    from dagster import AssetKey, AssetMaterialization

    from resources.artifacts import ARTIFACT_METADATA

    record = dataset_record(built["instance"])
    m = record.event_log_entry.asset_materialization
    built["instance"].report_runless_asset_event(AssetMaterialization(  # a version recorded without its checks
        asset_key=AssetKey(["support", "instruction_dataset"]), tags={"dagster/data_version": "unchecked"},
        metadata={ARTIFACT_METADATA: m.metadata["artifact"].value}))
    tick = retraining_tick(built)
    assert not tick.run_requests and "waiting for its blocking checks" in tick.skip_reason.skip_message
    assert json.loads(tick.cursor)["dataset"] == 0  # not given up: it fires once the checks pass


def test_daily_schedule_targets_the_previous_day():
    import datetime as dt

    from dagster import build_schedule_context

    from orchestration.project import load_project

    defs = load_project(ROOT).definitions
    schedule = defs.resolve_schedule_def("support_daily_monitoring")
    with build_schedule_context(scheduled_execution_time=dt.datetime(2026, 11, 25, 1, 0, tzinfo=dt.timezone.utc)) as context:
        [request] = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-11-24"
    assert {"support_daily_monitoring", "policy_weekly_champion"} <= {s.name for s in defs.schedules}

