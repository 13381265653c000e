"""Scoring a redactor on a labelled set: records with their planted values, and look-alike records that must come
out unchanged (tests/data/pii_heldout.jsonl is one; a company can score its own policy on its own set the same way).
A planted value counts as caught when it no longer appears in its record's output."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence


def load_labelled(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def labelled_recall(rows: Sequence[dict[str, Any]], redact: Callable[[list[str]], list[str]]) -> dict[str, Any]:
    """Recall overall and per entity, and over-redaction: the share of look-alike records (`keep`) changed."""
    outputs = redact([row["text"] for row in rows])
    caught, total, missed = Counter(), Counter(), []
    keep = changed = 0
    for row, text in zip(rows, outputs):
        if row.get("keep"):
            keep += 1
            changed += text != row["text"]
        for item in row["planted"]:
            total[item["entity"]] += 1
            found = item["value"] not in text
            caught[item["entity"]] += found
            if not found:
                missed.append({"id": row["id"], "entity": item["entity"], "locale": row.get("locale")})
    return {"overall": round(sum(caught.values()) / max(1, sum(total.values())), 4), "planted": sum(total.values()),
            "by_entity": {e: round(caught[e] / total[e], 4) for e in sorted(total)},
            "look_alikes": keep, "over_redaction": round(changed / max(1, keep), 4), "missed": missed}
