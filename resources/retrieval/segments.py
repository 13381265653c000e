"""A model's knowledge index, one vector segment per chunk segment (`resources.segments`): a new batch's passages
are embedded once.

A vector segment's key hashes the chunk segment's key, the embedding model's identity (its files' content) and
`max_chars`; it holds the segment's passages (PASSAGE_COLUMNS) and their vectors in the same order. The index links both, in order
(`passages.parquet/`, `vectors/`), and stacks the vectors when it is loaded: exact search over every passage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from resources.knowledge.segments import CHUNK_INTS
from resources.retrieval.index import PASSAGE_COLUMNS, KnowledgeIndexer
from resources.records import frame
from resources.segments import (CHUNK_SEGMENTS, VECTOR_SEGMENTS, link_parts, merge_arrays, merge_tables, segment_dir,
                                segment_key, write_typed, writing_segment)

CODE = "1"
VECTOR_MERGE = {"passages.parquet": merge_tables, "vectors.npy": merge_arrays}  # a run of segments' files


@dataclass
class VectorBuild:
    keys: list[str]  # per chunk segment, in order
    made: int = 0  # segments embedded in this build
    reused: int = 0
    passages_embedded: int = 0
def vector_segments(store, model: str, chunk_keys: list[str], indexer: KnowledgeIndexer) -> VectorBuild:
    """The vector segment of each chunk segment, embedding only the passages of segments the store does not hold."""
    asset = f"{model}/{VECTOR_SEGMENTS}"
    build = VectorBuild(vector_keys(chunk_keys, indexer))
    held = set(store.partitions(asset))
    for chunk_key, key in zip(chunk_keys, build.keys):
        if key in held:
            build.reused += 1
            continue
        chunks = segment_dir(store, f"{model}/{CHUNK_SEGMENTS}", chunk_key) / "chunks.parquet"
        passages = pd.read_parquet(chunks, columns=PASSAGE_COLUMNS) if chunks.exists() else frame([], PASSAGE_COLUMNS)
        vectors = indexer.embed(list(passages["text"])) if len(passages) else np.zeros((0, 0), dtype=np.float32)
        with writing_segment(store, asset, key) as out:
            write_typed(out / "passages.parquet", passages, CHUNK_INTS)
            np.save(out / "vectors.npy", vectors)
        build.made += 1
        build.passages_embedded += len(passages)
    return build


def vector_keys(chunk_keys: list[str], indexer: KnowledgeIndexer) -> list[str]:
    """The vector segments' keys of these chunk segments, embedded by `indexer`."""
    identity = indexer.identity()
    return [segment_key(key, identity, CODE) for key in chunk_keys]


def write_index(store, model: str, keys: list[str], folder: Path) -> None:
    """`folder/passages.parquet` and `folder/vectors/` (the segments' passages and vectors, linked in order: no
    version of the index copies the vectors of another); `KnowledgeIndexer.load` stacks them."""
    asset = f"{model}/{VECTOR_SEGMENTS}"
    link_parts(store, asset, keys, "passages.parquet", folder / "passages.parquet",
               lambda path: write_typed(path, frame([], PASSAGE_COLUMNS), CHUNK_INTS), VECTOR_MERGE)
    link_parts(store, asset, keys, "vectors.npy", folder / "vectors",
               lambda path: np.save(path, np.zeros((0, 0), dtype=np.float32)), VECTOR_MERGE)


def retrieve_upto(store, model: str, indexer: KnowledgeIndexer, keys: list[str], i: int):
    """A retrieve function, (questions, k) -> the k nearest passages of each, over the vector segments `keys[:i + 1]`:
    the knowledge index as it stood when segment `i` joined it (its runs linked, its vectors stacked once)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tuneforge-index-") as folder:
        write_index(store, model, keys[: i + 1], Path(folder))
        return indexer.load(folder).passages
