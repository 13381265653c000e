"""Schedules of each model: daily monitoring of yesterday's traffic, weekly re-scoring of the champion."""

from __future__ import annotations

from dagster import DefaultScheduleStatus, ScheduleDefinition, build_schedule_from_partitioned_job

from resources.spec import ModelSpec


def model_schedules(spec: ModelSpec, jobs: dict) -> list[ScheduleDefinition]:
    return [
        # Each day at 01:00 UTC: the previous day's traffic partition, then the drift report.
        build_schedule_from_partitioned_job(jobs["monitor"], name=f"{spec.name}_daily_monitoring", hour_of_day=1,
                                            default_status=DefaultScheduleStatus.RUNNING),
        # Mondays 06:00 UTC: the champion re-scored on the current golden set.
        ScheduleDefinition(name=f"{spec.name}_weekly_champion", job=jobs["evaluate_champion"], cron_schedule="0 6 * * 1",
                           execution_timezone="UTC", default_status=DefaultScheduleStatus.RUNNING),
    ]
