"""Shared fixtures. Real engines everywhere (Presidio, datasketch, great-expectations, Dagster);
each test that needs a Dagster instance gets its own temporary DAGSTER_HOME."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from resources.offline import apply_offline_defaults  # noqa: E402

apply_offline_defaults()


@pytest.fixture(scope="session")
def redactor():
    """The real Presidio redactor with the shipped policy (loaded once per test session)."""
    from resources.redaction.redactor import PiiRedactor

    return PiiRedactor(policy_path=str(ROOT / "policies" / "redaction.yaml"))


@pytest.fixture()
def dagster_instance(tmp_path):
    from dagster import DagsterInstance

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "config" / "dagster" / "dagster.yaml").read_text())
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    instance = DagsterInstance.get()
    try:
        yield instance
    finally:
        instance.dispose()
        if previous is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous
