"""Sensors of each model: new data in its inbox becomes a partition and a run, exactly once; a new dataset
version whose blocking checks passed, drift and falling feedback become a retraining run, exactly once, pinned
to the version that triggered it. One run-failure sensor for the project."""

from __future__ import annotations

import json

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from assets.partitions import batch_partitions
from resources.artifacts import PIN_TAG_PREFIX, check_status, loaded_pointers
from resources.ingestion.inbox import Inbox
from resources.monitoring.alerts import AlertSink
from orchestration.jobs import DATA_ASSETS
from resources.spec import ModelSpec



def inbox_sensor_for(spec: ModelSpec, job) -> SensorDefinition:
    partitions = batch_partitions(spec.name)

    @sensor(name=f"{spec.name}_inbox_sensor", job=job, minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING,
            description=f"{spec.name}: registers a partition for each new batch in {spec.inbox} and requests its ingestion.")
    def inbox_sensor(context: SensorEvaluationContext, inbox: Inbox) -> SensorResult | SkipReason:
        """The cursor remembers each batch's file signature (sizes, mtimes) and content hash, so unchanged batches
        are not re-hashed; the run key `<batch>@<content hash>` makes the same content run once."""
        folder = inbox.for_folder(spec.inbox, spec.batch_by)
        cursor: dict[str, dict[str, str]] = json.loads(context.cursor) if context.cursor else {}
        known = set(context.instance.get_dynamic_partitions(partitions.name))
        new_partitions: list[str] = []
        requests: list[RunRequest] = []
        for entry in folder.batches():
            seen = cursor.get(entry.key)
            if not entry.settled or (seen and seen["signature"] == entry.signature):
                continue
            content = folder.content_hash(entry.key)
            cursor[entry.key] = {"signature": entry.signature, "content": content}
            if seen and seen["content"] == content:
                continue  # touched or copied again, same bytes
            if entry.key not in known:
                new_partitions.append(entry.key)
            requests.append(RunRequest(partition_key=entry.key, run_key=f"{entry.key}@{content[:16]}",
                                       tags={"tuneforge/model": spec.name, "tuneforge/batch": entry.key,
                                             "tuneforge/batch_sha256": content}))
        if not requests:
            return SkipReason(f"no new or changed batches in {spec.inbox}")
        return SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[partitions.build_add_request(new_partitions)] if new_partitions else [],
            cursor=json.dumps(cursor, sort_keys=True),
        )

    return inbox_sensor


def datasets_automation_for(spec: ModelSpec) -> AutomationConditionSensorDefinition:
    """The datasets' automation conditions (eager: rebuild once new batches are redacted and nothing upstream is
    in progress)."""
    return AutomationConditionSensorDefinition(
        f"{spec.name}_datasets_automation",
        target=AssetSelection.assets(*(AssetKey([spec.name, a]) for a in DATA_ASSETS)),
        default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=30,
        description=f"{spec.name}: evaluates the datasets' automation conditions: rebuild once new batches are redacted.")


def blocking_checks(assets_defs: list, key: AssetKey) -> list[str]:
    """Names of the blocking checks defined on `key` among a model's definitions."""
    names = []
    for definition in assets_defs:
        for check in getattr(definition, "check_specs", ()) or ():
            if check.asset_key == key and check.blocking:
                names.append(check.name)
    return sorted(set(names))


def retraining_sensor_for(spec: ModelSpec, job, gates: dict[AssetKey, list[str]]) -> SensorDefinition:
    """`gates`: asset key -> its blocking checks, for the dataset and the inputs it was built from."""
    dataset_key = AssetKey([spec.name, "instruction_dataset"])
    adapter_key = AssetKey([spec.name, "lora_adapter"])
    drift_key = AssetKey([spec.name, "drift_report"])

    @sensor(name=f"{spec.name}_retraining_sensor", job=job, minimum_interval_seconds=60,
            default_status=DefaultSensorStatus.RUNNING if spec.automatic_retraining else DefaultSensorStatus.STOPPED,
            description=f"{spec.name}: retrains on a dataset version no adapter was trained on, once its blocking checks "
            "(and those of the golden set and corpus it was built from) passed; or when the drift report recommends it. "
            "Run keys make each trigger fire once; the run is pinned to the dataset version that triggered it.")
    def retraining_sensor(context: SensorEvaluationContext) -> SensorResult:
        instance = context.instance
        cursor = json.loads(context.cursor) if context.cursor else {}
        cursor = {"dataset": cursor.get("dataset", 0), "drift": cursor.get("drift", 0)}
        requests, waiting = [], []

        dataset = next(iter(instance.fetch_materializations(AssetRecordsFilter(asset_key=dataset_key), limit=1).records), None)
        if dataset is not None and dataset.storage_id > cursor["dataset"]:
            verdict, pins = _gated(instance, dataset, gates)
            version = dataset.event_log_entry.asset_materialization.tags.get("dagster/data_version")
            if verdict == "passed":
                cursor["dataset"] = dataset.storage_id
                adapter = instance.get_latest_materialization_event(adapter_key)
                trained_on = adapter.asset_materialization.tags.get(f"dagster/input_data_version/{dataset_key.to_user_string()}") \
                    if adapter else None
                if version != trained_on:
                    requests.append(RunRequest(run_key=f"dataset@{version}", tags={
                        "tuneforge/model": spec.name, "tuneforge/trigger": f"new dataset version {version}",
                        **{PIN_TAG_PREFIX + k.to_user_string(): str(v) for k, v in pins.items()}}))
            elif verdict == "blocked":
                cursor["dataset"] = dataset.storage_id  # never for a version its checks rejected
                waiting.append(f"dataset version {version} failed its blocking checks: no retraining")
            else:
                waiting.append(f"dataset version {version}: waiting for its blocking checks ({verdict})")

        drift = instance.fetch_materializations(AssetRecordsFilter(asset_key=drift_key), limit=1).records
        if drift and drift[0].storage_id > cursor["drift"]:
            record = drift[0]
            cursor["drift"] = record.storage_id
            metadata = record.event_log_entry.asset_materialization.metadata
            if metadata.get("retrain_recommended") and metadata["retrain_recommended"].value:
                requests.append(RunRequest(run_key=f"drift@{record.storage_id}", tags={
                    "tuneforge/model": spec.name, "tuneforge/trigger": "drift or feedback: " + metadata["flags"].value[:200]}))
        if not requests:
            reason = "; ".join(waiting) or "no new dataset version and no drift report recommending retraining"
            return SensorResult(skip_reason=SkipReason(reason), cursor=json.dumps(cursor))
        return SensorResult(run_requests=requests, cursor=json.dumps(cursor))

    return retraining_sensor


def _gated(instance, dataset, gates: dict[AssetKey, list[str]]) -> tuple[str, dict[AssetKey, int]]:
    """("passed" | "blocked" | what is pending, the storage ids to pin): the dataset materialization's own blocking
    checks and those of the upstream materializations it loaded."""
    records = {dataset.event_log_entry.asset_materialization.asset_key: dataset}
    pins = {dataset.event_log_entry.asset_materialization.asset_key: dataset.storage_id}
    for key, storage_id in loaded_pointers(dataset).items():
        if key in gates:
            upstream = next(iter(instance.fetch_materializations(AssetRecordsFilter(asset_key=key, storage_ids=[storage_id]),
                                                                 limit=1).records), None)
            if upstream is not None:
                records[key] = upstream
                pins[key] = storage_id
    pending = []
    for key, record in records.items():
        status = check_status(instance, record, gates.get(key, []))
        if any(s in ("failed", "skipped") for s in status.values()):
            return "blocked", pins
        pending += [f"{key.path[-1]}.{name} {s}" for name, s in status.items() if s != "passed"]
    return ("passed", pins) if not pending else (", ".join(pending), pins)


@run_failure_sensor(
    default_status=DefaultSensorStatus.RUNNING,
    description="Records every failed run (job, run id, failing steps and their errors) and alerts the webhook.",
)
def run_failure_alerts(context: RunFailureSensorContext, alerts: AlertSink) -> None:
    run = context.dagster_run
    steps = [{"step": e.step_key, "error": _root_cause(e.event_specific_data.error)[:500]}
             for e in context.get_step_failure_events()]
    alerts.send({"job": run.job_name, "run_id": run.run_id, "tags": {k: v for k, v in run.tags.items() if k.startswith(("dagster/", "tuneforge/"))},
                 "failure": (context.failure_event.message or "")[:500], "steps": steps})


def _root_cause(error) -> str:
    """The innermost error's message (Dagster wraps the user's exception in its own)."""
    while error is not None and error.cause is not None:
        error = error.cause
    return (error.message or "").strip() if error is not None else ""
