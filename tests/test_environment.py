"""Every test leaves the environment as it found it: the suite's guard fails a test that does not."""

import os

import pytest

from helpers import environment_unchanged


def test_a_test_that_leaves_dagster_home_changed_fails():
    original = os.environ.get("DAGSTER_HOME")
    try:
        with pytest.raises(AssertionError, match="DAGSTER_HOME"):
            with environment_unchanged():
                os.environ["DAGSTER_HOME"] = "/tmp/somewhere-else"
    finally:  # put back what the guard saw changed, for the suite's own guard
        if original is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = original


def test_restoring_what_it_changed_passes(monkeypatch):
    with environment_unchanged():
        monkeypatch.setenv("TUNEFORGE_SOMETHING", "x")
        monkeypatch.undo()
