"""Data-quality suites run with great-expectations 1.x on in-memory tables.

Results are reported as counts and percentages only: great-expectations' own result carries
sample values, which may be PII, so those never leave this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pandas as pd

from resources.offline import apply_offline_defaults


@dataclass
class SuiteOutcome:
    suite: str
    success: bool
    rows: int
    failures: list[str] = field(default_factory=list)
    evaluated: int = 0

    def metadata(self) -> dict[str, Any]:
        return {"suite": self.suite, "rows": self.rows, "expectations": self.evaluated, "failures": self.failures}


def document_expectations(min_chars: int = 1, max_chars: int = 50_000, kinds=("text", "chat", "instruction")) -> list:
    """The suite every document table (raw, cleaned, redacted) must pass. `max_chars` bounds the records of
    structured files (chats, instructions); a whole document (kind text) has any length: chunking splits it."""
    gx = _gx()
    E = gx.expectations
    return [
        *[E.ExpectColumnToExist(column=c) for c in ("doc_id", "batch", "source_path", "source_sha256", "kind", "text")],
        E.ExpectColumnValuesToNotBeNull(column="doc_id"),
        E.ExpectColumnValuesToBeUnique(column="doc_id"),
        E.ExpectColumnValuesToNotBeNull(column="text"),
        E.ExpectColumnValueLengthsToBeBetween(column="text", min_value=min_chars),
        E.ExpectColumnValueLengthsToBeBetween(column="text", max_value=max_chars, row_condition='kind != "text"',
                                              condition_parser="pandas"),
        E.ExpectColumnValuesToBeInSet(column="kind", value_set=list(kinds)),
        E.ExpectColumnValueLengthsToEqual(column="source_sha256", value=64),
    ]


def example_expectations(splits: tuple[str, ...], scope: str = "all") -> list:
    """The suite for instruction and golden example tables. `scope`: "rows", the expectations each row meets on its
    own (they hold for a table when they hold for each of its parts); "table", those over the whole table (a row
    count, unique ids); "all", both."""
    gx = _gx()
    E = gx.expectations
    table = [E.ExpectTableRowCountToBeBetween(min_value=1), E.ExpectColumnValuesToBeUnique(column="id")]
    rows = [
        E.ExpectColumnValuesToNotBeNull(column="id"),
        E.ExpectColumnValuesToBeInSet(column="split", value_set=list(splits)),
        E.ExpectColumnValuesToNotBeNull(column="prompt"),
        E.ExpectColumnValueLengthsToBeBetween(column="prompt", min_value=1),
        E.ExpectColumnValueLengthsToBeBetween(column="answer", min_value=1),
    ]
    return {"all": table + rows, "rows": rows, "table": table}[scope]


def expectations_config(expectations: list) -> list[dict]:
    """What a suite's expectations are (type and arguments), e.g. to key a verdict kept for later."""
    return [e.configuration.to_json_dict() for e in expectations]


def validate(frame: pd.DataFrame, suite_name: str, expectations: list) -> SuiteOutcome:
    gx = _gx()
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(gx.ExpectationSuite(name=suite_name, expectations=expectations))
    failures = []
    for item in result.results:
        if item.success:
            continue
        config = item.expectation_config
        column = config.kwargs.get("column")
        counts = item.result or {}
        where = f" on {column}" if column else ""
        if counts.get("unexpected_count") is not None:
            failures.append(
                f"{config.type}{where}: {counts['unexpected_count']} rows "
                f"({counts.get('unexpected_percent', 0):.1f}%) unexpected"
            )
        elif counts.get("observed_value") is not None and not column:
            failures.append(f"{config.type}: observed {counts['observed_value']}")
        else:
            failures.append(f"{config.type}{where}: failed")
    return SuiteOutcome(suite_name, bool(result.success), len(frame), failures, len(result.results))


def _gx():
    apply_offline_defaults()
    import great_expectations as gx

    return gx


@lru_cache(maxsize=1)
def _batch_definition():
    """One ephemeral (in-memory, offline) context per process with a pandas dataframe asset."""
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("tuneforge").add_dataframe_asset("table")
    return asset.add_batch_definition_whole_dataframe("whole_table")

