"""A model's corpus, built incrementally: each batch de-duplicated once against everything before it.

The persistent `DedupIndex` holds what earlier batches kept; each applied batch leaves a *segment* in the
artifact store (`<model>/corpus_segments/<chain hash>`: its kept rows and its cross-batch drops; its summary is in the index),
keyed by the hash of the chain of (batch, version) up to it. A new corpus resumes after the longest prefix of its
batches that the index and the store already hold, applies the rest (reading only their tables), and is the
segments in arrival order — linked, not copied, into the corpus's `documents.parquet` folder. With 10 or 1,000
batches before it, one more batch de-duplicates only itself; linking the parts (segments merged in runs,
`resources.segments.pieces`) is what grows (0.04 s to 0.12 s, `make bench-scale`'s incremental curve). A batch that
changes version (a forget, a re-run) or leaves the corpus rewinds the index to the batch before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from resources.artifacts import config_of
from resources.atomic import target_lock
from resources.dedup import chain_hashes
from resources.records import DROPPED_COLUMNS, Ledger, frame
from resources.segments import CORPUS_SEGMENTS, link_parts, merge_tables, write_typed, writing_segment

SEGMENTS = CORPUS_SEGMENTS
CORPUS_MERGE = {"kept.parquet": merge_tables, "dropped.parquet": merge_tables}  # a run of segments' files


@dataclass
class CorpusBuild:
    chains: list[str]  # per included batch, in arrival order
    summaries: list[dict[str, Any]]  # per included batch: records_in, kept, dropped by reason, batch info
    resumed: int  # batches the index already held
    applied: int  # batches de-duplicated in this build
    ledger: Ledger = field(default_factory=lambda: Ledger(stage="corpus"))


def build_corpus(curator, store, model: str, batches: list[tuple[str, str]], load: Callable[[str], tuple[list[dict], dict]],
                 columns: list[str], log: Callable[[str], None] = lambda _: None) -> CorpusBuild:
    """`batches`: the included (batch, version) pairs in arrival order; `load(batch)` -> (its redacted rows, info
    kept in the corpus's batches.json); `columns`: what a segment keeps of each row. Returns the chain per batch; the segments are in the store."""
    asset = f"{model}/{SEGMENTS}"
    chains = chain_hashes(config_of(curator.dedup_rules()), batches)
    folder = Path(store.root) / ".index"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with target_lock(folder / model):  # one build of a model's corpus at a time on this machine
        return _build(curator, store, model, asset, batches, chains, load, columns, log)


def _build(curator, store, model, asset, batches, chains, load, columns, log) -> CorpusBuild:
    index = curator.dedup_index(store.root, model)
    try:
        held = index.applied()
        stored = set(store.partitions(asset))  # one listing, not one look-up per batch
        common = 0
        while (common < min(len(held), len(chains)) and held[common].chain == chains[common]
               and chains[common] in stored):
            common += 1
        if common < len(held):
            log(f"dedup index: rewinding from batch {common} ({len(held) - common} batches applied again)")
        index.rewind(common)
        summaries = [h.summary for h in held[:common]]
        for seq in range(common, len(batches)):
            batch, version = batches[seq]
            documents, info = load(batch)
            outcome = index.apply(seq, batch, version, chains[seq], documents, {"batch": batch, "version": version, **info})
            with writing_segment(store, asset, chains[seq]) as out:
                if outcome.kept:
                    write_typed(out / "kept.parquet", frame([{c: d.get(c) for c in columns} for d in outcome.kept], columns))
                write_typed(out / "dropped.parquet", frame(outcome.dropped, DROPPED_COLUMNS))
            summaries.append(outcome.summary)
    finally:
        index.dispose()
    build = CorpusBuild(chains, summaries, common, len(batches) - common)
    for s in summaries:
        build.ledger.records_in += s["records_in"]
        build.ledger.kept += s["kept"]
        build.ledger.dropped.update(s["dropped"])
    return build


def link_segments(store, model: str, chains: list[str], name: str, folder: Path, empty: pd.DataFrame,
                  as_name: str | None = None) -> int:
    """`folder/<as_name or name>`: a folder of the segments' `name` files in arrival order (hard links where the
    store is local, copies otherwise), read back as one table; an empty table of `empty`'s columns when none has
    rows."""
    return link_parts(store, f"{model}/{SEGMENTS}", chains, name, folder / (as_name or name),
                      lambda path: write_typed(path, empty), CORPUS_MERGE)
