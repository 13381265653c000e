"""A model's passages, one chunk segment per corpus segment (`resources.segments`): a new batch is chunked once.

A chunk segment's key hashes the corpus segment's chain hash, the chunk rules and the tokenizer, so a changed
rule or tokenizer cuts every segment again and an unchanged one is reused as stored. The chunker has no state
across documents, so the passages are those of chunking the whole corpus at once (a test holds it to that).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from resources.knowledge.chunking import CHUNK_COLUMNS, Chunker
from resources.records import DROPPED_COLUMNS, frame, rows
from resources.safety.injection import injection_findings
from resources.segments import (CHUNK_SEGMENTS, CORPUS_SEGMENTS, EXAMPLE_SEGMENTS, QA_MERGE, QA_PREFIX, KeptSignatures,
                                link_parts, merge_json, merge_tables, pieces, read_json, save_signatures, segment_dir,
                                segment_key, unfinished_key, write_typed, writing_segment)
from resources.storage import write_json

CODE = "5"  # bump when the way a segment is cut or made changes (4: topic questions for passages before any heading)
CHUNK_INTS = frozenset({"level", "start", "end", "tokens"})


CHUNK_MERGE = {"chunks.parquet": merge_tables, "dropped.parquet": merge_tables, "flagged.json": merge_json,
               # stats.json: counts summed, the largest chunks-per-document kept
               "stats.json": partial(merge_json, maxima=frozenset({"chunks_per_document_max"}))}
EXAMPLE_MERGE = {"examples.parquet": merge_tables, "dropped.parquet": merge_tables, "counts.json": merge_json,
                 **QA_MERGE}  # and, with qa, its kept questions' signatures


@dataclass
class ChunkBuild:
    keys: list[str]  # per corpus segment, in arrival order
    made: int = 0  # segments cut in this build
    reused: int = 0  # segments found in the store
    flagged: list[dict[str, Any]] = field(default_factory=list)  # passages carrying instructions, every segment
    stats: dict[str, Any] = field(default_factory=dict)  # chunks, documents_without_chunks, tokens_p50/max, ...


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
        with writing_segment(store, asset, key) as out:
            write_typed(out / "chunks.parquet", frame(chunks, CHUNK_COLUMNS), CHUNK_INTS)
            write_typed(out / "dropped.parquet", frame(empty, DROPPED_COLUMNS))
            write_json(out, "flagged.json", flagged)
            write_json(out, "stats.json", _stats(frame(chunks, CHUNK_COLUMNS), len(empty)))
        build.made += 1
    parts = []
    for _, folder in pieces(store, asset, build.keys, CHUNK_MERGE):
        build.flagged += read_json(folder / "flagged.json", [])
        parts.append(read_json(folder / "stats.json", {}))
    build.stats = _summed(parts)
    return build


def _stats(table: pd.DataFrame, without: int) -> dict[str, Any]:
    """What document_chunks reports, for one segment (a document's chunks are all in its segment)."""
    per_doc = table.groupby("doc_id").size() if len(table) else None
    return {"chunks": len(table), "documents_without_chunks": without,
            "tokens": {str(t): int(n) for t, n in table["tokens"].value_counts().items()} if len(table) else {},
            "chunks_per_document_max": int(per_doc.max()) if per_doc is not None else 0,
            "sections": int(table[["doc_id", "section"]].drop_duplicates().shape[0]) if len(table) else 0}


def _summed(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The segments' stats as one table's: counts summed, token counts merged (median and maximum from them)."""
    from collections import Counter

    tokens = Counter()
    for part in parts:
        tokens.update({int(t): n for t, n in part.get("tokens", {}).items()})
    ordered, seen, p50 = sorted(tokens.items()), 0, 0
    for value, n in ordered:  # the lower median
        seen += n
        if seen * 2 >= sum(tokens.values()):
            p50 = value
            break
    return {"chunks": sum(p.get("chunks", 0) for p in parts),
            "documents_without_chunks": sum(p.get("documents_without_chunks", 0) for p in parts),
            "tokens_p50": p50, "tokens_max": max(tokens) if tokens else 0,
            "chunks_per_document_max": max((p.get("chunks_per_document_max", 0) for p in parts), default=0),
            "sections": sum(p.get("sections", 0) for p in parts)}


def link_chunks(store, model: str, keys: list[str], folder: Path) -> None:
    """`folder/chunks.parquet` and `folder/dropped.parquet`: the segments' tables, linked in order."""
    asset = f"{model}/{CHUNK_SEGMENTS}"
    link_parts(store, asset, keys, "chunks.parquet", folder / "chunks.parquet",
               lambda path: write_typed(path, frame([], CHUNK_COLUMNS), CHUNK_INTS), CHUNK_MERGE)
    link_parts(store, asset, keys, "dropped.parquet", folder / "dropped.parquet",
               lambda path: write_typed(path, frame([], DROPPED_COLUMNS)), CHUNK_MERGE)



@dataclass
class ExampleSegmentBuild:
    keys: list[str]  # per chunk segment, in order
    made: int = 0
    reused: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # summed over the segments
    partial: int = 0  # segments made with teacher replies missing (a cap, a timeout): stored apart, made again next run


def example_segments(store, model: str, chunk_keys: list[str], policy, title_template: str, split_rules,
                     sections: bool = True, retrieve_upto: Callable[[int], Any] | None = None,
                     index_identity: Any = None, session=None, teacher_identity: Any = None,
                     corpus_chains: list[str] | None = None) -> ExampleSegmentBuild:
    """knowledge_examples one chunk segment at a time: the examples of the segments the store does not hold are
    made, the rest reused. Each segment's examples are `build_knowledge_examples` over its own passages (a test holds
    it to that): the document-local `headings` equal building the whole corpus at once; `raft` and `cloze` take their
    distractors from the passages of the segments up to and including their own (`retrieve_upto(i)`: a retrieve
    function over them; the chunk key already hashes that history, `index_identity` the embedder), so a new batch's
    examples are grounded among every earlier passage and no earlier example changes; `continued_pretraining`
    takes its ratio per segment. `qa` (with a teacher `session`; `teacher_identity` in the key) asks the teacher
    about the segment's passages only; its questions are de-duplicated against the questions every earlier segment
    kept (their signatures stored with each segment, compared by table joins), so the examples are those of asking
    about the whole corpus in order (replies are cached: a segment made again pays nothing twice). A segment the
    teacher left unfinished (a cap reached, a timeout) is stored under a key of its own, never the one a complete
    segment would take, so the next run makes it (and those after it) again. Without a session `qa` makes nothing,
    as the whole build. `sections=False` (the dataset does not use sections: its text_strategy is not 'sections'):
    every segment holds no example."""
    from collections import Counter

    from resources.artifacts import config_of
    from resources.dedup import DedupRules, signature_table
    from resources.knowledge.examples import (GROUNDED_STRATEGIES, JUDGE_PROMPT, KNOWLEDGE_EXAMPLE_COLUMNS, QA_PROMPT,
                                              SEGMENTED_STRATEGIES, HeldOut, build_knowledge_examples, qa_examples)

    if sections and not set(policy.strategies) <= SEGMENTED_STRATEGIES:
        raise ValueError(f"strategies {sorted(set(policy.strategies) - SEGMENTED_STRATEGIES)} are not made per segment")
    grounded = sections and bool(GROUNDED_STRATEGIES & set(policy.strategies))
    if grounded and retrieve_upto is None:
        raise ValueError(f"strategies {sorted(GROUNDED_STRATEGIES & set(policy.strategies))} retrieve distractors: "
                         "pass retrieve_upto")
    qa = sections and "qa" in policy.strategies and session is not None
    asset = f"{model}/{EXAMPLE_SEGMENTS}"
    config = config_of(policy, {"title_template": title_template, "split": split_rules, "sections": sections})
    extra = [index_identity] if grounded else []
    extra += [{"teacher": teacher_identity, "prompts": [QA_PROMPT, JUDGE_PROMPT]}] if qa else []
    build = ExampleSegmentBuild([segment_key(key, config, *extra, CODE) for key in chunk_keys])
    held = set(store.partitions(asset))
    counts = Counter()
    earlier = KeptSignatures(store, asset, EXAMPLE_MERGE)  # the qa questions the segments before kept
    for i, (chunk_key, key) in enumerate(zip(chunk_keys, build.keys)):
        signed = None  # the kept qa questions' signatures of a segment made here
        if key in held and not build.partial:
            build.reused += 1
        else:
            path = segment_dir(store, f"{model}/{CHUNK_SEGMENTS}", chunk_key) / "chunks.parquet"
            chunks = rows(pd.read_parquet(path)) if path.exists() and sections else []
            records = corpus_records(store, model, corpus_chains[i]) if "raft_pairs" in policy.strategies and corpus_chains \
                and sections else []
            made = build_knowledge_examples(chunks, policy, title_template, held_out_docs=HeldOut(split_rules),
                                            retrieve=retrieve_upto(i) if grounded and (chunks or records) else None,
                                            records=records)
            if qa and chunks:
                qa_examples(chunks, policy, session, HeldOut(split_rules), out=made, earlier=earlier.before(build.keys, i))
            if made.unfinished or build.partial:  # never under the key a complete segment takes
                build.partial += 1
                key = build.keys[i] = unfinished_key(key, [e["doc_id"] for e in made.examples], made.counts)
            if key not in held:
                with writing_segment(store, asset, key) as out:
                    write_typed(out / "examples.parquet", frame(made.examples, KNOWLEDGE_EXAMPLE_COLUMNS))
                    write_typed(out / "dropped.parquet", frame(made.dropped, DROPPED_COLUMNS))
                    write_json(out, "counts.json", dict(made.counts))
                    if qa:
                        signed = made.signatures or signature_table([], DedupRules())
                        save_signatures(out, *signed, QA_PREFIX)
            build.made += 1
        if qa:
            earlier.passed(build.keys[i], signed)
    for _, folder in pieces(store, asset, build.keys, EXAMPLE_MERGE):
        counts.update(read_json(folder / "counts.json", {}))
    build.counts = dict(counts)
    return build


def corpus_records(store, model: str, chain: str) -> list[dict]:
    """The corpus segment's documents that carry messages (question/answer records, chats): raft_pairs' questions."""
    path = segment_dir(store, f"{model}/{CORPUS_SEGMENTS}", chain) / "kept.parquet"
    if not path.exists():
        return []
    table = pd.read_parquet(path)
    return rows(table[table["messages"].notna()]) if "messages" in table else []


def link_examples(store, model: str, keys: list[str], folder: Path) -> None:
    """`folder/examples.parquet` and `folder/dropped.parquet`: the example segments' tables, linked in order."""
    from resources.knowledge.examples import KNOWLEDGE_EXAMPLE_COLUMNS

    asset = f"{model}/{EXAMPLE_SEGMENTS}"
    link_parts(store, asset, keys, "examples.parquet", folder / "examples.parquet",
               lambda path: write_typed(path, frame([], KNOWLEDGE_EXAMPLE_COLUMNS)), EXAMPLE_MERGE)
    link_parts(store, asset, keys, "dropped.parquet", folder / "dropped.parquet",
               lambda path: write_typed(path, frame([], DROPPED_COLUMNS)), EXAMPLE_MERGE)



def chunk_trace_verdicts(store, model: str, chunks: Path, documents: Path, chunk_tokens: int):
    """The passages check (every chunk is exactly its document's text at its span and within the token bound; every
    document gave a chunk) one corpus segment at a time: part i of the chunks table against part i of the corpus's
    documents (both folders of parts; otherwise the two whole tables), each pair checked once per content
    (`resources.segments.part_verdicts`). Verdicts: chunks and problems (ids and spans, no text) per pair."""
    from resources.segments import part_verdicts, table_parts

    if chunks.is_dir() and documents.is_dir():
        docs = {p.name: p for p in table_parts(documents)}
        groups = [(c, docs[c.name]) if c.name in docs else (c,) for c in table_parts(chunks)]
        groups += [(d,) for name, d in docs.items() if not (chunks / name).exists()]  # documents with no passage
    else:
        groups = [(chunks, documents)]

    def verify(group):
        chunk_part = next((p for p in group if chunks in (p, p.parent)), None)
        doc_part = next((p for p in group if documents in (p, p.parent)), None)
        found = pd.read_parquet(chunk_part) if chunk_part else pd.DataFrame(columns=["chunk_id", "doc_id", "tokens"])
        docs = pd.read_parquet(doc_part, columns=["doc_id", "text"]) if doc_part else pd.DataFrame(columns=["doc_id", "text"])
        text_of = dict(zip(docs["doc_id"], docs["text"]))
        problems = [f"{row['chunk_id']}: text differs from the document's span {row['start']}:{row['end']}"
                    for row in rows(found) if text_of.get(row["doc_id"], "")[row["start"]:row["end"]] != row["text"]]
        problems += [f"{doc_id}: no chunk" for doc_id in sorted(set(text_of) - set(found["doc_id"]))[:20]]
        over = found[found["tokens"] > chunk_tokens]
        problems += [f"{c}: {t} tokens > chunk_tokens={chunk_tokens}" for c, t in zip(over["chunk_id"], over["tokens"])]
        return {"chunks": len(found), "problems": problems[:50]}

    return part_verdicts(store, model, "chunks_trace_to_their_text", groups, [chunk_tokens, "1"], verify)
