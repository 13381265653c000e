"""Right to be forgotten: a versioned forget list that ingestion honours, and where a document reached.

`policies/forget.yaml` lists documents (`doc_id`) and whole raw files (`sha256`) to forget. Ingestion
drops their records with reason `forgotten` (counted in the ledger like every other drop), so every
dataset, index and adapter rebuilt after the entry was added is free of them. `reach` lists every stored
artifact version and deployment that still holds (or was trained on) a document; `purge` deletes the
superseded versions that hold it.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

DATA_ASSETS = ("raw_documents", "cleaned_documents", "redacted_documents")
VERSIONED = (("instruction_dataset", "examples.parquet", "source_doc_id"), ("knowledge_index", "documents.parquet", "doc_id"))


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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = "# Documents and raw files to forget (tuneforge forget). Ingestion drops their records.\n"
        path.write_text(header + yaml.safe_dump({"forget": self.entries}, sort_keys=False))

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


def doc_ids_of(store, doc_id: str | None, sha256: str | None) -> set[str]:
    """The document ids a request covers (all records of a raw file, for a sha256)."""
    ids = {doc_id} if doc_id else set()
    if sha256:
        for batch in store.partitions("raw_documents"):
            raw = store.read_table("raw_documents", batch)
            ids |= set(raw.loc[raw["source_sha256"] == sha256, "doc_id"])
    return ids


def reach(store, doc_id: str | None = None, sha256: str | None = None, doc_ids: set[str] | None = None) -> dict[str, list[str]]:
    """Every stored artifact (asset -> partitions/versions) holding the documents, every adapter version
    trained on a dataset version that held them, and every deployment serving such an adapter."""
    ids = doc_ids if doc_ids is not None else doc_ids_of(store, doc_id, sha256)
    found: dict[str, list[str]] = {}
    for asset in DATA_ASSETS:
        hits = [b for b in store.partitions(asset) if store.exists(asset, b, "documents.parquet")
                and store.read_table(asset, b)["doc_id"].isin(ids).any()]
        if hits:
            found[asset] = hits
    for asset, table, column in VERSIONED:
        hits = [v for v in store.partitions(asset) if store.exists(asset, v, table)
                and pd.read_parquet(store.path(asset, v, table), columns=[column])[column].isin(ids).any()]
        if hits:
            found[asset] = hits
    tainted = set(found.get("instruction_dataset", []))
    adapters = []
    for version in store.partitions("lora_adapter"):
        manifest = store.partition_dir("lora_adapter", version) / "tuneforge_manifest.json"
        if manifest.exists() and json.loads(manifest.read_text()).get("dataset_version") in tainted:
            adapters.append(version)
    if adapters:
        found["lora_adapter"] = adapters
    deployments = [v for v in store.partitions("deployed_endpoint") if v in adapters]
    if deployments:
        found["deployed_endpoint"] = deployments
    return found


def purge(store, found: dict[str, list[str]], keep: set[tuple[str, str]] = frozenset()) -> list[str]:
    """Delete the stored versions listed in `found` (datasets, indexes, adapters), except `keep`."""
    removed = []
    for asset in ("instruction_dataset", "knowledge_index", "lora_adapter"):
        for version in found.get(asset, []):
            if (asset, version) in keep:
                continue
            shutil.rmtree(store.partition_dir(asset, version), ignore_errors=True)
            removed.append(f"{asset}/{version}")
    return removed
