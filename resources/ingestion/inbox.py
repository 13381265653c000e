"""The ingestion inbox: a folder where users (or upstream jobs) drop batches of data.

Each model watches its own inbox. By default (`batch_by: entry`) each top-level entry is one batch: a file
(`tickets_2026_11.jsonl`) or a folder (`policies/`); with `batch_by: folder` the whole inbox is one batch
named after the folder. The batch's name is its partition key; its content fingerprint makes the run key,
so the same content is never ingested twice while a changed file is ingested again as a new version.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from resources.ingestion.readers import (SPLIT_FORMATS, UNICODE_BOMS, BatchReadResult, ReaderLimits, batch_files,
                                        count_records, entry_problem, entry_stat, read_batch)
from resources.preflight import CheckedResource, problem
from resources.records import file_sha256

IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", "~")
PART = re.compile(r"^(?P<file>.+\.(?i:jsonl|csv|parquet))--part-(?P<index>\d{4,})$")  # one part of a split file
_RECORDS: dict[tuple, int] = {}  # (path, size, mtime_ns, limits) -> records (readers.count_records), per process
_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256 of the file


def _cached(cache: dict, path: Path, compute, *also):
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, *also)
    if key not in cache:
        if len(cache) > 1024:
            cache.clear()
        cache[key] = compute(path)
    return cache[key]


@dataclass(frozen=True)
class BatchEntry:
    key: str  # partition key: the entry's name in the inbox
    path: Path
    signature: str  # cheap change detector: sizes and mtimes of the batch's files
    settled: bool  # no file changed during the last `settle_seconds`


class Inbox(CheckedResource):
    """How raw corpora are picked up and read: the limits, the settle time and the forget list, shared by every
    model; each model's own folder comes from its YAML (`for_folder`)."""

    path: str = Field(default="data/inbox", description="Folder watched for new batches (files or folders); "
                      "each model sets its own (`inbox:` in its YAML).")
    batch_by: Literal["entry", "folder"] = Field(
        default="entry", description="entry: each top-level file or folder is one batch; folder: the whole inbox is one batch.")
    forget_list: str = Field(
        default="policies/forget.yaml",
        description="Documents (doc_id) and raw files (sha256) to forget: ingestion drops their records (`tuneforge forget`).",
    )
    settle_seconds: float = Field(
        default=2.0,
        description="A batch is picked up only when none of its files changed for this long, so a file still "
        "being copied is not ingested half-written.",
    )
    max_file_bytes: int = Field(
        default=512 * 1024 * 1024, description="Files larger than this are quarantined unread (reason oversized_file)."
    )
    max_record_chars: int = Field(
        default=50_000, description="Records longer than this are quarantined (reason oversized_record)."
    )
    records_per_partition: int | None = Field(
        default=None, description="Split a top-level JSONL, CSV or Parquet file with more records than this into "
        "partitions of this many records (`<file>--part-0000`, `--part-0001`, ...), each ingested, cleaned and "
        "redacted as its own batch (a part reads only its records: JSONL lines and CSV rows outside it are not "
        "parsed into records, Parquet row groups outside it are not decoded) "
        "— so one huge export runs in parallel across workers (with Kubernetes, a pod per partition). Unset: one "
        "partition per file. Changing it registers new partitions.")
    max_parquet_rows: int = Field(
        default=1_000_000, description="Parquet files whose metadata declares more rows than this are quarantined "
        "unread (reason parquet_too_large): a few kB of compressed Parquet can hold millions of rows.",
    )
    max_parquet_bytes: int = Field(
        default=1024 * 1024 * 1024, description="Parquet files whose row groups declare more uncompressed bytes than "
        "this in all are quarantined unread (reason parquet_too_large).",
    )

    def problems(self) -> list[str]:
        from resources.ingestion.forget import ForgetList

        found = []  # each model's folder is checked with its YAML (ModelSpec.problems)
        try:
            ForgetList.load(self.forget_list)
        except (OSError, ValueError) as err:
            found.append(problem(self, "forget_list", self.forget_list, str(err)))
        return found

    def root(self) -> Path:
        return Path(self.path).resolve()

    def for_folder(self, path: str, batch_by: str = "entry") -> "Inbox":
        """These settings over one model's folder."""
        return self.model_copy(update={"path": path, "batch_by": batch_by})

    def part_of(self, key: str) -> tuple[str, int] | None:
        """(file name, part index) when `key` names one part of a file split into partitions."""
        match = PART.match(key) if self.records_per_partition and self.batch_by == "entry" else None
        if match is None or "/" in key or "\\" in key or match["file"].startswith(".") or (self.root() / key).exists():
            return None  # not a part (a real entry of that name is itself; a path is never a batch)
        return match["file"], int(match["index"])

    def parts(self, path: Path) -> int:
        """How many partitions a top-level file is split into (1: not split)."""
        if not self.records_per_partition or self.batch_by != "entry" \
                or path.suffix.lower().lstrip(".") not in SPLIT_FORMATS or entry_problem(path, self.root()) is not None:
            return 1
        with path.open("rb") as handle:
            if handle.read(4).startswith(UNICODE_BOMS):  # UTF-16/32: read whole
                return 1
        limits = self.limits()
        records = _cached(_RECORDS, path, lambda p: count_records(p, limits), limits)
        return max(1, math.ceil(records / self.records_per_partition))

    def _batch_path(self, key: str) -> Path:
        root = self.root()
        part = self.part_of(key)
        if part is not None:
            return root / part[0]
        if self.batch_by == "folder":
            if key != root.name:
                raise FileNotFoundError(f"inbox {root} is read as one batch named {root.name!r}, not {key!r}")
            return root
        if not key or "/" in key or key in {".", ".."}:
            raise ValueError(f"invalid batch name {key!r}")
        return root / key

    def limits(self) -> ReaderLimits:
        return ReaderLimits(max_file_bytes=self.max_file_bytes, max_record_chars=self.max_record_chars,
                            max_parquet_rows=self.max_parquet_rows, max_parquet_bytes=self.max_parquet_bytes)

    def batches(self, now: float | None = None) -> list[BatchEntry]:
        """The batches currently in the inbox, sorted by name."""
        root = self.root()
        if not root.is_dir():
            raise FileNotFoundError(f"inbox folder {root} does not exist: create it or set Inbox.path")
        now = time.time() if now is None else now
        entries = []
        candidates = [root] if self.batch_by == "folder" else sorted(root.iterdir())
        for path in candidates:
            if path is not root and (path.name.startswith(".") or path.name.endswith(IGNORED_SUFFIXES)):
                continue
            files = [f for f in batch_files(path) if not f.name.endswith(IGNORED_SUFFIXES)]
            if not files:
                continue
            stats = [(f.relative_to(root).as_posix(), *entry_stat(f)) for f in files]  # never follows a link out
            newest = max(s[2] for s in stats) / 1e9
            signature = hashlib.sha256(repr(stats).encode()).hexdigest()[:16]
            settled = now - newest >= self.settle_seconds
            parts = self.parts(path) if settled and path.is_file() else 1
            if parts > 1:
                entries += [BatchEntry(f"{path.name}--part-{i:04d}", path, f"{signature}:{i}", settled) for i in range(parts)]
            else:
                entries.append(BatchEntry(path.name, path, signature, settled=settled))
        return entries

    def content_hash(self, key: str) -> str:
        """sha256 over the batch's file names and bytes: identical content, identical hash. A part of a split file:
        the file's hash, the part and the records per partition."""
        part = self.part_of(key)
        if part is not None:
            sha = _cached(_HASHES, self._batch_path(key), file_sha256)
            return hashlib.sha256(f"{part[0]}\0{sha}\0{part[1]}\0{self.records_per_partition}".encode()).hexdigest()
        digest = hashlib.sha256()
        root = self.root()
        for f in batch_files(self._batch_path(key)):
            digest.update(f.relative_to(root).as_posix().encode() + b"\0")
            if entry_problem(f, root) is not None:  # never opened (a FIFO would block): its name stands for it
                digest.update(repr(entry_stat(f)).encode())
                continue
            with f.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        return digest.hexdigest()

    def read(self, key: str) -> BatchReadResult:
        """Every record of the batch; records on the forget list are dropped (reason `forgotten`)."""
        from resources.ingestion.forget import ForgetList

        root = self.root()
        part = self.part_of(key)
        select = None if part is None else (part[1] * self.records_per_partition, (part[1] + 1) * self.records_per_partition)
        result = read_batch(key, self._batch_path(key), root, self.limits(), select)
        forget = ForgetList.load(self.forget_list)
        if forget.entries:
            result.forgotten = [d["doc_id"] for d in result.documents if forget.forgets(d)]
            result.documents = [d for d in result.documents if not forget.forgets(d)]
        return result
