"""A model's passages, one chunk segment per corpus segment (`resources.segments`): a new batch is chunked once.

A chunk segment's key hashes the corpus segment's chain hash, the chunk rules and the tokenizer, so a changed
rule or tokenizer cuts every segment again and an unchanged one is reused as stored. The chunker has no state
across documents, so the passages are those of chunking the whole corpus at once (a test holds it to that).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from resources.knowledge.chunking import CHUNK_COLUMNS, Chunker
from resources.records import DROPPED_COLUMNS, frame, rows
from resources.safety.injection import injection_findings
from resources.segments import CHUNK_SEGMENTS, CORPUS_SEGMENTS, link_parts, segment_dir, segment_key, write_typed
from resources.storage import write_json

CODE = "1"  # bump when the way a segment is cut changes
CHUNK_INTS = frozenset({"level", "start", "end", "tokens"})


@dataclass
class ChunkBuild:
    keys: list[str]  # per corpus segment, in arrival order
    made: int = 0  # segments cut in this build
    reused: int = 0  # segments found in the store
    flagged: list[dict[str, Any]] = field(default_factory=list)  # passages carrying instructions, every segment


def chunk_segments(store, model: str, chains: list[str], chunker: Chunker, config: Any) -> ChunkBuild:
    """The chunk segment of each corpus segment (`chains`, in arrival order), cutting only those the store does not
    hold. `config`: what besides the chain decides a segment's passages (rules, tokenizer)."""
    asset = f"{model}/{CHUNK_SEGMENTS}"
    build = ChunkBuild([segment_key(chain, config, CODE) for chain in chains])
    held = set(store.partitions(asset))  # one listing, not one look-up per segment
    for chain, key in zip(chains, build.keys):
        if key in held:
            build.reused += 1
            continue
        kept = segment_dir(store, f"{model}/{CORPUS_SEGMENTS}", chain) / "kept.parquet"
        documents = rows(pd.read_parquet(kept)) if kept.exists() else []
        chunks, empty = chunker.chunk_all(documents)
        flagged = [{"chunk_id": c["chunk_id"], "source_path": c["source_path"], "section": c["section"], "patterns": found}
                   for c in chunks for found in [injection_findings(c["text"])] if found]
        with store.writing(asset, key) as out:
            write_typed(out / "chunks.parquet", frame(chunks, CHUNK_COLUMNS), CHUNK_INTS)
            write_typed(out / "dropped.parquet", frame(empty, DROPPED_COLUMNS))
            write_json(out, "flagged.json", flagged)
        build.made += 1
    for key in build.keys:
        build.flagged += _read_json(segment_dir(store, asset, key) / "flagged.json")
    return build


def link_chunks(store, model: str, keys: list[str], folder: Path) -> None:
    """`folder/chunks.parquet` and `folder/dropped.parquet`: the segments' tables, linked in order."""
    asset = f"{model}/{CHUNK_SEGMENTS}"
    link_parts(store, asset, keys, "chunks.parquet", folder / "chunks.parquet",
               lambda path: write_typed(path, frame([], CHUNK_COLUMNS), CHUNK_INTS))
    link_parts(store, asset, keys, "dropped.parquet", folder / "dropped.parquet",
               lambda path: write_typed(path, frame([], DROPPED_COLUMNS)))


def _read_json(path: Path) -> list:
    import json

    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
