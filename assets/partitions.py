"""Partitions: one dynamic partition per ingestion batch of each model; one per day of serving."""

from functools import lru_cache

from dagster import DailyPartitionsDefinition, DynamicPartitionsDefinition


@lru_cache(maxsize=None)
def batch_partitions(model: str) -> DynamicPartitionsDefinition:
    """The model's ingestion batches (an inbox file or folder each): `<model>_batches`."""
    return DynamicPartitionsDefinition(name=f"{model}_batches")


# Serving traffic is summarised per UTC day (the gateway's request log).
serving_days = DailyPartitionsDefinition(start_date="2026-11-01", timezone="UTC")
