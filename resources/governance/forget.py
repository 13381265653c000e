"""Right to be forgotten: where a document reached, across every model of a project, and purging it.

Ingestion honours the forget list (`resources.ingestion.forget`): records on it are dropped with reason
`forgotten`, so every batch, corpus, dataset, index and adapter rebuilt after the entry was added is free of
them. `reach` lists every stored artifact version that still holds a document (or adapter trained on a
dataset that held it, and the champion serving such an adapter); `purge` deletes the superseded versions that
hold it — on the remote store first (the system of record), then locally — and the checkpoints a trainer
left behind (a killed or failed run) from such a dataset. The request log's rows whose answers were grounded
on a forgotten document go with the forget itself (`RequestLog.forget_documents`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from resources.ingestion.forget import ForgetList  # noqa: F401  (re-exported: the workflows add entries)

DOCUMENT_TABLES = (  # (asset, table, column holding the document id)
    ("raw_documents", "documents.parquet", "doc_id"), ("cleaned_documents", "documents.parquet", "doc_id"),
    ("redacted_documents", "documents.parquet", "doc_id"), ("corpus", "documents.parquet", "doc_id"),
    ("corpus_segments", "kept.parquet", "doc_id"), ("chunk_segments", "chunks.parquet", "doc_id"),
    ("passage_vectors", "passages.parquet", "doc_id"), ("knowledge_example_segments", "examples.parquet", "source_doc_id"),
    ("instruction_segments", "examples.parquet", "source_doc_id"), ("golden_segments", "examples.parquet", "doc_id"),
    ("instruction_dataset", "examples.parquet", "source_doc_id"), ("document_chunks", "chunks.parquet", "doc_id"),
    ("knowledge_examples", "examples.parquet", "source_doc_id"), ("knowledge_index", "passages.parquet", "doc_id"),
)
PURGEABLE = ("raw_documents", "cleaned_documents", "redacted_documents", "corpus", "corpus_segments", "chunk_segments",
             "passage_vectors", "knowledge_example_segments", "instruction_segments", "golden_segments", "document_chunks",
             "knowledge_examples",
             "instruction_dataset", "knowledge_index", "golden_dataset", "lora_adapter", "merged_model")


def doc_ids_of(store, models: list[str], doc_id: str | None, sha256: str | None) -> set[str]:
    """The document ids a request covers (all records of a raw file, for a sha256), in any model."""
    ids = {doc_id} if doc_id else set()
    if sha256:
        for model in models:
            asset = f"{model}/raw_documents"
            for key in store.partitions(asset):
                if store.exists(asset, key, "documents.parquet"):
                    raw = store.read_table(asset, key, "documents.parquet")
                    ids |= set(raw.loc[raw["source_sha256"] == sha256, "doc_id"])
    return ids


def reach(store, models: list[str], doc_ids: set[str], checkpoint_root: Path | None = None) -> dict[str, list[str]]:
    """Store asset (`<model>/<asset>`) -> the stored versions holding the documents, the adapters trained on such
    a dataset version, their merges, and the champion records serving one; `<model>/checkpoints` -> the trainer
    work folders under `checkpoint_root` (FineTuner.work_dir) of runs on such a dataset version."""
    found: dict[str, list[str]] = {}
    for model in models:
        for asset, table, column in DOCUMENT_TABLES:
            name = f"{model}/{asset}"
            hits = [k for k in store.partitions(name) if store.exists(name, k, table)
                    and pd.read_parquet(store.path(name, k, table), columns=[column])[column].isin(doc_ids).any()]
            if hits:
                found[name] = hits
        golden = _held_out_golden_of(store, model, doc_ids)
        if golden:
            found[f"{model}/golden_dataset"] = golden
        tainted = set(found.get(f"{model}/instruction_dataset", []))
        leftovers = _checkpoints_of(checkpoint_root, model, tainted) if checkpoint_root and tainted else []
        if leftovers:
            found[f"{model}/checkpoints"] = leftovers
        adapters = [k for k in store.partitions(f"{model}/lora_adapter")
                    if store.exists(f"{model}/lora_adapter", k, "tuneforge_manifest.json")
                    and store.read_json(f"{model}/lora_adapter", k, "tuneforge_manifest.json").get("dataset_version") in tainted]
        if adapters:
            found[f"{model}/lora_adapter"] = adapters
            merged = [k for k in store.partitions(f"{model}/merged_model") if store.exists(f"{model}/merged_model", k, "merged.json")
                      and store.read_json(f"{model}/merged_model", k, "merged.json").get("adapter_version") in adapters]
            if merged:
                found[f"{model}/merged_model"] = merged
            champions = [k for k in store.partitions(f"{model}/champion") if store.exists(f"{model}/champion", k, "champion.json")
                         and store.read_json(f"{model}/champion", k, "champion.json").get("adapter_version") in adapters]
            if champions:
                found[f"{model}/champion"] = champions
    return found


def _held_out_golden_of(store, model: str, doc_ids: set[str]) -> list[str]:
    """Golden-set versions holding a question made from one of the documents (the hold-out hashed out of the
    corpus): such a row names its document by external id, or by doc_id when it has none. Curated golden files
    are the company's own and are not touched."""
    corpus = f"{model}/corpus"
    names = set(doc_ids)
    for key in store.partitions(corpus):
        if store.exists(corpus, key, "documents.parquet"):
            docs = pd.read_parquet(store.path(corpus, key, "documents.parquet"), columns=["doc_id", "external_id"])
            names |= set(docs.loc[docs["doc_id"].isin(doc_ids), "external_id"].dropna())
    asset, hits = f"{model}/golden_dataset", []
    for key in store.partitions(asset):
        if store.exists(asset, key, "examples.parquet"):
            rows = pd.read_parquet(store.path(asset, key, "examples.parquet"), columns=["source_doc_id", "origin"])
            if (rows["origin"].astype(str).str.startswith("holdout") & rows["source_doc_id"].isin(names)).any():
                hits.append(key)
    return hits


def _checkpoints_of(root: Path, model: str, dataset_versions: set[str]) -> list[str]:
    """The trainer work folders (named by adapter version) whose job trained `model` on one of the versions."""
    found = []
    for spec_file in sorted(Path(root).glob("*/spec.json")):
        try:
            manifest = json.loads(spec_file.read_text()).get("manifest", {})
        except (OSError, ValueError):
            continue
        if manifest.get("model") == model and manifest.get("dataset_version") in dataset_versions:
            found.append(spec_file.parent.name)
    return found


def purge(store, found: dict[str, list[str]], keep: set[tuple[str, str]] = frozenset(),
          checkpoint_root: Path | None = None) -> list[str]:
    """Delete the stored versions listed in `found` (remote first, then local), except `keep` (asset, key), and
    the listed trainer checkpoints under `checkpoint_root`."""
    removed = []
    for name, keys in found.items():
        kind = name.rsplit("/", 1)[-1]
        if kind not in PURGEABLE and not (kind == "checkpoints" and checkpoint_root):
            continue
        for key in keys:
            if (name, key) in keep:
                continue
            if kind == "checkpoints":
                shutil.rmtree(Path(checkpoint_root) / key)
            else:
                store.delete(name, key)
            removed.append(f"{name}/{key}")
    return removed
