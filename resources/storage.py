"""The artifact store: where every table, dataset and report that tuneforge produces lives.

One root folder, one sub-folder per asset, one folder per partition (or per content version for
unpartitioned assets). Writes are atomic: a stage writes into a temporary folder beside the target
and swaps it in with a rename, so a killed run never leaves a half-written artifact that a later
stage could read. Files are owner-only (0600 / 0700): the raw zone holds unredacted data.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import ConfigurableResource
from pydantic import Field

from resources.atomic import atomic_directory


class ArtifactNotFoundError(FileNotFoundError):
    """An upstream artifact has not been materialized (or was removed)."""


class ArtifactStore(ConfigurableResource):
    """Local-filesystem artifact store (the embedded default).

    Production deployments point `root` at a shared volume; object storage is configured the same way
    once the store speaks fsspec URLs.
    """

    root: str = Field(
        default=".tuneforge/artifacts",
        description="Folder under which every artifact is written, one sub-folder per asset. "
        "Relative paths are resolved against the current working directory.",
    )

    # -- locations ---------------------------------------------------------------------------
    def asset_dir(self, asset: str) -> Path:
        return Path(self.root).resolve() / asset

    def partition_dir(self, asset: str, partition: str) -> Path:
        if not partition or "/" in partition or partition in {".", ".."}:
            raise ValueError(f"invalid partition key for the artifact store: {partition!r}")
        return self.asset_dir(asset) / partition

    # -- atomic writes -----------------------------------------------------------------------
    def writing(self, asset: str, partition: str):
        """A fresh temporary folder (context manager); on success it replaces `asset/partition`
        atomically, owner-only."""
        return atomic_directory(self.partition_dir(asset, partition), owner_only=True)

    # -- reads -------------------------------------------------------------------------------
    def exists(self, asset: str, partition: str, name: str | None = None) -> bool:
        path = self.partition_dir(asset, partition)
        return (path / name).exists() if name else path.exists()

    def path(self, asset: str, partition: str, name: str) -> Path:
        path = self.partition_dir(asset, partition) / name
        if not path.exists():
            raise ArtifactNotFoundError(
                f"{asset}[{partition}] has no {name} under {path.parent}: materialize {asset} "
                f"for partition {partition!r} first"
            )
        return path

    def read_table(self, asset: str, partition: str, name: str = "documents.parquet") -> pd.DataFrame:
        return pd.read_parquet(self.path(asset, partition, name))

    def read_json(self, asset: str, partition: str, name: str) -> Any:
        return json.loads(self.path(asset, partition, name).read_text(encoding="utf-8"))

    # -- versions of unpartitioned assets --------------------------------------------------------
    def set_latest(self, asset: str, version: str) -> None:
        """Point `asset`'s LATEST marker at a fully written version (atomic rename)."""
        self.partition_dir(asset, version)  # validates the name
        marker = self.asset_dir(asset) / "LATEST"
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(f".LATEST.tmp-{uuid.uuid4().hex[:8]}")
        tmp.write_text(version, encoding="utf-8")
        os.replace(tmp, marker)

    def latest(self, asset: str) -> str:
        marker = self.asset_dir(asset) / "LATEST"
        if not marker.is_file():
            raise ArtifactNotFoundError(f"{asset} has not been materialized yet (no {marker}): materialize it first")
        return marker.read_text(encoding="utf-8").strip()

    def partitions(self, asset: str) -> list[str]:
        """Partitions (or versions) of `asset` that are fully written, sorted."""
        root = self.asset_dir(asset)
        if not root.exists():
            return []
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


# -- helpers used inside `writing()` blocks ----------------------------------------------------
def write_table(folder: Path, name: str, frame: pd.DataFrame) -> Path:
    path = folder / name
    frame.to_parquet(path, index=False)
    return path


def write_json(folder: Path, name: str, payload: Any) -> Path:
    path = folder / name
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str), encoding="utf-8")
    return path


def write_text(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path
