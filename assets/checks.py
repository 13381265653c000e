"""What the stages' asset checks assert, as plain functions over the artifact the check loaded."""

from __future__ import annotations

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

from assets.metadata import bullets
from resources.artifacts import Artifact
from resources.datasets.segments import validate_parts
from resources.quality import validate
from resources.records import Ledger, pq_rows


def suite_result(artifact: Artifact, table: str, suite: str, expectations: list,
                 columns: list[str] | None = None) -> AssetCheckResult:
    """A great-expectations suite over one of the artifact's tables (`columns`: only those read; counts and names
    only in the result, never values)."""
    outcome = validate(artifact.read_table(table, columns=columns), suite, expectations)
    return AssetCheckResult(
        passed=outcome.success,
        metadata={"rows": MetadataValue.int(outcome.rows), "expectations": MetadataValue.int(outcome.evaluated),
                  "failures": bullets(outcome.failures)},
    )


def parts_suite_result(artifact: Artifact, model: str, table: str, suite: str, row_expectations: list,
                       table_expectations: list, row_columns: list[str], table_columns: list[str]) -> AssetCheckResult:
    """A great-expectations suite over a table kept in parts (`resources.datasets.segments.validate_parts`)."""
    whole, parts = validate_parts(artifact.store, model, artifact.file(table), suite, row_expectations, table_expectations,
                                  row_columns, table_columns)
    failures = whole.failures + [f"{f} (in one part)" for v in parts.verdicts for f in v["failures"]]
    return AssetCheckResult(
        passed=whole.success and all(v["success"] for v in parts.verdicts),
        metadata={"rows": MetadataValue.int(whole.rows),
                  "expectations": MetadataValue.int(whole.evaluated + (parts.verdicts[0]["evaluated"] if parts.verdicts else 0)),
                  "parts_validated_now": MetadataValue.int(parts.made), "parts_validated_before": MetadataValue.int(parts.reused),
                  "failures": bullets(failures)},
    )


def non_empty_result(artifact: Artifact, table: str = "documents.parquet") -> AssetCheckResult:
    """Warns (does not block) when a partition keeps no records: a batch that was all junk or all quarantined
    is worth a look, but its emptiness is not an error downstream."""
    count = len(artifact.read_table(table, columns=["doc_id"]))
    return AssetCheckResult(passed=count > 0, severity=AssetCheckSeverity.WARN, metadata={"rows": MetadataValue.int(count)})


def ledger_result(artifact: Artifact, table: str, expected_in: int | None, upstream: str = "upstream") -> AssetCheckResult:
    """records in = kept + dropped(reason) + quarantined, the stored tables agree with the ledger, and records in
    equals what the upstream stage handed over (`expected_in`, when it is known)."""
    ledger = Ledger.from_dict(artifact.read_json("ledger.json"))
    problems = []
    if not ledger.balanced():
        problems.append(f"records_in {ledger.records_in} != kept + dropped + quarantined")
    stored = pq_rows(artifact.file(table))  # from the footers: the table is not read
    if stored != ledger.kept:
        problems.append(f"ledger says {ledger.kept} kept, the stored table has {stored} rows")
    if artifact.exists("quarantine.parquet"):
        quarantined = len(artifact.read_table("quarantine.parquet"))
        if quarantined != sum(ledger.quarantined.values()):
            problems.append(f"quarantine table has {quarantined} rows, the ledger {sum(ledger.quarantined.values())}")
    if expected_in is not None and expected_in != ledger.records_in:
        problems.append(f"{upstream} holds {expected_in} records, the ledger took in {ledger.records_in}")
    return AssetCheckResult(
        passed=not problems,
        severity=AssetCheckSeverity.ERROR,
        metadata={"records_in": MetadataValue.int(ledger.records_in), "kept": MetadataValue.int(ledger.kept),
                  "dropped": MetadataValue.int(sum(ledger.dropped.values())),
                  "quarantined": MetadataValue.int(sum(ledger.quarantined.values())), "problems": bullets(problems)},
    )
