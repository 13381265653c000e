"""Exact and near-duplicate detection (MinHash LSH from datasketch), across batches.

Each batch is de-duplicated against itself in reading order when it is cleaned; batches are de-duplicated
against each other where they meet (the model's `corpus`), in the order they were registered: the first copy
wins, every later copy is dropped naming the kept one. MinHash signatures are stored beside the redacted
documents, so the corpus never re-hashes a batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

from resources.records import sha256_hex

_TOKEN = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class DedupRules:
    num_perm: int = 128
    threshold: float = 0.7  # estimated Jaccard similarity at or above which documents are near-duplicates
    shingle_chars: int = 5  # character n-grams: robust to typos and one-word edits in short texts


def normalised_key(text: str) -> str:
    """Exact-duplicate key: case, punctuation and whitespace do not make a document new."""
    return sha256_hex(" ".join(_TOKEN.findall(text.lower())))


def shingles(text: str, n: int) -> set[bytes]:
    """Character n-grams of the normalised text (lower case, words joined by one space)."""
    norm = " ".join(_TOKEN.findall(text.lower()))
    if len(norm) <= n:
        return {norm.encode()}
    return {norm[i : i + n].encode() for i in range(len(norm) - n + 1)}


class Deduplicator:
    """Holds what is already kept; `check` says whether a new text duplicates it."""

    def __init__(self, rules: DedupRules):
        self.rules = rules
        self.lsh = MinHashLSH(threshold=rules.threshold, num_perm=rules.num_perm)
        self.exact: dict[str, str] = {}  # normalised key -> doc_id
        self.signatures: dict[str, LeanMinHash] = {}
        self.scheme = MinHash(num_perm=rules.num_perm).scheme  # stored hash values carry no scheme

    def signature(self, text: str) -> LeanMinHash:
        mh = MinHash(num_perm=self.rules.num_perm)
        mh.update_batch(list(shingles(text, self.rules.shingle_chars)))
        return LeanMinHash(mh)

    def add(self, doc_id: str, key: str, signature: LeanMinHash) -> None:
        self.exact.setdefault(key, doc_id)
        self.signatures[doc_id] = signature
        self.lsh.insert(doc_id, signature, check_duplication=False)

    def stored(self, hashvalues) -> LeanMinHash:
        """A signature from stored MinHash values."""
        return LeanMinHash(seed=1, hashvalues=np.asarray(hashvalues), scheme=self.scheme)

    def add_stored(self, doc_id: str, key: str, hashvalues: np.ndarray) -> None:
        """Register a document kept earlier, from its stored key and MinHash values."""
        self.add(doc_id, key, self.stored(hashvalues))

    def check(self, key: str, signature: LeanMinHash) -> tuple[str, str] | None:
        """(reason, detail) if the text duplicates a kept document, else None."""
        if key in self.exact:
            return "exact_duplicate", f"same normalised text as {self.exact[key]}"
        best = None
        for candidate in self.lsh.query(signature):
            similarity = signature.jaccard(self.signatures[candidate])
            if similarity >= self.rules.threshold and (best is None or similarity > best[1]):
                best = (candidate, similarity)
        if best:
            return "near_duplicate", f"estimated Jaccard {best[1]:.2f} with {best[0]}"
        return None
