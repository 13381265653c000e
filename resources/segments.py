"""Segments: a stage's output kept in pieces, one per corpus segment, each computed once and reused.

The corpus is the chain of its batches' segments (`resources.curation.corpus`). The stages after it follow the
same pieces: the passages cut from one corpus segment are a chunk segment, their embeddings a vector segment.
Each piece sits in the artifact store under a key that hashes what made it (the corpus segment's chain hash,
the rules, the tokenizer or embedding model, the code version), so one more batch computes one more piece and
the stage's artifact is the pieces linked in arrival order — with 10 or 1,000 batches before it. The training
examples follow too where they are made document by document (the `headings` strategy; the instruction dataset's
examples of each corpus segment and its sections).

The pieces of a long history are merged as it grows (`pieces`): every aligned run of 16 pieces into one, 16 of
those into one, and so on, while a run's files stay under RUN_MAX_BYTES — so with 1,000 batches an artifact links
about 25 parts, not 1,000, and the checks, the card and the HF export list as few. A run is keyed by the keys it
merges, so it is made once, by the batch that completes it, and reused by every later version.

A piece (a run's too) holds redacted documents' text: `resources.governance.forget` reaches and purges them like
every other copy.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd

from resources.records import file_sha256, sha256_hex
from resources.storage import link_or_copy, write_links

CORPUS_SEGMENTS = "corpus_segments"  # <model>/corpus_segments/<chain>: kept.parquet, dropped.parquet
CHUNK_SEGMENTS = "chunk_segments"  # <model>/chunk_segments/<key>: chunks.parquet, dropped.parquet, flagged.json
VECTOR_SEGMENTS = "passage_vectors"  # <model>/passage_vectors/<key>: passages.parquet, vectors.npy
EXAMPLE_SEGMENTS = "knowledge_example_segments"  # <model>/.../<key>: examples.parquet, dropped.parquet, counts.json
INSTRUCTION_SEGMENTS = "instruction_segments"  # <model>/.../<key>: examples.parquet, dropped.parquet, ledger.json, hf/
GOLDEN_SEGMENTS = "golden_segments"  # <model>/golden_segments/<key>: examples.parquet (redacted), redactions.json
CARD_SEGMENTS = "card_segments"  # <model>/card_segments/<key>: lengths.json (token lengths per split; no text)
CHECK_VERDICTS = "check_verdicts"  # <model>/check_verdicts/<key>: verdict.json (counts and ids; no text), or hashes


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


RUN_FANOUT = 16  # a run merges 16 pieces (or 16 runs of the level below), aligned on multiples of its size
RUN_MAX_BYTES = 64 << 20  # a run whose pieces' files hold more stays as its pieces (a merge reads them into memory)
RUN_CODE = "1"  # bump when the way a run is merged changes

Merger = Callable[[list[Path], Path], None]  # (the file in each merged piece that has it, in order) -> the run's file


def runs(n: int, fanout: int = RUN_FANOUT) -> list[tuple[int, int]]:
    """[lo, hi) per part of `n` pieces in order: each the largest aligned block of fanout**k pieces that fits. The
    blocks of a prefix do not change as pieces are added (1,000 pieces: 3 of 256, 14 of 16, 8 alone)."""
    out, i = [], 0
    while i < n:
        size = 1
        while i % (size * fanout) == 0 and i + size * fanout <= n:
            size *= fanout
        out.append((i, i + size))
        i += size
    return out


def pieces(store, asset: str, keys: list[str], merge: Mapping[str, Merger]) -> list[tuple[int, Path]]:
    """The folders to read for the pieces `keys` (in order), as (index of the first key, folder): each complete run
    (`runs`) one merged folder — made here when the store does not hold it, from its sub-runs, with `merge`'s files
    (every file a piece of `asset` holds, each merged by its function) — unless its files exceed RUN_MAX_BYTES, then
    its sub-runs'. A run's key hashes the keys it merges and the file names, so callers merging other files never
    share one."""
    held = set(store.partitions(asset))
    names = sorted(merge)

    def folders(lo: int, hi: int) -> list[tuple[int, Path]]:
        if hi - lo == 1:
            return [(lo, segment_dir(store, asset, keys[lo]))]
        key = segment_key("run", names, keys[lo:hi], RUN_CODE)
        if key in held:
            return [(lo, segment_dir(store, asset, key))]
        step = (hi - lo) // RUN_FANOUT
        parts = [part for start in range(lo, hi, step) for part in folders(start, start + step)]
        if sum(_bytes(folder / name) for _, folder in parts for name in names) > RUN_MAX_BYTES:
            return parts
        with writing_segment(store, asset, key) as out:
            for name in names:  # in name order: a merger may read a file merged before it
                found = [folder / name for _, folder in parts if (folder / name).exists()]
                if found:
                    merge[name](found, out / name)
        held.add(key)
        return [(lo, segment_dir(store, asset, key))]

    return [part for lo, hi in runs(len(keys)) for part in folders(lo, hi)]


def _bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def merge_tables(sources: list[Path], target: Path) -> None:
    """Parquet tables of one schema, one after another (one row group each, read one at a time)."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(sources[0])
    with pq.ParquetWriter(target, schema) as writer:
        for source in sources:
            writer.write_table(pq.read_table(source).cast(schema))


def merge_arrays(sources: list[Path], target: Path) -> None:
    """.npy matrices stacked by rows (an empty piece's (0, 0) skipped), written into a memory-mapped file."""
    import numpy as np

    arrays = [a for a in (np.load(s, mmap_mode="r") for s in sources) if a.size]
    if not arrays:
        np.save(target, np.zeros((0, 0), dtype=np.float32))
        return
    out = np.lib.format.open_memmap(target, mode="w+", dtype=arrays[0].dtype,
                                    shape=(sum(len(a) for a in arrays), *arrays[0].shape[1:]))
    row = 0
    for a in arrays:
        out[row : row + len(a)] = a
        row += len(a)
    out.flush()
    del out


def merge_json(sources: list[Path], target: Path, maxima: frozenset[str] = frozenset()) -> None:
    """JSON summaries summed (`sum_json`); the numbers under a key in `maxima` (at any depth) are the largest, not
    the sum (bind it with functools.partial for an asset's merger)."""
    merged = None
    for source in sources:
        value = json.loads(source.read_text(encoding="utf-8"))
        merged = value if merged is None else sum_json(merged, value, maxima)
    target.write_text(json.dumps(merged, sort_keys=True), encoding="utf-8")


def sum_json(a: Any, b: Any, maxima: frozenset[str] = frozenset()) -> Any:
    """Two pieces' summaries as one: numbers added (the largest kept under a key in `maxima`), lists joined,
    booleans both true, objects key by key (a key in one only kept), anything else the same in both."""
    if isinstance(a, bool) and isinstance(b, bool):
        return a and b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a + b
    if isinstance(a, list) and isinstance(b, list):
        return a + b
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: (max(a[k], b[k]) if k in maxima else sum_json(a[k], b[k], maxima)) if k in a and k in b
                else a.get(k, b.get(k)) for k in {**a, **b}}
    if a != b:
        raise ValueError(f"cannot merge {a!r} and {b!r}")
    return a


def link_parts(store, asset: str, keys: list[str], name: str, target: Path,
               write_empty: Callable[[Path], None], merge: Mapping[str, Merger]) -> int:
    """`target`: a folder holding the `name` file of each part (`pieces`: the pieces, long runs of them merged) in
    order (hard links where the store is local, copies otherwise), read back as one table; `write_empty(path)`
    writes an empty part when no piece has the file. `merge`: the asset's files and how a run merges each. Returns
    the number of parts linked."""
    target.mkdir()
    links = {}
    for i, folder in pieces(store, asset, keys, merge):
        piece = folder / name
        if not piece.exists():
            continue
        links[f"part-{i:06d}{Path(name).suffix}"] = (asset, folder.name, name)
        link_or_copy(piece, target / f"part-{i:06d}{Path(name).suffix}")
    if not links:
        write_empty(target / f"part-empty{Path(name).suffix}")
    write_links(target, links)  # a remote store keeps each part once, with its segment or run
    return len(links)


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


# -- signatures of a piece's texts, kept so later pieces are compared with them without the texts -----------------
GUARD = "guard.parquet"  # a piece's texts' signatures (`resources.dedup.signature_table`), with their columns
SIGNATURES = "signatures.npy"  # and their MinHash values, row for row (uint32; no text)
GUARD_MERGE = {GUARD: merge_tables, SIGNATURES: merge_arrays}  # runs of signature tables


def write_signatures(folder: Path, texts: list[str], dedup_rules, prefix: str = "", **columns) -> None:
    """`folder/<prefix>guard.parquet` (`signature_table`'s keys and bands, with `columns`) and
    `folder/<prefix>signatures.npy` (the MinHash values, row for row)."""
    from resources.dedup import signature_table

    table, values = signature_table(texts, dedup_rules)
    save_signatures(folder, table, values, prefix, **columns)


def save_signatures(folder: Path, table: pd.DataFrame, values, prefix: str = "", **columns) -> None:
    """A signature table and its MinHash values made already, as `write_signatures` writes them (with `columns`)."""
    import numpy as np

    write_typed(folder / f"{prefix}{GUARD}", table.assign(**columns), ints=frozenset(table.columns))
    np.save(folder / f"{prefix}{SIGNATURES}", np.asarray(values).astype(np.uint32))  # datasketch's values are 32-bit


def read_signatures(folder: Path, prefix: str = ""):
    """(signature table, MinHash values memory-mapped) written by `write_signatures` (or merged in a run)."""
    import numpy as np

    table = pd.read_parquet(folder / f"{prefix}{GUARD}")
    values = np.load(folder / f"{prefix}{SIGNATURES}", mmap_mode="r") if len(table) else np.empty((0, 0), dtype=np.uint64)
    return table, values


def stacked_signatures(parts):
    """Signature tables and values (`read_signatures`' pairs) as one (table, values) pair, the empty ones left out;
    None when every one is empty."""
    import numpy as np

    parts = [(t, v) for t, v in parts or [] if len(t)]
    if not parts:
        return None
    return pd.concat([t for t, _ in parts], ignore_index=True), np.concatenate([np.asarray(v) for _, v in parts])


QA_PREFIX = "qa_"  # a piece's teacher-written questions' signatures: qa_guard.parquet, qa_signatures.npy
QA_MERGE = {f"{QA_PREFIX}{GUARD}": merge_tables, f"{QA_PREFIX}{SIGNATURES}": merge_arrays}


class KeptSignatures:
    """The signatures the pieces of `asset` kept under `prefix` (the teacher's questions), up to the piece being
    made: read in runs (`pieces`, with the asset's `merge`) when the first piece is made, then one piece at a time
    as the loop passes it. Nothing is read while every piece is reused."""

    def __init__(self, store, asset: str, merge: Mapping[str, Merger], prefix: str = QA_PREFIX):
        self.store, self.asset, self.merge, self.prefix = store, asset, merge, prefix
        self.parts: list | None = None

    def before(self, keys: list[str], i: int):
        """(table, values) of every question the pieces `keys[:i]` kept, or None when they kept none."""
        if self.parts is None:
            self.parts = [read_signatures(folder, self.prefix) for _, folder in pieces(self.store, self.asset, keys[:i], self.merge)]
        return stacked_signatures(self.parts)

    def passed(self, key: str, made=None) -> None:
        """The piece `key` is behind the loop now: its signatures (`made`, or read from the store) join the rest."""
        if self.parts is not None:
            self.parts.append(made if made is not None else read_signatures(segment_dir(self.store, self.asset, key), self.prefix))


def unfinished_key(key: str, *content: Any) -> str:
    """Where a piece made with parts missing for a reason a later run may not have (a teacher's cap, a timeout) is
    kept: never `key`, which a complete piece takes, so the next run makes it again; `content` (what it holds) keeps
    two unfinished versions apart."""
    return segment_key(key, "unfinished", *content)


@dataclass
class Verdicts:
    verdicts: list[dict]  # per group of files, in order
    made: int = 0  # groups verified now
    reused: int = 0  # groups whose verdict was kept from before (the same bytes, the same context)


def part_verdicts(store, model: str, check: str, groups: list[tuple[Path, ...]], context: Any,
                  verify: Callable[..., dict], hashed: bool = False) -> Verdicts:
    """An asset check over an artifact kept in parts, one group of part files at a time: `verify(group)` -> a
    verdict (JSON, counts and ids only, never text) made once per content of the group's files (their sha256, read
    every time: a part replaced on disk is verified again) and `context` (whatever else the verdict depends on:
    the golden prompts, a bound, the check's version), kept in the store (`<model>/check_verdicts`). With 1,000
    batches a check reads every part's bytes but verifies only the new one. `hashed`: `verify(group, hashes)`,
    with the files' sha256 already read."""
    asset = f"{model}/{CHECK_VERDICTS}"
    held = set(store.partitions(asset))
    out = Verdicts([])
    for group in groups:
        hashes = [file_sha256(path) for path in group]
        key = segment_key(check, hashes, context)
        if key in held:
            out.verdicts.append(read_json(segment_dir(store, asset, key) / "verdict.json"))
            out.reused += 1
            continue
        verdict = verify(group, hashes) if hashed else verify(group)
        with writing_segment(store, asset, key) as folder:
            (folder / "verdict.json").write_text(json.dumps(verdict, sort_keys=True), encoding="utf-8")
        held.add(key)
        out.verdicts.append(verdict)
        out.made += 1
    return out


def table_parts(path: Path) -> list[Path]:
    """The part files of a stored table (a folder of parts), or the table's one file."""
    return sorted(path.glob("*.parquet")) if path.is_dir() else [path]
