"""Metadata every stage shows in the Dagster UI: the ledger, as numbers and a reason table."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from dagster import MetadataValue

from resources.records import Ledger


def reason_table(counts: Counter | dict[str, int], header: str = "reason") -> MetadataValue:
    rows = "\n".join(f"| {reason} | {n} |" for reason, n in sorted(counts.items())) or "| (none) | 0 |"
    return MetadataValue.md(f"| {header} | records |\n|---|---|\n{rows}")


def ledger_metadata(ledger: Ledger, location: Path | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "records_in": MetadataValue.int(ledger.records_in),
        "records_kept": MetadataValue.int(ledger.kept),
        "records_dropped": MetadataValue.int(sum(ledger.dropped.values())),
        "records_quarantined": MetadataValue.int(sum(ledger.quarantined.values())),
        "ledger_balanced": MetadataValue.bool(ledger.balanced()),
    }
    if ledger.dropped:
        metadata["dropped_by_reason"] = reason_table(ledger.dropped)
    if ledger.quarantined:
        metadata["quarantined_by_reason"] = reason_table(ledger.quarantined)
    if location is not None:
        metadata["path"] = MetadataValue.path(str(location))
    return metadata
