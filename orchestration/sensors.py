"""Sensors: new data in the inbox becomes a partition and a run, exactly once."""


import json

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from assets.feedback import human_feedback
from assets.partitions import ingestion_batches
from orchestration.jobs import ingest_batch_job
from resources.ingestion.inbox import Inbox


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
