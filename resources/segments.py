"""Segments: a stage's output kept in pieces, one per corpus segment, each computed once and reused.

The corpus is the chain of its batches' segments (`resources.curation.corpus`). The stages after it follow the
same pieces: the passages cut from one corpus segment are a chunk segment, their embeddings a vector segment.
Each piece sits in the artifact store under a key that hashes what made it (the corpus segment's chain hash,
the rules, the tokenizer or embedding model, the code version), so one more batch computes one more piece and
the stage's artifact is the pieces linked in arrival order — with 10 or 1,000 batches before it. The training
examples follow too where they are made document by document (the `headings` strategy; the instruction dataset's
examples of each corpus segment and its sections).

A piece holds redacted documents' text: `resources.governance.forget` reaches and purges them like every
other copy.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from resources.records import file_sha256, sha256_hex

CORPUS_SEGMENTS = "corpus_segments"  # <model>/corpus_segments/<chain>: kept.parquet, dropped.parquet
CHUNK_SEGMENTS = "chunk_segments"  # <model>/chunk_segments/<key>: chunks.parquet, dropped.parquet, flagged.json
VECTOR_SEGMENTS = "passage_vectors"  # <model>/passage_vectors/<key>: passages.parquet, vectors.npy
EXAMPLE_SEGMENTS = "knowledge_example_segments"  # <model>/.../<key>: examples.parquet, dropped.parquet, counts.json
INSTRUCTION_SEGMENTS = "instruction_segments"  # <model>/.../<key>: examples.parquet, dropped.parquet, ledger.json, hf/
CARD_SEGMENTS = "card_segments"  # <model>/card_segments/<key>: lengths.json (token lengths per split; no text)
CHECK_VERDICTS = "check_verdicts"  # <model>/check_verdicts/<key>: verdict.json (counts and ids; no text)


def segment_key(*parts: Any) -> str:
    """The key of a piece: a hash of everything that made it (JSON, sorted keys)."""
    return sha256_hex(json.dumps(parts, sort_keys=True, default=str))[:40]


@contextmanager
def writing_segment(store, asset: str, key: str):
    """`store.writing` for a piece, whose files are then made read-only (0400): every version of an artifact that
    links the piece shares its files, so none may be written through in place (replace a link, never write into it)."""
    with store.writing(asset, key) as out:
        yield out
    folder = store.partition_dir(asset, key)
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o400)


def read_json(path: Path, default: Any = None) -> Any:
    """A piece's JSON file, or `default` where the piece has none."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else default


def segment_dir(store, asset: str, key: str) -> Path:
    """A piece's local folder (fetched from the remote store if only the remote has it)."""
    folder = store.partition_dir(asset, key)
    return folder if folder.exists() else store.local(asset, key)


def link_or_copy(source: Path, target: Path) -> None:
    """`target` as a hard link to `source` (a piece shared, not copied); a copy where no link can be made (another
    file system, a store fetched from a remote)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def link_parts(store, asset: str, keys: list[str], name: str, target: Path,
               write_empty: Callable[[Path], None]) -> int:
    """`target`: a folder holding each piece's `name` file in order (hard links where the store is local, copies
    otherwise), read back as one table; `write_empty(path)` writes an empty part when no piece has the file.
    Returns the number of parts linked."""
    target.mkdir()
    parts = 0
    for i, key in enumerate(keys):
        piece = segment_dir(store, asset, key) / name
        if not piece.exists():
            continue
        link_or_copy(piece, target / f"part-{i:06d}{Path(name).suffix}")
        parts += 1
    if not parts:
        write_empty(target / f"part-empty{Path(name).suffix}")
    return parts


def write_typed(path: Path, df: pd.DataFrame, ints: frozenset[str] = frozenset({"line", "pii_found"}),
                chats: frozenset[str] = frozenset()) -> None:
    """A table with fixed column types (the `ints` columns as integers, the `chats` columns as lists of
    {role, content}, every other as strings), so the pieces of one artifact read back as one table whatever each
    held (a column that is empty in one piece stays a string)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    chat = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    schema = pa.schema([pa.field(c, pa.int64() if c in ints else chat if c in chats else pa.string()) for c in df.columns])
    pq.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False), path)


@dataclass
class Verdicts:
    verdicts: list[dict]  # per group of files, in order
    made: int = 0  # groups verified now
    reused: int = 0  # groups whose verdict was kept from before (the same bytes, the same context)


def part_verdicts(store, model: str, check: str, groups: list[tuple[Path, ...]], context: Any,
                  verify: Callable[[tuple[Path, ...]], dict]) -> Verdicts:
    """An asset check over an artifact kept in parts, one group of part files at a time: `verify(group)` -> a
    verdict (JSON, counts and ids only, never text) made once per content of the group's files (their sha256, read
    every time: a part replaced on disk is verified again) and `context` (whatever else the verdict depends on:
    the golden prompts, a bound, the check's version), kept in the store (`<model>/check_verdicts`). With 1,000
    batches a check reads every part's bytes but verifies only the new one."""
    asset = f"{model}/{CHECK_VERDICTS}"
    held = set(store.partitions(asset))
    out = Verdicts([])
    for group in groups:
        key = segment_key(check, [file_sha256(path) for path in group], context)
        if key in held:
            out.verdicts.append(read_json(segment_dir(store, asset, key) / "verdict.json"))
            out.reused += 1
            continue
        verdict = verify(group)
        with writing_segment(store, asset, key) as folder:
            (folder / "verdict.json").write_text(json.dumps(verdict, sort_keys=True), encoding="utf-8")
        held.add(key)
        out.verdicts.append(verdict)
        out.made += 1
    return out


def table_parts(path: Path) -> list[Path]:
    """The part files of a stored table (a folder of parts), or the table's one file."""
    return sorted(path.glob("*.parquet")) if path.is_dir() else [path]
