"""What code produced an artifact: recorded in manifests for the lineage audit."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


@lru_cache(maxsize=1)
def code_revision() -> dict[str, str | bool | None]:
    """The tuneforge version and, in a git checkout, the commit and whether the tree had local edits."""
    try:
        package = version("tuneforge")
    except PackageNotFoundError:
        package = None
    root = Path(__file__).resolve().parent.parent
    commit, dirty = None, None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return {"package_version": package, "git_commit": commit, "git_dirty": dirty}
