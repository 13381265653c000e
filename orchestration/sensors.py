"""Sensors: new data in the inbox becomes a partition and a run, exactly once; new datasets, drift and
falling feedback become a retraining run, exactly once."""


import json

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from assets.feedback import human_feedback
from assets.partitions import ingestion_batches
from orchestration.jobs import ingest_batch_job, retrain_job
from resources.ingestion.inbox import Inbox
from resources.monitoring.alerts import AlertSink


@sensor(
    job=ingest_batch_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Registers a partition for each new inbox batch and requests its ingestion run.",
)
def inbox_sensor(context: SensorEvaluationContext, inbox: Inbox) -> SensorResult | SkipReason:
    """The cursor remembers each batch's file signature (sizes, mtimes) and content hash, so unchanged
    batches are not re-hashed; the run key `<batch>@<content hash>` makes the same content run once."""
    cursor: dict[str, dict[str, str]] = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(ingestion_batches.name))
    new_partitions: list[str] = []
    requests: list[RunRequest] = []
    for entry in inbox.batches():
        seen = cursor.get(entry.key)
        if not entry.settled or (seen and seen["signature"] == entry.signature):
            continue
        content = inbox.content_hash(entry.key)
        cursor[entry.key] = {"signature": entry.signature, "content": content}
        if seen and seen["content"] == content:
            continue  # touched or copied again, same bytes
        if entry.key not in known:
            new_partitions.append(entry.key)
        requests.append(
            RunRequest(
                partition_key=entry.key,
                run_key=f"{entry.key}@{content[:16]}",
                tags={"tuneforge/batch": entry.key, "tuneforge/batch_sha256": content},
            )
        )
    if not requests:
        return SkipReason("no new or changed batches in the inbox")
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[ingestion_batches.build_add_request(new_partitions)] if new_partitions else [],
        cursor=json.dumps(cursor, sort_keys=True),
    )


# Datasets rebuild when redacted batches change (their AutomationCondition.eager()).
datasets_automation_sensor = AutomationConditionSensorDefinition(
    "datasets_automation",
    target=AssetSelection.groups("datasets", "retrieval") | AssetSelection.assets(human_feedback),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates the datasets' automation conditions: rebuild once new batches are redacted.",
)


@sensor(
    job=retrain_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Retrains when the dataset has a version no adapter was trained on (new data, feedback), or when "
    "the drift report recommends it (drift, falling feedback). Run keys make each trigger fire once.",
)
def retraining_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    """Two triggers, each fired once: `dataset@<version>` for a dataset version newer than the one the
    latest adapter was trained on; `drift@<storage id>` for a drift report that recommends retraining.
    The cursor keeps the last drift report looked at."""
    instance, requests = context.instance, []
    cursor = json.loads(context.cursor) if context.cursor else {"drift": 0}

    dataset = instance.get_latest_materialization_event(AssetKey("instruction_dataset"))
    adapter = instance.get_latest_materialization_event(AssetKey("lora_adapter"))
    if dataset is not None:
        version = dataset.asset_materialization.tags.get("dagster/data_version")
        trained_on = adapter.asset_materialization.tags.get("dagster/input_data_version/instruction_dataset") if adapter else None
        if version and version != trained_on:
            requests.append(RunRequest(run_key=f"dataset@{version}", tags={"tuneforge/trigger": "new dataset version"}))

    drift = instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey("drift_report")), limit=1).records
    if drift and drift[0].storage_id > cursor["drift"]:
        record = drift[0]
        cursor["drift"] = record.storage_id
        metadata = record.event_log_entry.asset_materialization.metadata
        if metadata.get("retrain_recommended") and metadata["retrain_recommended"].value:
            requests.append(RunRequest(run_key=f"drift@{record.storage_id}",
                                       tags={"tuneforge/trigger": "drift or feedback: " + metadata["flags"].value[:200]}))
    if not requests:
        return SensorResult(skip_reason=SkipReason("no new dataset version and no drift report recommending retraining"),
                            cursor=json.dumps(cursor))
    return SensorResult(run_requests=requests, cursor=json.dumps(cursor))


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
