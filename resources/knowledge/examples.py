"""The document-to-training-data engine's offline strategies: examples from the sections of documents.

`headings` asks, for each section, a question made from the document's title and the section's heading,
answered by the section's first chunk. It needs no model and runs anywhere; it teaches the model where
things are said and to answer in the documents' words, not to reason over them. `raft` wraps the same
question in the grounded prompt (`resources.knowledge.prompt`): the section's chunk among distractors
retrieved from the model's knowledge index (hard negatives from other documents), the answer citing it;
in a configurable share the chunk is left out and the answer says the passages do not answer it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from resources.knowledge.policy import KnowledgePolicy
from resources.knowledge.prompt import ABSTAIN, cited, grounded_messages
from resources.records import sha256_hex

Retrieve = Callable[[list[str], int], list[list[dict[str, Any]]]]  # questions, k -> passages per question


@dataclass
class KnowledgeBuild:
    examples: list[dict[str, Any]] = field(default_factory=list)  # document-shaped: build_examples' input
    dropped: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # per strategy: generated, kept

    def drop(self, chunk_id: str, strategy: str, reason: str, detail: str) -> None:
        self.dropped.append({"doc_id": chunk_id, "reason": reason, "detail": f"{strategy}: {detail}"})
        self.counts[f"{strategy}_dropped_{reason}"] += 1


def _bucket(key: str) -> float:
    return int(sha256_hex(key)[:8], 16) / 0x1_0000_0000


def _body(chunk: dict[str, Any]) -> str:
    """The chunk's text without its heading line."""
    return re.sub(r"\A\s{0,3}#{1,6}[ \t][^\n]*\n?", "", chunk["text"]).strip()


def question_for(chunk: dict[str, Any], policy: KnowledgePolicy, title_template: str) -> str:
    title = chunk["title"] or "this document"
    heading = chunk["section"].split(" > ")[-1] if chunk["section"] else ""
    if not heading or heading == title:
        return title_template.format(title=title)
    return policy.question_template.format(title=title, heading=heading)


def _example(chunk: dict[str, Any], strategy: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "doc_id": sha256_hex(f"{strategy}:{chunk['chunk_id']}")[:20],
        "source_doc_id": chunk["doc_id"],  # what forget and lineage follow
        "split_key": chunk["doc_id"],  # the example takes its document's split: a held-out document never trains
        "external_id": chunk.get("external_id"),
        "kind": f"knowledge:{strategy}",
        "title": chunk["title"],
        "batch": chunk.get("batch"),
        "chunk_id": chunk["chunk_id"],
        "messages": json.dumps(messages, ensure_ascii=False),
    }


def build_knowledge_examples(chunks: Iterable[dict[str, Any]], policy: KnowledgePolicy, title_template: str,
                             retrieve: Retrieve | None = None, held_out_docs: set[str] = frozenset()) -> KnowledgeBuild:
    """Examples of every configured strategy from the sections of text documents (the first chunk of each)."""
    out = KnowledgeBuild()
    firsts: dict[tuple[str, str, int], dict[str, Any]] = {}
    for chunk in chunks:
        if chunk.get("kind") != "text":
            continue
        where = (chunk["doc_id"], chunk["section"], chunk["level"])
        if where not in firsts or chunk["start"] < firsts[where]["start"]:
            firsts[where] = chunk
    heads = []
    for chunk in sorted(firsts.values(), key=lambda c: (c["doc_id"], c["start"])):
        out.counts["headings_generated"] += 1
        body = _body(chunk)
        if len(body) < policy.min_answer_chars:
            out.drop(chunk["chunk_id"], "headings", "section_too_short",
                     f"{chunk['title']!r} > {chunk['section']!r}: {len(body)} characters < min_answer_chars={policy.min_answer_chars}")
            continue
        question = question_for(chunk, policy, title_template)
        heads.append((chunk, question, body))
        if "headings" in policy.strategies:
            out.examples.append(_example(chunk, "headings", [{"role": "user", "content": question},
                                                              {"role": "assistant", "content": body}]))
            out.counts["headings_kept"] += 1
    if "raft" in policy.strategies and heads:
        if retrieve is None:
            raise ValueError("the raft strategy needs the knowledge index to retrieve distractors from")
        k = policy.raft_distractors
        found = retrieve([q for _, q, _ in heads], k + 8)
        for (chunk, question, body), passages in zip(heads, found):
            out.counts["raft_generated"] += 1
            distractors = [p for p in passages if p["doc_id"] != chunk["doc_id"] and p["doc_id"] not in held_out_docs][:k]
            if len(distractors) < k:
                out.drop(chunk["chunk_id"], "raft", "too_few_distractors",
                         f"{len(distractors)} passages of other documents found, raft_distractors={k}")
                continue
            with_oracle = _bucket(f"raft-oracle:{chunk['chunk_id']}") < policy.raft_oracle_fraction
            context = list(distractors)
            if with_oracle:
                position = int(_bucket(f"raft-position:{chunk['chunk_id']}") * (k + 1))
                context.insert(position, chunk)
                answer = cited(body, position + 1)
            else:
                answer = ABSTAIN
            messages = grounded_messages([{"role": "user", "content": question}], context)
            out.examples.append(_example(chunk, "raft", messages + [{"role": "assistant", "content": answer}]))
            out.counts["raft_kept"] += 1
            out.counts["raft_with_oracle" if with_oracle else "raft_abstain"] += 1
    return out


def held_out_sections(chunks: Iterable[dict[str, Any]], split_rules, policy: KnowledgePolicy, title_template: str):
    """Golden examples from the sections of documents hashed into the golden hold-out (the headings questions;
    their documents' sections never train: instruction_dataset gives each example its document's split)."""
    held = [c for c in chunks if split_rules.split_of(c["doc_id"]) == "golden"]
    build = build_knowledge_examples(held, policy.model_copy(update={"strategies": ["headings"]}), title_template)
    for example in build.examples:
        messages = json.loads(example["messages"])
        yield {"id": f"holdout-{example['doc_id']}", "prompt": messages[0]["content"], "answer": messages[-1]["content"],
               "messages": messages, "split": "golden", "source_doc_id": example["external_id"] or example["source_doc_id"],
               "tags": ["holdout", "section"], "origin": "holdout:headings"}
