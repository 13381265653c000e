"""Partitions of the data stages: one dynamic partition per ingestion batch (an inbox file or folder)."""

from dagster import DynamicPartitionsDefinition

ingestion_batches = DynamicPartitionsDefinition(name="ingestion_batches")
