"""The Dagster code location: `workspace.yaml` and `dagster dev` load `defs` from here."""

from typing import Any

from dagster import Definitions, load_asset_checks_from_modules, load_assets_from_modules

from assets import (
    curation,
    datasets,
    deployment,
    evaluation,
    feedback,
    governance,
    ingestion,
    monitoring,
    retrieval,
    training,
)
from orchestration.jobs import (
    build_datasets_job,
    deploy_adapter_job,
    evaluate_adapter_job,
    evaluate_champion_job,
    ingest_batch_job,
    monitor_job,
    retrain_job,
    train_adapter_job,
)
from orchestration.resources import default_resources
from orchestration.schedules import daily_monitoring_schedule, weekly_champion_schedule
from orchestration.sensors import datasets_automation_sensor, inbox_sensor, retraining_sensor, run_failure_alerts

STAGES = [ingestion, curation, feedback, datasets, retrieval, training, evaluation, deployment, monitoring, governance]


def build_definitions(**resource_overrides: Any) -> Definitions:
    """The whole graph; resources default to the embedded, laptop-CPU configuration."""
    return Definitions(
        assets=load_assets_from_modules(STAGES),
        asset_checks=load_asset_checks_from_modules(STAGES),
        jobs=[ingest_batch_job, build_datasets_job, train_adapter_job, evaluate_adapter_job, deploy_adapter_job,
              retrain_job, monitor_job, evaluate_champion_job],
        sensors=[inbox_sensor, datasets_automation_sensor, retraining_sensor, run_failure_alerts],
        schedules=[daily_monitoring_schedule, weekly_champion_schedule],
        resources=default_resources(**resource_overrides),
    )


defs = build_definitions()
