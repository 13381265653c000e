"""The document-to-training-data engine's offline strategies: examples from the sections of documents.

`qa` (with a teacher model) asks the teacher for question/answer pairs answerable from each passage alone,
then asks it, as judge, whether each answer is supported by the passage and each question standalone; every
candidate is counted — generated, kept, dropped by reason. `headings` asks, for each section, a question made from the document's title and the section's heading,
answered by the section's first chunk. It needs no model and runs anywhere; it teaches the model where
things are said and to answer in the documents' words, not to reason over them. `raft` wraps the same
question in the grounded prompt (`resources.knowledge.prompt`): the section's chunk among distractors
retrieved from the model's knowledge index (hard negatives from other documents), the answer citing it;
in a configurable share the chunk is left out and the answer says the passages do not answer it. `cloze`
(no LLM either, `resources.knowledge.cloze`) asks for each value a sentence states and answers with the
sentence, in the same grounded prompt: it teaches a model to find, state and cite the one sentence that
answers. `continued_pretraining` trains on the passages' own text, every token of it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from resources.dedup import DedupRules, Deduplicator, normalised_key
from resources.knowledge.policy import KnowledgePolicy
from resources.knowledge.prompt import cited, grounded_messages, passage_heading
from resources.records import sha256_hex

Retrieve = Callable[[list[str], int], list[list[dict[str, Any]]]]  # questions, k -> passages per question

KNOWLEDGE_EXAMPLE_COLUMNS = ["doc_id", "source_doc_id", "split_key", "external_id", "source_path", "kind", "title", "batch",
                             "chunk_id", "messages"]
# strategies that make a document's examples from that document alone (no retrieval over the corpus, no share of
# the corpus's examples): their examples can be made one corpus segment at a time
DOCUMENT_LOCAL_STRATEGIES = frozenset({"headings"})
# made one chunk segment at a time (`resources.knowledge.segments.example_segments`): the document-local ones, the
# grounded ones (their distractors retrieved from the passages of that segment and the ones before it), continued
# pre-training (its ratio taken per segment) and qa (its questions de-duplicated against earlier segments' kept ones)
SEGMENTED_STRATEGIES = DOCUMENT_LOCAL_STRATEGIES | {"raft", "cloze", "raft_pairs", "continued_pretraining", "qa"}
GROUNDED_STRATEGIES = frozenset({"raft", "cloze", "raft_pairs"})


class HeldOut:
    """The documents hashed into the golden hold-out or out of the index, as a set that answers `in` from the split
    rules: a segment knows whether a passage retrieved from another segment is held out without the whole corpus."""

    def __init__(self, split_rules):
        self.split_rules = split_rules

    def __contains__(self, doc_id: object) -> bool:
        return self.split_rules.held_out(str(doc_id))


@dataclass
class KnowledgeBuild:
    examples: list[dict[str, Any]] = field(default_factory=list)  # document-shaped: build_examples' input
    dropped: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # per strategy: generated, kept
    signatures: Any = None  # qa: (signature table, MinHash values) of the kept questions' keys, in order
    unfinished: int = 0  # qa: passages or pairs left without a reply for a reason a later run may not have

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
        "source_path": chunk.get("source_path"),  # a golden question may name the file as its source
        "kind": f"knowledge:{strategy}",
        "title": chunk["title"],
        "batch": chunk.get("batch"),
        "chunk_id": chunk["chunk_id"],
        "messages": json.dumps(messages, ensure_ascii=False),
    }


def build_knowledge_examples(chunks: Iterable[dict[str, Any]], policy: KnowledgePolicy, title_template: str,
                             retrieve: Retrieve | None = None, held_out_docs: set[str] = frozenset(),
                             records: Iterable[dict[str, Any]] = ()) -> KnowledgeBuild:
    """Examples of every configured strategy from the sections of text documents (the first chunk of each;
    every passage for cloze), and — `raft_pairs` — from the question/answer records (`records`: the corpus
    documents with messages)."""
    chunks = list(chunks)
    out = KnowledgeBuild()
    if "raft_pairs" in policy.strategies:
        _raft_pairs(out, list(records), policy, retrieve, held_out_docs)
    firsts: dict[tuple[str, str, int], dict[str, Any]] = {}
    rank = lambda c: (len(_body(c)) < policy.min_answer_chars, c["start"])  # noqa: E731 (says something, then first)
    for chunk in chunks:  # each section's first passage that says something (not its heading line alone)
        if chunk.get("kind") != "text":
            continue
        where = (chunk["doc_id"], chunk["section"], chunk["level"])
        if where not in firsts or rank(chunk) < rank(firsts[where]):
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
        items = [(chunk, question, lead(body)) for chunk, question, body in heads]
        items += _untitled_items(chunks, {c["chunk_id"] for c, _, _ in heads}, policy, out)
        _grounded(out, "raft", items, policy, retrieve, held_out_docs)
    if "cloze" in policy.strategies:
        _grounded(out, "cloze", _cloze_items(chunks, policy, held_out_docs), policy, retrieve, held_out_docs)
    if "continued_pretraining" in policy.strategies:
        _continued_pretraining(out, chunks, policy, held_out_docs)
    return out


def _continued_pretraining(out: KnowledgeBuild, chunks: list[dict[str, Any]], policy: KnowledgePolicy, held_out_docs) -> None:
    """Passages as text to learn, every token of them trained on: each passage is the completion of its heading
    path (the chat template's few tokens around it are the prompt). `continued_pretraining_ratio` passages per
    example of the other strategies (every passage when there is none), chosen by hash so a re-run picks the same;
    a held-out document's passages are never used."""
    passages = [c for c in chunks if c.get("kind") == "text" and c["doc_id"] not in held_out_docs]
    others = len(out.examples)
    wanted = len(passages) if not others else min(len(passages), round(others * policy.continued_pretraining_ratio))
    out.counts["continued_pretraining_generated"] += len(passages)
    chosen = sorted(passages, key=lambda c: _bucket(f"cpt:{c['chunk_id']}"))[:wanted]
    for chunk in sorted(chosen, key=lambda c: (c["doc_id"], c["start"])):
        heading = passage_heading(chunk) or chunk["title"] or "Passage"
        out.examples.append(_example(chunk, "continued_pretraining", [{"role": "user", "content": heading},
                                                                      {"role": "assistant", "content": chunk["text"].strip()}]))
        out.counts["continued_pretraining_kept"] += 1
    if len(passages) > wanted:
        out.counts["continued_pretraining_dropped_over_ratio"] += len(passages) - wanted


def _cloze_items(chunks: list[dict[str, Any]], policy: KnowledgePolicy, held_out_docs, with_value: bool = False):
    """(passage, question, sentence) for the values stated in the passages of plain-text documents — with
    `with_value`, (passage, question, sentence, value) — a sentence in two overlapping passages is asked once, from
    the first."""
    from resources.knowledge.cloze import cloze_questions

    passages = sorted((c for c in chunks if c.get("kind") == "text" and c["doc_id"] not in held_out_docs),
                      key=lambda c: (c["doc_id"], c["start"]))
    items, seen = [], set()
    for chunk, found in zip(passages, cloze_questions([_body(c) for c in passages], policy.cloze_spacy_model,
                                                      policy.cloze_per_chunk)):
        for cloze in found:
            if (chunk["doc_id"], cloze.question) not in seen:
                seen.add((chunk["doc_id"], cloze.question))
                items.append((chunk, cloze.question, cloze.answer, cloze.value) if with_value
                             else (chunk, cloze.question, cloze.answer))
    return items


LEAD_CHARS = 240  # a raft answer: the section's opening sentences up to about this many characters


def _untitled_items(chunks: list[dict[str, Any]], asked: set[str], policy: KnowledgePolicy, out: KnowledgeBuild):
    """(chunk, question, answer) for the passages of text before any heading — a document without headings is one
    such section, whose first passage alone the section questions ask about — beyond the one already asked: "What
    does <title> say about <topic>?", the topic the passage's most salient noun phrase (`topics`), answered by the
    sentence that names it."""
    from resources.knowledge.topics import topics

    rest = [c for c in chunks if c.get("kind") == "text" and not c["section"] and c["chunk_id"] not in asked
            and len(_body(c)) >= policy.min_answer_chars]
    items, seen = [], set()
    for chunk, found in zip(rest, topics([_body(c) for c in rest])):
        out.counts["topics_generated"] += 1
        if found is None:
            out.drop(chunk["chunk_id"], "topics", "no_topic", f"{chunk['title']!r}: no noun phrase to ask about")
            continue
        topic, sentence = found
        body, sentence = _unwrapped(_body(chunk)), _unwrapped(sentence)
        answer = lead(body[body.find(sentence):] if sentence in body else body)
        question = policy.question_template.format(title=chunk["title"] or "this document", heading=topic)
        if (chunk["doc_id"], question.casefold()) in seen:  # one answer per question of a document
            out.drop(chunk["chunk_id"], "topics", "topic_asked", f"{chunk['title']!r}: {topic!r} already asked")
            continue
        seen.add((chunk["doc_id"], question.casefold()))
        items.append((chunk, question, answer))
    return items


def _unwrapped(text: str) -> str:
    """Plain text hard-wrapped at a fixed width ("... are under common\ncontrol with that entity") with the line
    breaks inside its sentences made spaces, so a sentence is read whole; paragraphs, lists and headings stay."""
    return re.sub(r"(?<=[^\s.!?:;])[ \t]*\n[ \t]*(?=[a-z(\"'])", " ", text)


def lead(body: str) -> str:
    """What a raft example answers with: the section's first sentence, and the second while the answer is still
    short — a cited summary in the documents' words, not the whole passage copied (which taught models to run
    on to the token limit)."""
    from resources.knowledge.claims import sentences

    parts = sentences(body)
    if not parts:
        return body.strip()
    answer = parts[0]
    if len(answer) < LEAD_CHARS // 3 and len(parts) > 1 and len(answer) + len(parts[1]) < LEAD_CHARS:
        answer = f"{answer} {parts[1]}"
    return answer if len(answer) <= 2 * LEAD_CHARS else answer[:2 * LEAD_CHARS].rsplit(" ", 1)[0] + " …"


def _grounded(out: KnowledgeBuild, strategy: str, items, policy: KnowledgePolicy, retrieve: Retrieve | None,
              held_out_docs) -> None:
    """Each (passage, question, answer) in the grounded prompt the gateway builds: the passage among
    `raft_distractors` of the passages retrieved for the question that do not hold the answer (hard negatives,
    other sections of the same document among them, as the gateway retrieves; never a held-out document's), the
    answer citing it. Beside it, for a share of the questions, the same question among as many
    distractors only, the answer an abstention — so that `raft_oracle_fraction` of the examples hold their passage.
    Every question is also seen with its passage: a question seen only without it would teach the model that
    this question has no answer, not to read the passages."""
    if not items:
        return
    if retrieve is None:
        raise ValueError(f"the {strategy} strategy needs the knowledge index to retrieve distractors from")
    k, f = policy.raft_distractors, policy.raft_oracle_fraction
    # abstentions per question (at most one), so that f of all examples hold their passage
    abstain_share = 1.0 if f == 0 else min(1.0, policy.grounded_variants * (1 - f) / f)
    found = retrieve([q for _, q, _ in items], 4 * (k + 1) + 16)  # one long document may fill the nearest ones
    accepted = []
    for (chunk, question, answer), passages in zip(items, found):
        out.counts[f"{strategy}_generated"] += 1
        # distractors: the passages nearest the question that do not hold its answer — another section of the
        # same document included, as retrieval serves them — never a held-out document's
        body = answer.strip()
        others = [p for p in passages if p.get("chunk_id") != chunk["chunk_id"] and p["doc_id"] not in held_out_docs
                  and body not in p["text"] and (p["doc_id"] != chunk["doc_id"] or strategy != "raft"
                                                   or p.get("section") != chunk["section"])]
        if len(others) < k + (abstain_share > 0):
            out.drop(chunk["chunk_id"], strategy, "too_few_distractors",
                     f"{len(others)} passages without the answer found, raft_distractors={k}")
            continue
        key = f"{chunk['chunk_id']}" if strategy == "raft" else f"{chunk['chunk_id']}:{question}"
        made = []
        for variant in range(policy.grounded_variants if f > 0 else 0):
            # each variant: the next distractors along the ranking, the passage at another position
            context = [others[(variant * k + j) % len(others)] for j in range(k)]
            tag = key if variant == 0 else f"{key}:{variant}"
            position = int(_bucket(f"raft-position:{tag}") * (k + 1))
            context.insert(position, chunk)
            made.append(("with_oracle", context, cited(answer, position + 1), f"{strategy}:{tag}"))
        if _bucket(f"raft-oracle:{key}") < abstain_share:
            made.append(("abstain", others[:k + 1], policy.abstention, f"{strategy}:abstain:{key}"))
        if f > 0:
            accepted.append((chunk, question, answer, others, key))
        for kind, context, reply, identity in made:
            messages = grounded_messages([{"role": "user", "content": question}], context, policy.abstention)
            example = _example(chunk, strategy, messages + [{"role": "assistant", "content": reply}])
            example["doc_id"] = sha256_hex(identity)[:20]
            out.examples.append(example)
            out.counts[f"{strategy}_{kind}"] += 1
        out.counts[f"{strategy}_kept"] += 1
    _two_passages(out, strategy, accepted, policy)


def _first_exchange(record: dict[str, Any]) -> tuple[str, str] | None:
    """A record's first user question and the assistant answer that follows it."""
    messages = record.get("messages")
    if not messages:
        return None
    messages = json.loads(messages) if isinstance(messages, str) else list(messages)
    for i, m in enumerate(messages):
        if m["role"] == "user":
            answer = next((n["content"] for n in messages[i + 1:] if n["role"] == "assistant"), None)
            return (m["content"], answer) if answer else None
    return None


PAIR_OVERLAP = 0.6  # share of an answer sentence's content words a passage must hold to be the one it answers from


def _supporting(answer: str, passage: dict[str, Any]) -> tuple[float, str] | None:
    """(share, sentence): the sentence of `answer` that `passage` states (the share of its content words the passage
    holds, at least PAIR_OVERLAP; and every number, date and quantity of the whole answer), or None."""
    from resources.knowledge.claims import normal_words, read, sentences, supported
    from resources.knowledge.prompt import passage_text

    text = passage_text(passage)
    if not all(supported(c, text) for c in read(answer) if c.kind != "term"):
        return None
    held = set(normal_words(text).split())
    best, share = None, 0.0
    for sentence in sentences(answer):
        words = {w for w in normal_words(sentence).split() if len(w) > 3}
        if words and len(words & held) / len(words) > share:
            best, share = sentence, len(words & held) / len(words)
    return (share, best) if share >= PAIR_OVERLAP else None


def _raft_pairs(out: KnowledgeBuild, records: list[dict[str, Any]], policy: KnowledgePolicy, retrieve: Retrieve | None,
                held_out_docs) -> None:
    """The company's own question/answer records (instructions, the first exchange of a chat) asked in the grounded
    prompt the gateway builds: the passages retrieved for the record's question (never the record itself, never a
    held-out document's); the answer's sentence that a retrieved passage states, citing it (the record's greetings
    and sign-offs left out: they taught models to open with one and cite nothing). When no retrieved passage states
    the answer, the example teaches the abstention instead — a real question the passages do not answer — at most
    (1 - raft_oracle_fraction) of the examples."""
    items = [(r, *pair) for r in records if r.get("kind") in ("instruction", "chat") and r["doc_id"] not in held_out_docs
             for pair in [_first_exchange(r)] if pair]
    if not items:
        return
    if retrieve is None:
        raise ValueError("the raft_pairs strategy needs the knowledge index to retrieve passages from")
    from resources.knowledge.grounding import retrieval_query

    k = policy.raft_distractors + 1
    found = retrieve([retrieval_query(q) for _, q, _ in items], 4 * k + 16)  # as the gateway searches
    answered, declined = [], []
    for (record, question, answer), passages in zip(items, found):
        out.counts["raft_pairs_generated"] += 1
        usable = [p for p in passages if p["doc_id"] != record["doc_id"] and p["doc_id"] not in held_out_docs]
        context = usable[:k]
        if len(context) < k:
            out.drop(record["doc_id"], "raft_pairs", "too_few_distractors", f"{len(usable)} passages found, {k} needed")
            continue
        found = [(s, n) for n, p in enumerate(context, start=1) if (s := _supporting(answer, p))]
        best = max(found, key=lambda f: (f[0][0], -f[1])) if found else None  # the passage that says most of it
        support = (best[1], best[0][1]) if best else None
        (answered if support else declined).append((record, question, answer, context, support))
    f = policy.raft_oracle_fraction
    room = len(answered) if f == 0 else round(len(answered) * (1 - f) / f)
    declined.sort(key=lambda item: _bucket(f"pairs-abstain:{item[0]['doc_id']}"))
    for record, *_ in declined[room:]:
        out.drop(record["doc_id"], "raft_pairs", "no_supporting_passage", "no retrieved passage states its answer, and "
                 "the abstention share (1 - raft_oracle_fraction) is full")
    for record, question, answer, context, support in answered + declined[:room]:
        if support:  # the sentence the passage states, cited: greetings and sign-offs are not what was asked
            n, sentence = support
            reply, kind = cited(sentence, n), "with_oracle"
        else:
            reply, kind = policy.abstention, "abstain"
        pseudo = {"chunk_id": record["doc_id"], "doc_id": record["doc_id"], "external_id": record.get("external_id"),
                  "source_path": record.get("source_path"), "title": record.get("title"), "batch": record.get("batch")}
        example = _example(pseudo, "raft_pairs", grounded_messages([{"role": "user", "content": question}], context,
                                                                   policy.abstention)
                           + [{"role": "assistant", "content": reply}])
        out.examples.append(example)
        out.counts[f"raft_pairs_{kind}"] += 1
        out.counts["raft_pairs_kept"] += 1


def _two_passages(out: KnowledgeBuild, strategy: str, accepted: list, policy: KnowledgePolicy) -> None:
    """Questions that need two passages: a share (`multi_passage_fraction`) of the questions, each asked together with
    the next question (in hash order) about another passage, both passages among the distractors, the answer
    stating both and citing each."""
    wanted = round(len(accepted) * policy.multi_passage_fraction)
    ordered = sorted(accepted, key=lambda a: _bucket(f"multi:{a[4]}"))
    for (chunk, question, answer, others, key), (chunk2, question2, answer2, _, key2) in zip(ordered, ordered[1:]):
        if out.counts[f"{strategy}_two_passages"] >= wanted:
            break
        if chunk2["chunk_id"] == chunk["chunk_id"] or answer2.strip() in chunk["text"]:
            continue
        context = [p for p in others if p.get("chunk_id") != chunk2["chunk_id"] and answer2.strip() not in p["text"]]
        context = context[:max(0, policy.raft_distractors - 1)]
        first = int(_bucket(f"multi-position:{key}") * (len(context) + 1))
        context.insert(first, chunk)
        second = int(_bucket(f"multi-position:{key2}") * (len(context) + 1))
        context.insert(second, chunk2)
        n1, n2 = context.index(chunk) + 1, context.index(chunk2) + 1
        ask = f"{question.rstrip()} Also, {question2[0].lower()}{question2[1:]}"
        reply = f"{cited(answer, n1)} {cited(answer2, n2)}"
        example = _example(chunk, strategy, grounded_messages([{"role": "user", "content": ask}], context, policy.abstention)
                           + [{"role": "assistant", "content": reply}])
        example["doc_id"] = sha256_hex(f"{strategy}:two:{key}:{key2}")[:20]
        out.examples.append(example)
        out.counts[f"{strategy}_two_passages"] += 1


def held_out_sections(chunks: Iterable[dict[str, Any]], split_rules, policy: KnowledgePolicy, title_template: str):
    """Golden examples from the documents hashed into the golden hold-out (their sections never train:
    instruction_dataset gives each example its document's split). With `golden_from: cloze` (the default): a question
    for each value their sentences state, the value as the fact a right answer must include (unit-aware), the
    sentence as the reference — a document stating no value is asked about by its headings, without facts; with
    `golden_from: headings`: the headings questions."""
    held = [c for c in chunks if split_rules.split_of(c["doc_id"]) == "golden"]
    asked: set[str] = set()
    if policy.golden_from == "cloze":
        stated: set[tuple] = set()
        for chunk, question, answer, value in _cloze_items(held, policy, frozenset(), with_value=True):
            asked.add(chunk["doc_id"])
            if (chunk["doc_id"], answer, value) in stated:  # one question per value (not its clause's echo too)
                continue
            stated.add((chunk["doc_id"], answer, value))
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            identity = sha256_hex(f"golden-cloze:{chunk['chunk_id']}:{question}")[:20]
            yield {"id": f"holdout-{identity}", "prompt": question, "answer": answer, "messages": messages,
                   "split": "golden", "source_doc_id": chunk.get("external_id") or chunk["doc_id"],
                   "tags": ["holdout", "cloze"], "origin": "holdout:cloze", "must_include": [value],
                   "must_not_include": [], "eval_split": None, "doc_id": chunk["doc_id"]}
    rest = [c for c in held if c["doc_id"] not in asked]
    build = build_knowledge_examples(rest, policy.model_copy(update={"strategies": ["headings"]}), title_template)
    for example in build.examples:
        messages = json.loads(example["messages"])
        yield {"id": f"holdout-{example['doc_id']}", "prompt": messages[0]["content"], "answer": messages[-1]["content"],
               "messages": messages, "split": "golden", "source_doc_id": example["external_id"] or example["source_doc_id"],
               "tags": ["holdout", "section"], "origin": "holdout:headings", "must_include": [],
               "must_not_include": [], "eval_split": None,
               "doc_id": example["source_doc_id"]}  # what forget follows in the golden segments


UNINDEXED_QUESTIONS = 2  # unanswerable questions asked about each document kept out of the index


def unindexed_questions(chunks: Iterable[dict[str, Any]], split_rules, policy: KnowledgePolicy):
    """Unanswerable golden questions: up to UNINDEXED_QUESTIONS cloze questions about each document hashed out of
    training and out of the knowledge index (dataset.unanswerable_holdout_fraction). The served model cannot see
    those documents, so a right answer declines (`knowledge.abstention`); one that states a value invents it."""
    kept = [c for c in chunks if split_rules.split_of(c["doc_id"]) == "unindexed"]
    per_document: Counter = Counter()
    for chunk, question, _, _ in _cloze_items(kept, policy, frozenset(), with_value=True):
        if per_document[chunk["doc_id"]] >= UNINDEXED_QUESTIONS:
            continue
        per_document[chunk["doc_id"]] += 1
        identity = sha256_hex(f"golden-unindexed:{chunk['chunk_id']}:{question}")[:20]
        yield {"id": f"unindexed-{identity}", "prompt": question, "answer": policy.abstention,
               "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": policy.abstention}],
               "split": "golden", "source_doc_id": chunk.get("external_id") or chunk["doc_id"],
               "tags": ["holdout", "unanswerable", "unindexed"], "origin": "holdout:unindexed", "must_include": [],
               "must_not_include": [], "eval_split": None, "doc_id": chunk["doc_id"]}


def held_out_qa(chunks: Iterable[dict[str, Any]], split_rules, policy: KnowledgePolicy, session,
                earlier=None) -> tuple[list, KnowledgeBuild]:
    """Golden examples written by the teacher from the passages of documents hashed into the golden hold-out: the
    `qa` strategy's pairs, through the same judge and near-duplicate filter (`earlier`: the signatures of questions
    kept before, as `qa_examples`), each citing the document it came from (those documents never train). Returns
    (golden rows, the build with every candidate counted)."""
    held = [c for c in chunks if split_rules.split_of(c["doc_id"]) == "golden"]
    build = qa_examples(held, policy, session, earlier=earlier)
    golden = []
    for example in build.examples:
        messages = json.loads(example["messages"])
        golden.append({"id": f"holdout-qa-{example['doc_id']}", "prompt": messages[0]["content"],
                       "answer": messages[-1]["content"], "messages": messages, "split": "golden",
                       "source_doc_id": example["external_id"] or example["source_doc_id"],
                       "tags": ["holdout", "teacher"], "origin": "holdout:qa", "must_include": [],
                       "must_not_include": [], "eval_split": None,
                       "doc_id": example["source_doc_id"]})  # what forget follows in the golden segments
    return golden, build


QA_PROMPT = """You write training data from a company's documents.
Passage (from "{title}", section "{section}"):
---
{text}
---
Write {n} question and answer pairs that this passage alone answers. Each question must make sense on its own,
without the passage (name what it is about). Each answer states the facts from the passage in one or two sentences.
Reply with only a JSON list: [{{"question": "...", "answer": "..."}}]"""

JUDGE_PROMPT = """Passage:
---
{text}
---
Question: {question}
Answer: {answer}
Is every fact in the answer stated in the passage, and can the question be understood without the passage?
Reply with only JSON: {{"supported": true or false, "standalone": true or false}}"""

REFUSAL = re.compile(r"\b(i can(no|')t|i am unable|i'm unable|i won't|as an ai)\b", re.IGNORECASE)


def _json_payload(text: str, opener: str, closer: str):
    start, end = text.find(opener), text.rfind(closer)
    if start < 0 or end <= start:
        raise ValueError("no JSON")
    return json.loads(text[start:end + 1])


def parse_pairs(text: str) -> tuple[list[tuple[str, str]], str | None]:
    """The teacher's pairs, or ([], reason): refused | malformed_json | empty_list."""
    try:
        payload = _json_payload(text, "[", "]")
    except ValueError:
        return [], "refused" if REFUSAL.search(text) else "malformed_json"
    if not isinstance(payload, list):
        return [], "malformed_json"
    pairs = [(str(p["question"]).strip(), str(p["answer"]).strip()) for p in payload
             if isinstance(p, dict) and isinstance(p.get("question"), str) and isinstance(p.get("answer"), str)
             and p["question"].strip() and p["answer"].strip()]
    if not payload:
        return [], "empty_list"
    return pairs, None if pairs else "malformed_json"


def parse_verdict(text: str) -> dict[str, bool] | None:
    try:
        payload = _json_payload(text, "{", "}")
    except ValueError:
        return None
    if not isinstance(payload, dict) or not all(isinstance(payload.get(k), bool) for k in ("supported", "standalone")):
        return None
    return {"supported": payload["supported"], "standalone": payload["standalone"]}


TRANSIENT = re.compile(r"\A(budget_exhausted|timeout|connection|http_(429|5\d\d))\Z")  # a later run may get a reply


def qa_examples(chunks: Iterable[dict[str, Any]], policy: KnowledgePolicy, session, held_out_docs: set[str] = frozenset(),
                out: KnowledgeBuild | None = None, earlier=None) -> KnowledgeBuild:
    """The `qa` strategy over every passage of a plain-text document (held-out documents' passages are not sent).
    `earlier`: (signature table, MinHash values) of the questions kept before these passages (`resources.dedup.
    signature_table` of their keys): a question that duplicates one of them is dropped, as if they were asked here
    first — before the judge is asked about it (the same examples; the call saved, the drop counted as a
    duplicate). `out.unfinished` counts the replies missing for a reason a later run may not have (a cap, a
    timeout)."""
    from resources.dedup import near_pairs, signature_table

    out = out or KnowledgeBuild()
    passages = [c for c in chunks if c.get("kind") == "text" and c["doc_id"] not in held_out_docs]
    asks = [[{"role": "user", "content": QA_PROMPT.format(title=c["title"], section=c["section"] or c["title"],
                                                          text=_body(c), n=policy.qa_pairs_per_chunk)}] for c in passages]
    candidates = []
    for chunk, reply in zip(passages, session.ask_many(asks, [(c["doc_id"],) for c in passages])):
        if reply.text is None:
            out.drop(chunk["chunk_id"], "qa", reply.error or "no_reply", f"the teacher gave no answer ({reply.error})")
            out.unfinished += bool(TRANSIENT.match(reply.error or ""))
            continue
        pairs, problem = parse_pairs(reply.text)
        if problem:
            out.drop(chunk["chunk_id"], "qa", problem, f"the teacher's reply for {chunk['chunk_id']} is {problem}")
            continue
        out.counts["qa_generated"] += len(pairs)
        candidates += [(chunk, q, a) for q, a in pairs]
    # near-duplicate questions (MinHash over character shingles, as the corpus is de-duplicated): "How long is the
    # trial?" and "How long does the trial last?" teach one thing twice. A question that repeats one kept before
    # these passages (`earlier`, one table join) is dropped before the judge is asked about it: it would be dropped
    # whatever the verdict, and the call is saved; the others are judged, then compared one by one with the ones kept here
    rules = DedupRules(threshold=policy.qa_near_duplicate_threshold)
    keys = [re.sub(r"\W+", " ", question.casefold()).strip() for _, question, _ in candidates]
    table, values = signature_table(keys, rules)
    before = dict(near_pairs(table, values, earlier[0], earlier[1], rules.threshold)) if earlier is not None else {}
    for i, (chunk, question, _) in enumerate(candidates):
        if i in before:
            out.drop(chunk["chunk_id"], "qa", "duplicate_question", f"{question!r}: duplicates a question kept before")
    asked = [i for i in range(len(candidates)) if i not in before]
    if policy.qa_judge and asked:
        verdicts = dict(zip(asked, session.ask_many(
            [[{"role": "user", "content": JUDGE_PROMPT.format(text=_body(c), question=q, answer=a)}]
             for c, q, a in (candidates[i] for i in asked)], [(candidates[i][0]["doc_id"],) for i in asked])))
    else:
        verdicts = {}
    dedup, kept = Deduplicator(rules), []
    for i in asked:
        (chunk, question, answer), key, verdict = candidates[i], keys[i], verdicts.get(i)
        if policy.qa_judge:
            judged = parse_verdict(verdict.text) if verdict is not None and verdict.text else None
            if judged is None:
                out.drop(chunk["chunk_id"], "qa", "judge_failed",
                         f"no verdict on {question!r} ({verdict.error if verdict is not None and verdict.error else 'malformed'})")
                out.unfinished += bool(verdict is not None and TRANSIENT.match(verdict.error or ""))
                continue
            if not judged["supported"]:
                out.drop(chunk["chunk_id"], "qa", "unsupported", f"the answer to {question!r} is not in the passage")
                continue
            if not judged["standalone"]:
                out.drop(chunk["chunk_id"], "qa", "not_standalone", f"{question!r} needs the passage to be understood")
                continue
        signature = dedup.stored(values[i])
        duplicate = dedup.check(normalised_key(key), signature)
        if duplicate:
            out.drop(chunk["chunk_id"], "qa", "duplicate_question", f"{question!r}: {duplicate[1]}")
            continue
        dedup.add(f"{chunk['chunk_id']}:{len(dedup.signatures)}", normalised_key(key), signature)
        example = _example(chunk, "qa", [{"role": "user", "content": question}, {"role": "assistant", "content": answer}])
        example["doc_id"] = sha256_hex(f"qa:{chunk['chunk_id']}:{key}")[:20]
        out.examples.append(example)
        kept.append(i)
        out.counts["qa_kept"] += 1
    out.signatures = (table.iloc[kept].reset_index(drop=True), values[kept])  # what the next batch is compared with
    return out
