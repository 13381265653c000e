"""What every stage shows in the Dagster UI: keys and groups per model, the ledger, tables and pictures."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from dagster import AssetKey, DataVersion, MetadataValue, Output

from resources.artifacts import Artifact
from resources.plots import markdown_image
from resources.records import Ledger
from resources.spec import ModelSpec


def key(spec: ModelSpec, asset: str) -> AssetKey:
    """`<model>/<asset>`: every asset of a model lives under its name."""
    return AssetKey([spec.name, asset])


def asset_args(spec: ModelSpec, stage: str) -> dict[str, Any]:
    """The model's group in the UI, its owners, and the stage as a tag."""
    return {"group_name": spec.name, "owners": list(spec.owners), "tags": {"tuneforge/stage": stage}}


def emit(artifact: Artifact, metadata: dict[str, Any]) -> Output:
    """The asset's output: the artifact it wrote, its data version and its metadata."""
    return Output(artifact, data_version=DataVersion(artifact.data_version), metadata=metadata)


def log_quarantine(log, rows: Iterable[dict], what: str = "record", where: str = "quarantine.parquet") -> None:
    """One warning with counts only, per reason and file: a quarantine's detail can quote what it refused (a
    record's keys, which may be e-mail addresses), so it stays in the owner-only artifact, never the event log."""
    counts = Counter((row["reason"], row.get("source_path") or "-") for row in rows)
    if counts:
        parts = ", ".join(f"{reason} x{n} ({path})" for (reason, path), n in sorted(counts.items()))
        log.warning(f"quarantined {sum(counts.values())} {what}(s): {parts}; the details are in {where}")


def bullets(lines: Iterable[str], empty: str = "none") -> MetadataValue:
    return MetadataValue.md("\n".join(f"- {line}" for line in lines) or empty)


def reason_table(counts: Counter | dict[str, int], header: str = "reason") -> MetadataValue:
    rows = "\n".join(f"| {reason} | {n} |" for reason, n in sorted(counts.items())) or "| (none) | 0 |"
    return MetadataValue.md(f"| {header} | records |\n|---|---|\n{rows}")


def redactions_by_file(by_file: dict[str, Counter], top: int = 25) -> MetadataValue:
    """The files with the most replacements, each with its counts per entity type (never the values): a file of
    technical text with dozens of `PERSON` replacements is where false positives stand out (`audit.json` has every
    file)."""
    ranked = sorted(by_file.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    rows = "\n".join(f"| {name} | {sum(c.values())} | {', '.join(f'{e} {n}' for e, n in sorted(c.items()))} |"
                     for name, c in ranked[:top]) or "| (none) | 0 | |"
    more = f"\n\n{len(ranked) - top} more files in audit.json" if len(ranked) > top else ""
    return MetadataValue.md(f"| file | replaced | by entity |\n|---|---|---|\n{rows}{more}")


def picture(png: bytes, alt: str, folder: Path | None = None, name: str | None = None) -> MetadataValue:
    """A PNG shown inline in the UI, also written beside the artifact as `name`."""
    if folder is not None and name:
        (folder / name).write_bytes(png)
    return MetadataValue.md(markdown_image(png, alt))


def ledger_metadata(ledger: Ledger) -> dict[str, Any]:
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
    return metadata
