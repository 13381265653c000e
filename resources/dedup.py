"""Exact and near-duplicate detection (MinHash LSH from datasketch), across batches.

Each batch is de-duplicated against itself in reading order when it is cleaned; batches are de-duplicated
against each other where they meet (the model's `corpus`), in the order they were registered: the first copy
wins, every later copy is dropped naming the kept one. MinHash signatures are stored beside the redacted
documents, so the corpus never re-hashes a batch.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import pandas as pd
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

    def check(self, key: str, signature: LeanMinHash, ignore: frozenset[str] = frozenset()) -> tuple[str, str] | None:
        """(reason, detail) if the text duplicates a kept document, else None. `ignore`: documents this one is not
        compared with (near-duplicates only: an earlier version of the same document it supersedes)."""
        if key in self.exact:
            return "exact_duplicate", f"same normalised text as {self.exact[key]}"
        best = None
        for candidate in self.lsh.query(signature):
            if candidate in ignore:
                continue
            similarity = signature.jaccard(self.signatures[candidate])
            if similarity >= self.rules.threshold and (best is None or similarity > best[1]):
                best = (candidate, similarity)
        if best:
            return "near_duplicate", f"estimated Jaccard {best[1]:.2f} with {best[0]}"
        return None


# -- signatures compared band for band, without the texts ---------------------------------------------------------
@lru_cache(maxsize=8)
def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) of the LSH `Deduplicator` builds for these rules."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


def signature_table(texts: Sequence[str], rules: DedupRules = DedupRules()) -> tuple[pd.DataFrame, np.ndarray]:
    """Per text, the int64 head of its exact-duplicate key and one int64 hash per LSH band of its MinHash (the
    table `near_pairs` joins on), and the MinHash values themselves (n x num_perm uint64, to confirm a pair).
    Stored once per text, they find what `Deduplicator.check` would call duplicates later without the texts."""
    bands, width = lsh_bands(rules.threshold, rules.num_perm)
    dedup = Deduplicator(rules)
    values = np.empty((len(texts), rules.num_perm), dtype=np.uint64)
    keys = np.empty(len(texts), dtype=np.uint64)
    for i, text in enumerate(texts):
        values[i] = dedup.signature(text).hashvalues
        keys[i] = int(normalised_key(text)[:16], 16)
    columns = {"key": keys.view(np.int64)}
    for band in range(bands):
        mixed = np.full(len(texts), 0xCBF29CE484222325, dtype=np.uint64)  # FNV-1a over the band's rows
        for row in range(band * width, (band + 1) * width):
            mixed = (mixed ^ values[:, row]) * np.uint64(0x100000001B3)
        columns[f"band_{band}"] = mixed.view(np.int64)
    return pd.DataFrame(columns), values


def near_pairs(table: pd.DataFrame, values: np.ndarray, guard: pd.DataFrame, guard_values: np.ndarray,
               threshold: float) -> list[tuple[int, int]]:
    """(row of `table`, row of `guard`) for every pair `Deduplicator.check` calls duplicates: the same exact key,
    or an equal LSH band (its candidates) and an estimated Jaccard similarity at or above `threshold` — joined
    band by band, then confirmed on the MinHash values of the candidates only."""
    columns = [c for c in guard.columns if c == "key" or c.startswith("band_")]
    if not len(table) or not len(guard):
        return []
    found = []
    for column in columns:
        joined = pd.DataFrame({"v": table[column].to_numpy(), "a": np.arange(len(table))}).merge(
            pd.DataFrame({"v": guard[column].to_numpy(), "b": np.arange(len(guard))}), on="v")
        if len(joined):
            found.append(joined[["a", "b"]].assign(exact=column == "key"))
    if not found:
        return []
    pairs = pd.concat(found).groupby(["a", "b"], as_index=False)["exact"].max()
    a, b, exact = pairs["a"].to_numpy(), pairs["b"].to_numpy(), pairs["exact"].to_numpy()
    similar = np.zeros(len(pairs), dtype=bool)
    for lo in range(0, len(pairs), 50_000):  # bounded memory: 50,000 pairs of MinHash values at a time
        hi = lo + 50_000
        similar[lo:hi] = (np.asarray(values[a[lo:hi]]) == guard_values[b[lo:hi]]).mean(axis=1) >= threshold
    keep = exact | similar
    return list(zip(a[keep].tolist(), b[keep].tolist()))


def identity_of(doc: dict[str, Any]) -> str | None:
    """What makes two documents of different batches versions of one document: a record's id (`external_id`), or
    a whole file's path inside its batch (`policies/sla.md` in batch `policies` and `sla.md` as a batch of its own
    are both `sla.md`). None for a record without an id: nothing says which earlier record it would replace."""
    if doc.get("external_id"):
        return f"id:{doc['external_id']}"
    if doc.get("source_format") in FILE_DOCUMENTS and doc.get("source_path"):
        path, batch = str(doc["source_path"]), str(doc.get("batch") or "")
        return "file:" + (path[len(batch) + 1:] if batch and path.startswith(batch + "/") else path)
    return None


FILE_DOCUMENTS = frozenset({"md", "markdown", "rst", "txt", "html", "htm", "pdf", "docx"})  # one document per file


class Versions:
    """The current version of each document identity: a later batch's document with the identity of one kept
    before supersedes it (it is kept even where its text is a near-duplicate of the old one: a number changed)."""

    def __init__(self):
        self.current: dict[str, tuple[str, str]] = {}  # identity -> (doc_id, batch) of its latest kept version

    def earlier(self, doc: dict[str, Any], batch: str) -> str | None:
        """The doc_id this document supersedes: the kept version of its identity from an earlier batch."""
        identity = identity_of(doc)
        found = self.current.get(identity) if identity else None
        return found[0] if found and found[1] != batch else None

    def keep(self, doc: dict[str, Any], batch: str) -> None:
        identity = identity_of(doc)
        if identity:
            self.current[identity] = (doc["doc_id"], batch)


# -- the persistent cross-batch index ------------------------------------------------------------------------------
INDEX_FORMAT = "2"  # bump when what an applied batch stores changes: every chain (and so every corpus) changes


def chain_hashes(config: Any, batches: list[tuple[str, str]]) -> list[str]:
    """One hash per batch in arrival order: of the de-duplication config and every (batch, version) up to and
    including it. Equal chains mean equal state, so the index resumes after the longest prefix it already holds."""
    out, previous = [], sha256_hex(json.dumps({"config": config, "format": INDEX_FORMAT}, sort_keys=True, default=str))
    for batch, version in batches:
        previous = sha256_hex(f"{previous}\n{batch}\n{version}")
        out.append(previous[:32])
    return out


@dataclass
class AppliedBatch:
    seq: int  # position in arrival order, from 0
    batch: str
    version: str
    chain: str
    summary: dict[str, Any]  # records_in, kept, dropped by reason


class DedupIndex:
    """Cross-batch de-duplication state that persists between runs, so one more batch costs the same with 10 or
    1,000 batches before it: the exact-duplicate keys, the LSH band buckets and the MinHash values of every kept
    document, and the batches applied (in arrival order, each with the hash of the chain up to it). A database
    (SQLAlchemy URL): a SQLite file on local disk by default, Postgres where several workers share it. One index
    holds many namespaces (one per model).

    The result equals `TextCurator.deduplicate` over the same batches in the same order (a test holds it to
    that): documents are checked in order against everything kept before them; a batch that changes or leaves
    the chain rewinds the index to the batch before it, and what follows is applied again."""

    def __init__(self, url: str, rules: DedupRules, namespace: str):
        from sqlalchemy import (Column, Integer, LargeBinary, MetaData, String, Table, Text, create_engine)

        self.rules, self.namespace = rules, namespace
        self.engine = create_engine(url, future=True)
        meta = MetaData()
        self.applied_t = Table("dedup_applied", meta, Column("ns", String(200), primary_key=True),
                               Column("seq", Integer, primary_key=True), Column("batch", String(500)),
                               Column("version", String(100)), Column("chain", String(64)), Column("summary", Text))
        self.exact_t = Table("dedup_exact", meta, Column("ns", String(200), primary_key=True),
                             Column("key", String(64), primary_key=True), Column("doc_id", String(200)), Column("seq", Integer))
        self.band_t = Table("dedup_band", meta, Column("ns", String(200), primary_key=True),
                            Column("bucket", String(40), primary_key=True), Column("seq", Integer, primary_key=True),
                            Column("doc_id", String(200), primary_key=True))
        self.sig_t = Table("dedup_signature", meta, Column("ns", String(200), primary_key=True),
                           Column("seq", Integer, primary_key=True), Column("doc_id", String(200), primary_key=True),
                           Column("hashvalues", LargeBinary))
        # each kept document's identity (`identity_of`), to find the earlier version a later batch's one supersedes
        self.identity_t = Table("dedup_identity", meta, Column("ns", String(200), primary_key=True),
                                Column("identity", String(600), primary_key=True), Column("seq", Integer, primary_key=True),
                                Column("doc_id", String(200)))
        meta.create_all(self.engine)
        lsh = MinHashLSH(threshold=rules.threshold, num_perm=rules.num_perm)
        self.bands, self.rows_per_band = lsh.b, lsh.r

    def _buckets(self, hashvalues: np.ndarray) -> list[str]:
        r = self.rows_per_band
        return [f"{i}:" + sha256_hex(hashvalues[i * r : (i + 1) * r].astype("<u8").tobytes())[:32] for i in range(self.bands)]

    def applied(self) -> list[AppliedBatch]:
        from sqlalchemy import select

        t = self.applied_t
        with self.engine.connect() as conn:
            found = conn.execute(select(t).where(t.c.ns == self.namespace).order_by(t.c.seq)).all()
        return [AppliedBatch(r.seq, r.batch, r.version, r.chain, json.loads(r.summary)) for r in found]

    def rewind(self, keep: int) -> None:
        """Forget every batch from position `keep` on (and what they added)."""
        from sqlalchemy import delete

        with self.engine.begin() as conn:
            for t in (self.applied_t, self.exact_t, self.band_t, self.sig_t, self.identity_t):
                conn.execute(delete(t).where(t.c.ns == self.namespace, t.c.seq >= keep))

    def apply(self, seq: int, batch: str, version: str, chain: str, documents: list[dict[str, Any]],
              info: dict[str, Any] | None = None) -> CheckedBatch:
        """Check the batch's documents (each with `doc_id`, `dedup_key`, `minhash`) in order against everything
        kept before them, add the kept ones, and record the batch at `seq` (its summary: records in, kept,
        dropped by reason, the earlier versions its documents supersede, and `info`); one transaction."""
        from sqlalchemy import insert, select

        outcome = CheckedBatch([], [], Counter())
        ns = self.namespace
        with self.engine.begin() as conn:
            for doc in documents:
                hashvalues = np.asarray(doc["minhash"], dtype=np.uint64)
                found = conn.execute(select(self.exact_t.c.doc_id).where(
                    self.exact_t.c.ns == ns, self.exact_t.c.key == doc["dedup_key"])).first()
                if found is not None:
                    outcome.drop(doc, "exact_duplicate", f"same normalised text as {found.doc_id}")
                    continue
                identity = identity_of(doc)
                earlier = conn.execute(select(self.identity_t.c.doc_id).where(
                    self.identity_t.c.ns == ns, self.identity_t.c.identity == identity, self.identity_t.c.seq < seq)
                    .order_by(self.identity_t.c.seq.desc())).first() if identity else None
                buckets = self._buckets(hashvalues)
                shared = conn.execute(select(self.band_t.c.seq, self.band_t.c.doc_id).distinct().where(
                    self.band_t.c.ns == ns, self.band_t.c.bucket.in_(buckets))).all()  # the primary key's index
                candidates = [conn.execute(select(self.sig_t.c.doc_id, self.sig_t.c.seq, self.sig_t.c.hashvalues).where(
                    self.sig_t.c.ns == ns, self.sig_t.c.seq == c.seq, self.sig_t.c.doc_id == c.doc_id)).one() for c in shared]
                best = None
                for c in sorted(candidates, key=lambda c: (c.seq, c.doc_id)):
                    if earlier is not None and c.doc_id == earlier.doc_id:
                        continue  # a new version of that document, not a copy of it
                    similarity = float(np.count_nonzero(np.frombuffer(c.hashvalues, dtype="<u8") == hashvalues)) / len(hashvalues)
                    if similarity >= self.rules.threshold and (best is None or similarity > best[1]):
                        best = (c.doc_id, similarity)
                if best:
                    outcome.drop(doc, "near_duplicate", f"estimated Jaccard {best[1]:.2f} with {best[0]}")
                    continue
                conn.execute(insert(self.exact_t).prefix_with("OR IGNORE", dialect="sqlite"),
                             [{"ns": ns, "key": doc["dedup_key"], "doc_id": doc["doc_id"], "seq": seq}])
                conn.execute(insert(self.sig_t).prefix_with("OR IGNORE", dialect="sqlite"), [
                    {"ns": ns, "seq": seq, "doc_id": doc["doc_id"], "hashvalues": hashvalues.astype("<u8").tobytes()}])
                conn.execute(insert(self.band_t).prefix_with("OR IGNORE", dialect="sqlite"),
                             [{"ns": ns, "bucket": b, "seq": seq, "doc_id": doc["doc_id"]} for b in buckets])
                if identity:
                    conn.execute(insert(self.identity_t).prefix_with("OR REPLACE", dialect="sqlite"),
                                 [{"ns": ns, "identity": identity, "seq": seq, "doc_id": doc["doc_id"]}])
                if earlier is not None:
                    outcome.superseded.append({"doc_id": earlier.doc_id, "by": doc["doc_id"], "identity": identity})
                outcome.kept.append(doc)
            summary = json.dumps({"records_in": len(documents), "kept": len(outcome.kept), "dropped": dict(outcome.reasons),
                                  "superseded": outcome.superseded, **(info or {})}, sort_keys=True, default=str)
            outcome.summary = json.loads(summary)  # as `applied` will return it
            conn.execute(insert(self.applied_t), [{"ns": ns, "seq": seq, "batch": batch, "version": version, "chain": chain,
                                                   "summary": summary}])
        return outcome

    def dispose(self) -> None:
        self.engine.dispose()


@dataclass
class CheckedBatch:
    kept: list[dict[str, Any]]
    dropped: list[dict[str, Any]]  # {doc_id, reason, detail}
    reasons: Counter
    summary: dict[str, Any] = None  # type: ignore[assignment]
    superseded: list[dict[str, Any]] = field(default_factory=list)  # {doc_id (the earlier version), by, identity}

    def drop(self, doc: dict[str, Any], reason: str, detail: str) -> None:
        self.dropped.append({"doc_id": doc["doc_id"], "reason": reason, "detail": detail})
        self.reasons[reason] += 1
