"""great-expectations suites: failures are reported as counts, never as the offending values."""

import pandas as pd

from resources.quality import document_expectations, validate


def table(**overrides):
    base = {
        "doc_id": ["a", "b"], "batch": ["x", "x"], "source_path": ["f", "f"], "source_sha256": ["0" * 64] * 2,
        "kind": ["text", "chat"], "text": ["hello world", "jane.doe@example.com wrote"],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def test_valid_documents_pass():
    outcome = validate(table(), "docs", document_expectations())
    assert outcome.success and outcome.failures == [] and outcome.evaluated > 5


def test_failures_name_the_expectation_and_column_but_not_values():
    bad = table(doc_id=["a", "a"], kind=["text", "poem"], text=["hello world", "x" * 500])
    outcome = validate(bad, "docs", document_expectations(max_chars=100))
    assert not outcome.success
    joined = "\n".join(outcome.failures)
    assert "expect_column_values_to_be_unique on doc_id: 2 rows" in joined
    assert "expect_column_values_to_be_in_set on kind: 1 rows" in joined
    assert "expect_column_value_lengths_to_be_between on text: 1 rows" in joined
    assert "xxxx" not in joined and "poem" not in joined


def test_missing_column_fails():
    outcome = validate(table().drop(columns=["source_sha256"]), "docs", document_expectations())
    assert not outcome.success
    assert any("expect_column_to_exist" in f for f in outcome.failures)
