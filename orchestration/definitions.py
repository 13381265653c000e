"""The Dagster code location: the project in the working directory (`workspace.yaml` sets it), its models from
`models/<name>/defs.yaml` and the shared resources. Loaded when Dagster loads the location, not at import."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from orchestration.project import load_project


def build_definitions(project: str | Path = ".", workdir: str | Path | None = None, models=None, **resource_overrides: Any) -> dg.Definitions:
    """Every model of the project and the shared resources (override any by key)."""
    return load_project(project, workdir, models, **resource_overrides).definitions


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(Path.cwd())
