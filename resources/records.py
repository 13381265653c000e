"""The one document schema every stage reads and writes, and the bookkeeping around it.

A *document* is one record from the inbox after normalisation. Four input shapes map onto it:

| input fields                      | kind          | messages                                   |
|-----------------------------------|---------------|--------------------------------------------|
| `text`                            | `text`        | none (the text itself)                     |
| `messages` (role/content list)    | `chat`        | as given                                   |
| `instruction` [+ `input`] + `output` | `instruction` | user: instruction (+ input), assistant: output |
| `prompt` + `completion`           | `instruction` | user: prompt, assistant: completion        |

Stages edit documents through their *segments*: the text of a `text` document, or the content of each
message. `text` is always the segments joined by a blank line, so filters, de-duplication and
redaction see the same string.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

DOCUMENT_COLUMNS = [
    "doc_id",  # stable id: sha256(source file sha256 : line)[:20]
    "external_id",  # the record's own `id` field, if it had one (e.g. KB-0042)
    "batch",  # ingestion batch (the dynamic partition key)
    "source_path",  # path of the source file relative to the inbox
    "source_sha256",  # sha256 of the whole source file
    "source_format",  # jsonl | json | csv | parquet | txt | md
    "line",  # 1-based: line (jsonl), data row (csv), item (json, parquet); 1 for txt/md
    "kind",  # text | chat | instruction
    "title",  # title field or first markdown heading, if any
    "text",  # segments joined by a blank line
    "messages",  # JSON list of {role, content} (chat/instruction), else null
]

QUARANTINE_COLUMNS = ["batch", "source_path", "source_sha256", "line", "reason", "detail"]
DROPPED_COLUMNS = ["doc_id", "reason", "detail"]

ROLES = ("system", "user", "assistant")


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in blocks (hashlib.file_digest)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def document_id(source_sha256: str, line: int) -> str:
    """Stable across re-ingestion of the same file content, wherever the file lies."""
    return sha256_hex(f"{source_sha256}:{line}")[:20]


def segments(doc: dict[str, Any]) -> list[str]:
    """The editable text pieces of a document."""
    if doc.get("messages"):
        return [m["content"] for m in json.loads(doc["messages"])]
    return [doc["text"]]


def with_segments(doc: dict[str, Any], new_segments: list[str]) -> dict[str, Any]:
    """A copy of `doc` whose segments are replaced (and `text` rebuilt from them)."""
    out = dict(doc)
    if doc.get("messages"):
        messages = json.loads(doc["messages"])
        if len(messages) != len(new_segments):
            raise ValueError(f"document {doc['doc_id']}: {len(new_segments)} segments for {len(messages)} messages")
        for message, content in zip(messages, new_segments):
            message["content"] = content
        out["messages"] = json.dumps(messages, ensure_ascii=False)
    out["text"] = join_segments(new_segments)
    return out


def join_segments(parts: Iterable[str]) -> str:
    return "\n\n".join(parts)


def frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """A DataFrame with exactly `columns`, also when `rows` is empty."""
    df = pd.DataFrame(rows, columns=columns)
    if "line" in columns:
        df["line"] = df["line"].astype("Int64")
    return df


def rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Table rows as plain dicts, missing values as None (parquet round-trips give NaN)."""
    return df.astype(object).where(df.notna(), None).to_dict("records")


def fingerprint(df: pd.DataFrame, columns: Iterable[str]) -> str:
    """Content hash of a table (order-independent): the data version of a stage's output."""
    cols = list(columns)
    rows = sorted(json.dumps([_plain(r[c]) for c in cols], ensure_ascii=False) for r in df.to_dict("records"))
    return sha256_hex("\n".join(rows))[:24]


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value):
        return None
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (pd.Timestamp,)):
        return value.isoformat()
    return value if isinstance(value, (str, int, float, bool, list, dict)) else str(value)


@dataclass
class Ledger:
    """Records in = kept + dropped (by reason) + quarantined (by reason), for one stage and partition."""

    stage: str
    records_in: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    quarantined: Counter = field(default_factory=Counter)

    def balanced(self) -> bool:
        return self.records_in == self.kept + sum(self.dropped.values()) + sum(self.quarantined.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "records_in": self.records_in,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "quarantined": dict(sorted(self.quarantined.items())),
            "balanced": self.balanced(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Ledger":
        return cls(
            stage=data["stage"],
            records_in=int(data["records_in"]),
            kept=int(data["kept"]),
            dropped=Counter(data.get("dropped", {})),
            quarantined=Counter(data.get("quarantined", {})),
        )

    def summary(self) -> str:
        parts = [f"{self.records_in} in", f"{self.kept} kept"]
        if self.dropped:
            parts.append(f"{sum(self.dropped.values())} dropped")
        if self.quarantined:
            parts.append(f"{sum(self.quarantined.values())} quarantined")
        return ", ".join(parts)


def pq_rows(path) -> int:
    """Rows of a stored table (a file, or a folder of parts), from the parquet footers (the table is not read)."""
    import pyarrow.parquet as pq

    parts = sorted(Path(path).glob("*.parquet")) if Path(path).is_dir() else [path]
    return sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
