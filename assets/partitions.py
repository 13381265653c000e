"""Partitions: one dynamic partition per ingestion batch (an inbox file or folder); one per day of serving."""

from dagster import DailyPartitionsDefinition, DynamicPartitionsDefinition

ingestion_batches = DynamicPartitionsDefinition(name="ingestion_batches")

# Serving traffic is summarised per UTC day (the gateway's request log).
serving_days = DailyPartitionsDefinition(start_date="2026-11-01", timezone="UTC")
