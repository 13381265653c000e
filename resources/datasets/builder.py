"""From redacted documents to chat-format training examples and a trusted golden set.

Splits are decided by a hash of the example id, so adding data never moves an existing example
between train, validation and the golden hold-out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from resources.dedup import DedupRules, Deduplicator, normalised_key
from resources.ingestion.readers import RecordError, jsonl_records
from resources.records import Ledger, sha256_hex

TextStrategy = Literal["sections", "title_to_instruction", "exclude"]

EXAMPLE_COLUMNS = ["id", "prompt", "answer", "messages", "split", "source_doc_id", "external_id", "batch", "origin"]
GOLDEN_COLUMNS = ["id", "prompt", "answer", "messages", "split", "source_doc_id", "tags", "origin", "must_include",
                  "must_not_include", "eval_split"]
EVAL_SPLITS = ("dev", "test")


HELD_OUT = frozenset({"golden", "unindexed"})  # splits that never train (nor give a distractor)


@dataclass(frozen=True)
class SplitRules:
    validation_fraction: float = 0.1
    golden_holdout_fraction: float = 0.0
    unindexed_fraction: float = 0.0

    def split_of(self, example_id: str) -> str:
        """golden | unindexed | validation | train, from the example id alone (deterministic, stable). `unindexed`:
        a document kept out of training and out of the knowledge index, whose questions the golden set asks as
        unanswerable."""
        bucket = int(sha256_hex(f"split:{example_id}")[:8], 16) / 0x1_0000_0000
        if bucket < self.golden_holdout_fraction:
            return "golden"
        if bucket < self.golden_holdout_fraction + self.unindexed_fraction:
            return "unindexed"
        if bucket < self.golden_holdout_fraction + self.unindexed_fraction + self.validation_fraction:
            return "validation"
        return "train"

    def held_out(self, doc_id: str) -> bool:
        """Never trained on, never a distractor: in the golden hold-out or kept out of the index."""
        return self.split_of(doc_id) in HELD_OUT


@dataclass
class ExampleBuild:
    examples: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    ledger: Ledger = field(default_factory=lambda: Ledger(stage="instruction_dataset"))


def document_to_messages(
    doc: dict[str, Any], strategy: TextStrategy, title_template: str
) -> tuple[list[dict[str, str]] | None, str]:
    """Chat messages for a document, or (None, reason) when the strategy does not use it."""
    if doc.get("messages"):
        return json.loads(doc["messages"]), ""
    if strategy == "exclude":
        return None, "text_excluded"
    if strategy == "sections":
        return None, "used_as_sections"
    title = doc.get("title")
    if not title:
        return None, "untitled_text"
    body = doc["text"]
    lines = body.splitlines()
    if lines and lines[0].lstrip("#").strip() == title.strip():
        body = "\n".join(lines[1:]).strip()
    if not body:
        return None, "untitled_text"
    return [{"role": "user", "content": title_template.format(title=title)}, {"role": "assistant", "content": body}], ""


def first(messages: list[dict[str, str]], role: str) -> str:
    """The content of the first message with `role` ("" if none)."""
    return next((m["content"] for m in messages if m["role"] == role), "")


def last(messages: list[dict[str, str]], role: str) -> str:
    """The content of the last message with `role` ("" if none)."""
    return first(list(reversed(messages)), role)


def build_examples(
    documents: Iterable[dict[str, Any]],
    rules: SplitRules,
    strategy: TextStrategy,
    title_template: str,
    golden_prompts: Iterable[str] = (),
    dedup_rules: DedupRules = DedupRules(),
    golden_probes: Iterable = (),
    golden_sources: Iterable[str] = (),
    superseded: Iterable[str] = (),
) -> ExampleBuild:
    """Training/validation examples; documents hashed into the golden hold-out are left out, and so is every
    document a golden question names as its source (`golden_sources`: the golden set holds out whole documents) —
    and the contamination guard drops any example whose prompt matches a golden prompt (exactly or near) or whose
    answer holds a golden answer's sentence (`golden_probes`, `resources.contamination`)."""
    from resources.contamination import ProbeIndex

    guard = golden_guard(golden_prompts, dedup_rules)
    answers = ProbeIndex(list(golden_probes))
    sources = {str(s) for s in golden_sources if s}
    stale = set(superseded)
    out = ExampleBuild()

    def drop(doc_id: str, reason: str, detail: str) -> None:
        out.dropped.append({"doc_id": doc_id, "reason": reason, "detail": detail})
        out.ledger.dropped[reason] += 1

    for doc in documents:
        out.ledger.records_in += 1
        messages, reason = document_to_messages(doc, strategy, title_template)
        if messages is None:
            detail = ("its sections are examples of knowledge_examples" if reason == "used_as_sections"
                      else f"text document not used by strategy {strategy!r}")
            drop(doc["doc_id"], reason, detail)
            continue
        if stale and (doc["doc_id"] in stale or doc.get("source_doc_id") in stale):
            drop(doc["doc_id"], "superseded", "a later batch brought a new version of its document")
            continue
        split = rules.split_of(doc.get("split_key") or doc["doc_id"])
        if split == "golden":
            drop(doc["doc_id"], "held_out_for_golden", "hashed into the golden hold-out")
            continue
        if split == "unindexed":
            drop(doc["doc_id"], "held_out_unindexed", "hashed out of training and the knowledge index: the golden set "
                 "asks about it as unanswerable")
            continue
        source = golden_source(doc, sources)
        if source:
            drop(doc["doc_id"], "golden_source_document", f"{source} is the source document of a golden question: held out whole")
            continue
        prompt = first(messages, "user")
        hit = contamination(guard, prompt)
        if hit:
            drop(doc["doc_id"], "golden_contamination", hit)
            continue
        overlap = next((o for m in messages if m["role"] == "assistant" for o in answers.overlaps(m["content"])), None)
        if overlap:
            probe = answers.probes[overlap[0]]
            drop(doc["doc_id"], "golden_answer_overlap", f"its answer holds {overlap[1]:.0%} of golden {probe.golden_id}'s "
                 f"sentence {probe.text[:80]!r}")
            continue
        out.examples.append(
            {
                "id": doc["doc_id"],
                "prompt": prompt,
                "answer": last(messages, "assistant"),
                "messages": messages,
                "split": split,
                "source_doc_id": doc.get("source_doc_id") or doc["doc_id"],
                "external_id": doc.get("external_id"),
                "batch": doc["batch"],
                "origin": doc["kind"],
            }
        )
    out.ledger.kept = len(out.examples)
    return out


def golden_source(doc: dict[str, Any], sources: set[str]) -> str | None:
    """The golden source id that names this document (its external id, its file's path or name), or None."""
    if not sources:
        return None
    path = str(doc.get("source_path") or "")
    for name in (doc.get("external_id"), path, path.rsplit("/", 1)[-1] if path else None):
        if name and str(name) in sources:
            return str(name)
    return None


def golden_guard(prompts: Iterable[str], rules: DedupRules = DedupRules()) -> Deduplicator:
    guard = Deduplicator(rules)
    for i, prompt in enumerate(prompts):
        guard.add(f"golden[{i}]", normalised_key(prompt), guard.signature(prompt))
    return guard


def contamination(guard: Deduplicator, prompt: str) -> str | None:
    """A description of the golden prompt `prompt` duplicates, or None."""
    hit = guard.check(normalised_key(prompt), guard.signature(prompt))
    return f"{hit[0]}: {hit[1]}" if hit else None


def held_out_golden(documents: Iterable[dict[str, Any]], rules: SplitRules, strategy: TextStrategy, title_template: str):
    """Golden examples hashed out of the corpus (only when golden_holdout_fraction > 0)."""
    for doc in documents:
        if rules.split_of(doc["doc_id"]) != "golden":
            continue
        messages, _ = document_to_messages(doc, strategy, title_template)
        if messages:
            yield {**golden_example(f"holdout-{doc['doc_id']}", first(messages, "user"), last(messages, "assistant"),
                                    doc.get("external_id") or doc["doc_id"], [], "holdout"),
                   "doc_id": doc["doc_id"]}  # what forget follows in the golden segments


def golden_example(example_id, question, answer, source_doc_id, tags, origin, must_include=(), must_not_include=(),
                   eval_split=None) -> dict[str, Any]:
    return {
        "must_include": [str(f) for f in must_include or []],
        "must_not_include": [str(f) for f in must_not_include or []],
        "eval_split": eval_split,
        "id": example_id,
        "prompt": question,
        "answer": answer,
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        "split": "golden",
        "source_doc_id": source_doc_id,
        "tags": list(tags or []),
        "origin": origin,
    }


def apply_corrections(examples: list[dict[str, Any]], corrections: dict[str, str]) -> int:
    """Reviewers' corrected answers replace golden reference answers (by example id); returns how many."""
    applied = 0
    for example in examples:
        if example["id"] in corrections:
            example["answer"] = corrections[example["id"]]
            example["origin"] = f"{example['origin']}+reviewed"
            applied += 1
    return applied


def with_messages(example: dict[str, Any]) -> dict[str, Any]:
    """The example's chat messages rebuilt from its (redacted) prompt and answer."""
    example["messages"] = [{"role": "user", "content": example["prompt"]}, {"role": "assistant", "content": example["answer"]}]
    return example


def eval_split_of(example: dict[str, Any], dev_fraction: float) -> str:
    """dev | test for a golden example: its own `eval_split` when given, else by a hash of its source document (its
    id when it names none), so the questions about one document land in the same split."""
    if example.get("eval_split") in EVAL_SPLITS:
        return example["eval_split"]
    anchor = example.get("source_doc_id") or example["id"]
    return "dev" if int(sha256_hex(f"eval-split:{anchor}")[:8], 16) / 0x1_0000_0000 < dev_fraction else "test"


def read_golden_file(path: Path, display: str, require_facts: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Curated golden records `{id, question, reference_answer, source_doc_id?, tags?, must_include?,
    must_not_include?, split?}` and the quarantine rows for lines that are not. Lines starting with `#` are comments
    (the template's example). With `require_facts`, an answerable record (not tagged `unanswerable`) without
    must_include facts is quarantined: nothing could say whether an answer to it is right."""
    examples, quarantine = [], []
    lines = path.read_bytes().split(b"\n")
    data = b"\n".join(b"" if line.lstrip().startswith(b"#") else line for line in lines)
    for line, payload in jsonl_records(data, display):
        try:
            if isinstance(payload, RecordError):
                raise payload
            if not isinstance(payload, dict):
                raise RecordError("unrecognised_schema", f"{display}:{line}: expected an object")
            missing = [k for k in ("id", "question", "reference_answer") if not str(payload.get(k) or "").strip()]
            if missing:
                raise RecordError("unrecognised_schema", f"{display}:{line}: golden records need {', '.join(missing)}")
            facts = payload.get("must_include", [])
            if not isinstance(facts, list) or not all(isinstance(f, str) and f.strip() for f in facts):
                raise RecordError("invalid_must_include", f"{display}:{line}: must_include must be a list of non-empty "
                                  "strings (the facts a right answer states)")
            stale = payload.get("must_not_include", [])
            if not isinstance(stale, list) or not all(isinstance(f, str) and f.strip() for f in stale):
                raise RecordError("invalid_must_not_include", f"{display}:{line}: must_not_include must be a list of "
                                  "non-empty strings (values a right answer must not state, e.g. a changed document's old ones)")
            tags = payload.get("tags") or []
            if not isinstance(tags, list):
                raise RecordError("unrecognised_schema", f"{display}:{line}: tags must be a list")
            if "unanswerable" in tags and facts:
                raise RecordError("invalid_must_include", f"{display}:{line}: a question tagged unanswerable lists "
                                  "must_include facts: a right answer to it declines, it states no facts")
            if require_facts and "unanswerable" not in tags and not facts:
                raise RecordError("no_facts", f"{display}:{line}: question {payload['id']!r} lists no must_include facts "
                                  "(the values or names a right answer states); add them, or tag it unanswerable")
            split = payload.get("split")
            if split is not None and split not in EVAL_SPLITS:
                raise RecordError("unrecognised_schema", f"{display}:{line}: split must be 'dev' or 'test', not {split!r}")
        except RecordError as err:
            quarantine.append({"source_path": display, "line": line, "reason": err.reason, "detail": err.detail})
            continue
        examples.append(
            golden_example(str(payload["id"]), payload["question"], payload["reference_answer"],
                           payload.get("source_doc_id"), payload.get("tags"), "curated", payload.get("must_include"),
                           payload.get("must_not_include"), payload.get("split"))
        )
    return examples, quarantine
