"""The artifact store: where every table, dataset and report that tuneforge produces lives.

One root folder, one sub-folder per asset, one folder per partition (or per content version for
unpartitioned assets). Writes are atomic: a stage writes into a temporary folder beside the target
and swaps it in with one atomic step (`resources.atomic`), so a reader never finds a version missing
or half-written, two writers of one version are serialised, and a killed run never leaves a
half-written artifact that a later stage could read; what killed writers leave behind is removed the
first time a store touches the asset folder. Files are owner-only (0600 / 0700): the raw zone holds
unredacted data.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr, field_validator

from resources.atomic import atomic_directory, clean_leftovers, remove_directory, target_lock
from resources.preflight import check_fsspec_url


COMMITTED = "_COMMITTED"  # written last on the remote: a folder without it is an interrupted upload
LINKED = "_linked.json"  # in a folder of a version: {file: [asset, partition, path]}, files linked from another one


class ArtifactNotFoundError(FileNotFoundError):
    """An upstream artifact has not been materialized (or was removed)."""


class UnsafeArtifactError(ValueError):
    """A remote partition's file list names a path outside the partition folder: nothing is fetched."""


def _inside(name: object) -> bool:
    """A file list entry that stays inside its partition folder: relative, POSIX separators, no '..', '.' or
    empty parts (so no leading, trailing or doubled '/'), no backslash, no NUL."""
    return (isinstance(name, str) and bool(name) and "\\" not in name and "\x00" not in name
            and all(part not in {"", ".", ".."} for part in name.split("/")))


class ArtifactStore(ConfigurableResource):
    """The artifact store: a local (or mounted) working copy under `root`, and optionally an object store
    (`remote_url`, any fsspec URL: s3://, gs://, az://, file://) that is the system of record.

    With a remote, every committed write is uploaded and then sealed with a `_COMMITTED` marker written
    last (object stores have no atomic rename): a killed upload leaves no marker, and readers ignore
    folders without one. A version missing locally is fetched from the remote, so a fresh machine (a
    Kubernetes pod, a CI runner) reads what another one wrote. Which version a step reads is never
    decided here: the materialization Dagster recorded names it (see `resources.artifacts`).
    """

    root: str = Field(
        default=".tuneforge/artifacts",
        description="Folder under which every artifact is written, one sub-folder per asset. "
        "Relative paths are resolved against the current working directory.",
    )
    remote_url: str | None = Field(
        default=None,
        description="Object-store URL mirrored as the system of record, e.g. s3://bucket/tuneforge (fsspec; "
        "credentials from the usual environment, e.g. AWS_*). Unset: local only.",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec storage options for remote_url (no secrets: use the environment)."
    )

    _cleaned: set = PrivateAttr(default_factory=set)  # asset folders this store has cleaned of leftovers

    @field_validator("remote_url", mode="before")
    @classmethod
    def _remote_url(cls, value):
        return check_fsspec_url("ArtifactStore", "remote_url", value)

    # -- the remote (fsspec) ----------------------------------------------------------------------
    def _remote(self):
        import fsspec

        fs, base = fsspec.core.url_to_fs(self.remote_url, **self.storage_options)
        return fs, base.rstrip("/")

    def _upload(self, asset: str, partition: str) -> None:
        fs, base = self._remote()
        target = f"{base}/{asset}/{partition}"
        marker = f"{target}/{COMMITTED}"
        local = self.partition_dir(asset, partition)
        local.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # one upload of a partition at a time from this machine, and no local rewrite of it while it is read
        with target_lock(local):
            if fs.exists(marker):
                fs.rm(marker)  # unseal first: from here until the new marker, readers ignore the folder
            if fs.exists(target):
                fs.rm(target, recursive=True)
            linked = _linked_files(local)  # stored once, in the partition they are linked from
            files = sorted(p for p in local.rglob("*") if p.is_file() and p not in linked)
            fs.makedirs(target, exist_ok=True)  # a no-op on object stores; needed by file:// and mounts
            for path in files:
                name = path.relative_to(local).as_posix()
                if "/" in name:
                    fs.makedirs(f"{target}/{name.rsplit('/', 1)[0]}", exist_ok=True)
                fs.put_file(str(path), f"{target}/{name}")
            fs.pipe_file(marker, json.dumps({p.relative_to(local).as_posix(): p.stat().st_size for p in files}).encode())

    def _fetch(self, asset: str, partition: str) -> bool:
        """Download a sealed remote partition that is missing locally; True if it is local now."""
        if not self.remote_url:
            return False
        fs, base = self._remote()
        source = f"{base}/{asset}/{partition}"
        if not fs.exists(f"{source}/{COMMITTED}"):
            return False
        listed = json.loads(fs.cat_file(f"{source}/{COMMITTED}"))
        if not isinstance(listed, (dict, list)):
            raise UnsafeArtifactError(f"{asset}[{partition}]: {source}/{COMMITTED} is not a file list; nothing was fetched")
        for name in listed:  # all checked before anything is written: a list naming one bad path fetches nothing
            if not _inside(name):
                raise UnsafeArtifactError(
                    f"{asset}[{partition}]: {source}/{COMMITTED} lists {name!r}, which is not a relative path inside "
                    "the partition folder (absolute, '..', '.' or empty parts, or a backslash); nothing was fetched")
        with atomic_directory(self.partition_dir(asset, partition), owner_only=True) as tmp:
            for name in listed:
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(f"{source}/{name}", str(tmp / name))
            self._relink(asset, partition, tmp)
        return True

    def _relink(self, asset: str, partition: str, folder: Path) -> None:
        """The files a fetched version links from other partitions (its `_linked.json` lists), linked again from
        those partitions (fetched too where missing). A list is checked whole before anything is linked: every
        name a file of its own folder, every source inside the store."""
        for listing in sorted(folder.rglob(LINKED)):
            links = json.loads(listing.read_text(encoding="utf-8"))
            if not isinstance(links, dict) or not all(
                    _inside(name) and "/" not in name and name != LINKED and isinstance(src, list) and len(src) == 3
                    and all(_inside(x) for x in src) and "/" not in src[1] for name, src in links.items()):
                raise UnsafeArtifactError(f"{asset}[{partition}]: {listing.relative_to(folder)} is not a list of files "
                                          "linked from inside the store; nothing was fetched")
            for name, (source_asset, source_partition, path) in links.items():
                source = self.local(source_asset, source_partition) / path
                if not source.is_file():
                    raise ArtifactNotFoundError(f"{asset}[{partition}]: {name} is linked from {source_asset}"
                                                f"[{source_partition}]/{path}, which the store does not hold")
                link_or_copy(source, listing.parent / name)

    def publish(self, asset: str, partition: str) -> None:
        """Upload and seal a partition written outside `writing()` (by a trainer process, say)."""
        if self.remote_url:
            self._upload(asset, partition)

    def local(self, asset: str, partition: str) -> Path:
        """The partition's local folder, fetched from the remote if only the remote has it."""
        path = self.partition_dir(asset, partition)
        if not path.exists():
            self._fetch(asset, partition)
        return path

    def delete(self, asset: str, partition: str) -> None:
        """Remove a stored version everywhere: unsealed and deleted on the remote first (the system of record, so a
        later read cannot fetch it back), then locally — the folder, what it links to, and any leftover of an
        interrupted write of it. A local removal that fails raises."""
        if self.remote_url:
            fs, base = self._remote()
            target = f"{base}/{asset}/{partition}"
            if fs.exists(f"{target}/{COMMITTED}"):
                fs.rm(f"{target}/{COMMITTED}")
            if fs.exists(target):
                fs.rm(target, recursive=True)
        remove_directory(self.partition_dir(asset, partition))

    # -- locations ---------------------------------------------------------------------------
    def asset_dir(self, asset: str) -> Path:
        """The asset's folder; the first time this store uses it, cleaned of what killed writers left there."""
        folder = Path(self.root).resolve() / asset
        if str(folder) not in self._cleaned:
            self._cleaned.add(str(folder))
            with suppress(OSError):  # best effort: a leftover that cannot be removed never blocks a read or write
                clean_leftovers(folder)
        return folder

    def clean_leftovers(self, asset: str) -> list[Path]:
        """Remove what killed writers left in `asset`'s folder (temporary and superseded folders, stale lock
        files); a live writer's folder is left alone. The paths removed. Runs by itself the first time a store
        uses an asset folder."""
        folder = Path(self.root).resolve() / asset
        self._cleaned.add(str(folder))
        return clean_leftovers(folder)

    def partition_dir(self, asset: str, partition: str) -> Path:
        if not partition or "/" in partition or partition in {".", ".."}:
            raise ValueError(f"invalid partition key for the artifact store: {partition!r}")
        return self.asset_dir(asset) / partition

    # -- atomic writes -----------------------------------------------------------------------
    @contextmanager
    def writing(self, asset: str, partition: str):
        """A fresh temporary folder (context manager); on success it replaces `asset/partition`
        atomically, owner-only, and is uploaded and sealed on the remote if there is one."""
        with atomic_directory(self.partition_dir(asset, partition), owner_only=True) as tmp:
            yield tmp
        if self.remote_url:
            self._upload(asset, partition)

    # -- reads -------------------------------------------------------------------------------
    def exists(self, asset: str, partition: str, name: str | None = None) -> bool:
        path = self.local(asset, partition)
        return (path / name).exists() if name else path.exists()

    def path(self, asset: str, partition: str, name: str) -> Path:
        path = self.local(asset, partition) / name
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

    def partitions(self, asset: str) -> list[str]:
        """Partitions (or versions) of `asset` that are fully written, sorted."""
        root = self.asset_dir(asset)
        # hidden names (temporary, versioned and superseded folders, lock files) are never partitions
        local = {p.name for p in root.iterdir() if not p.name.startswith(".") and p.is_dir()} if root.exists() else set()
        if self.remote_url:  # sealed remote partitions, found in one listing
            fs, base = self._remote()
            local.update(marker.rstrip("/").rsplit("/", 2)[-2] for marker in fs.glob(f"{base}/{asset}/*/{COMMITTED}"))
        return sorted(local)


# -- helpers used inside `writing()` blocks ----------------------------------------------------
def link_or_copy(source: Path, target: Path) -> None:
    """`target` as a hard link to `source` (a stored file shared, not copied); a copy where no link can be made
    (another file system)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_links(folder: Path, links: dict[str, tuple[str, str, str]]) -> None:
    """Record that `folder`'s files (name -> (asset, partition, path in it)) are linked from other stored
    partitions: a remote store uploads them once, with the partition they belong to, and a fetch links them
    again from there. Readers of a table folder skip it (a name starting with '_')."""
    if links:
        (folder / LINKED).write_text(json.dumps({n: list(src) for n, src in links.items()}, sort_keys=True),
                                     encoding="utf-8")


def _linked_files(root: Path) -> set[Path]:
    found: set[Path] = set()
    for listing in root.rglob(LINKED):
        with suppress(OSError, ValueError, AttributeError):
            found |= {listing.parent / name for name in json.loads(listing.read_text(encoding="utf-8"))}
    return found


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
