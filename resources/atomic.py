"""Atomic directory writes: build a folder beside its target, then swap it in with a rename.

A reader sees the old folder or the new one, never a half-written one — also when the writer is
killed (the temporary folder is left behind under a dot-name and ignored)."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

DIR_MODE = 0o700
FILE_MODE = 0o600


@contextlib.contextmanager
def atomic_directory(target: Path, owner_only: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `target`. `owner_only` makes every
    file 0600 and folder 0700 (for folders that hold unredacted data)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(mode=DIR_MODE)
    try:
        yield tmp
        if owner_only:
            restrict(tmp)
        trash = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        if target.exists():
            os.replace(target, trash)
        os.replace(tmp, target)
        shutil.rmtree(trash, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def restrict(folder: Path) -> None:
    for dirpath, _, filenames in os.walk(folder):
        os.chmod(dirpath, DIR_MODE)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), FILE_MODE)
