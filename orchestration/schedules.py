"""Schedules: daily monitoring of yesterday's traffic, weekly re-scoring of the champion."""

from dagster import DefaultScheduleStatus, ScheduleDefinition, build_schedule_from_partitioned_job

from orchestration.jobs import evaluate_champion_job, monitor_job

# Each day at 01:00 UTC: the previous day's traffic partition, then the drift report.
daily_monitoring_schedule = build_schedule_from_partitioned_job(
    monitor_job, hour_of_day=1, default_status=DefaultScheduleStatus.RUNNING,
)

# Mondays 06:00 UTC: the deployed adapter re-scored on the current golden set.
weekly_champion_schedule = ScheduleDefinition(
    job=evaluate_champion_job, cron_schedule="0 6 * * 1", execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
)
