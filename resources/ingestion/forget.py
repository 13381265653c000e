"""The forget list: documents (`doc_id`) and whole raw files (`sha256`) that ingestion drops.

`policies/forget.yaml` (versioned with the project) lists them; ingestion drops their records with reason
`forgotten`, counted in the ledger like every other drop, so every dataset, index and adapter rebuilt after
an entry was added is free of them (`tuneforge forget` adds entries; `resources.governance.forget` finds
where a document reached and purges it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from resources.atomic import replace_file, target_lock


@dataclass
class ForgetList:
    entries: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> "ForgetList":
        path = Path(path)
        if not path.exists():
            return cls()
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: invalid YAML ({err})") from err
        entries = data.get("forget", [])
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not (entry.get("doc_id") or entry.get("sha256")):
                raise ValueError(f"{path}: entry {i} needs a doc_id or a sha256")
        return cls(entries)

    def save(self, path: str | Path) -> None:
        """Replace the file in one atomic step (a reader, e.g. the inbox sensor, sees the old list or the new)."""
        header = "# Documents and raw files to forget (tuneforge forget). Ingestion drops their records.\n"
        replace_file(Path(path), header + yaml.safe_dump({"forget": self.entries}, sort_keys=False))

    @classmethod
    def append(cls, path: str | Path, doc_id: str | None = None, sha256: str | None = None,
               reason: str = "erasure request") -> "ForgetList":
        """Add one entry under the file's lock, so two requests at once both stay on the list; returns the list."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with target_lock(Path(path)):
            forget_list = cls.load(path)
            forget_list.add(doc_id=doc_id, sha256=sha256, reason=reason)
            forget_list.save(path)
        return forget_list

    def add(self, doc_id: str | None = None, sha256: str | None = None, reason: str = "erasure request") -> None:
        if any(e.get("doc_id") == doc_id and e.get("sha256") == sha256 for e in self.entries):
            return
        entry = {k: v for k, v in (("doc_id", doc_id), ("sha256", sha256)) if v}
        self.entries.append({**entry, "reason": reason,
                             "requested_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})

    @property
    def doc_ids(self) -> set[str]:
        return {e["doc_id"] for e in self.entries if e.get("doc_id")}

    @property
    def file_hashes(self) -> set[str]:
        return {e["sha256"] for e in self.entries if e.get("sha256")}

    def forgets(self, document: dict[str, Any]) -> bool:
        return document.get("doc_id") in self.doc_ids or document.get("source_sha256") in self.file_hashes

    def fingerprint(self) -> str:
        return ",".join(sorted(self.doc_ids | self.file_hashes))
