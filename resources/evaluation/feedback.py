"""Reviewer feedback: labels on model answers, and the rule that routes approved corrections.

A feedback record is `{example_id, verdict, reviewer, corrected_answer?, question?}` in CSV or JSONL,
`verdict` one of approve | reject | correct. The rule (applied on the next rebuild of the datasets):

- `correct` on a **golden** example (its id is a golden id): the corrected answer replaces the golden
  reference answer — reviewers are the authority the golden set is built on;
- `correct` on any **other** example (an evaluated or served answer) that carries its `question`: the
  question and corrected answer become a new training example (`origin: feedback`), subject to the
  same hashed split and golden-contamination guard as every other example;
- `approve` / `reject` change no data; they are counted (approval rate) for monitoring.
Feedback sent to the serving gateway (`/v1/feedback`: thumbs up/down -> approve/reject, a corrected answer
-> correct, with the logged redacted prompt as its question) joins the files with reviewer `endpoint:<client>`.
When several corrections name the same example, the last one read (files by name, then line) wins.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from resources.ingestion.readers import RecordError, file_records
from resources.records import document_id, join_segments, sha256_hex

VERDICTS = ("approve", "reject", "correct")
FEEDBACK_COLUMNS = ["feedback_id", "example_id", "verdict", "question", "corrected_answer", "reviewer", "source_path", "line"]
FEEDBACK_FORMATS = ("csv", "jsonl")


def read_feedback(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Valid feedback rows and quarantine rows (file, line, reason) for everything else."""
    rows, quarantine = [], []
    for path in sorted(p for p in folder.glob("*") if p.is_file() and not p.name.startswith(".")):
        rel, fmt = path.name, path.suffix.lower().lstrip(".")
        data = path.read_bytes()
        try:
            if fmt not in FEEDBACK_FORMATS:
                raise RecordError("unsupported_format", f"{rel}: feedback files are .csv or .jsonl")
            units = list(file_records(data, fmt, rel))
        except RecordError as err:
            quarantine.append({"source_path": rel, "line": None, "reason": err.reason, "detail": err.detail})
            continue
        for line, record in units:
            try:
                if isinstance(record, RecordError):
                    raise record
                rows.append({**_validate(record, f"{rel}:{line}"), "feedback_id": document_id(sha256_hex(data), line),
                             "source_path": rel, "line": line})
            except RecordError as err:
                quarantine.append({"source_path": rel, "line": line, "reason": err.reason, "detail": err.detail})
    return rows, quarantine


def _validate(record: Any, where: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise RecordError("unrecognised_schema", f"{where}: expected an object")

    def text(key: str) -> str:
        value = record.get(key)
        return value.strip() if isinstance(value, str) else ("" if value is None else str(value).strip())

    verdict = text("verdict").lower()
    if not text("example_id") or not text("reviewer"):
        raise RecordError("unrecognised_schema", f"{where}: feedback needs example_id and reviewer")
    if verdict not in VERDICTS:
        raise RecordError("invalid_verdict", f"{where}: verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
    if verdict == "correct" and not text("corrected_answer"):
        raise RecordError("empty_record", f"{where}: verdict 'correct' needs a corrected_answer")
    return {"example_id": text("example_id"), "verdict": verdict, "question": text("question") or None,
            "corrected_answer": text("corrected_answer") or None, "reviewer": text("reviewer")}


def latest_corrections(feedback: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """example_id -> the last `correct` record for it."""
    out: dict[str, dict[str, Any]] = {}
    for row in feedback:
        if row["verdict"] == "correct":
            out[row["example_id"]] = row
    return out


def golden_corrections(feedback: list[dict[str, Any]], golden_ids: set[str]) -> dict[str, str]:
    return {eid: row["corrected_answer"] for eid, row in latest_corrections(feedback).items() if eid in golden_ids}


def training_documents(feedback: list[dict[str, Any]], golden_ids: set[str]) -> list[dict[str, Any]]:
    """Corrections of non-golden examples that carry their question, as documents for the dataset build."""
    docs = []
    for eid, row in latest_corrections(feedback).items():
        if eid in golden_ids or not row.get("question"):
            continue
        messages = [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["corrected_answer"]}]
        docs.append({"doc_id": f"feedback-{row['feedback_id']}", "external_id": eid, "batch": "human_feedback",
                     "kind": "instruction", "title": None, "text": join_segments(m["content"] for m in messages),
                     "messages": json.dumps(messages, ensure_ascii=False)})
    return docs
