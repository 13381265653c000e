"""Hugging Face `datasets` on disk: what training and evaluation load (`load_from_disk`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from resources.storage import link_or_copy, write_links


def features(extra: dict[str, str]):
    from datasets import Features, List, Value

    return Features(
        {
            "id": Value("string"),
            "messages": List({"role": Value("string"), "content": Value("string")}),
            **{name: (List(Value("string")) if kind == "list" else Value(kind)) for name, kind in extra.items()},
        }
    )


def save_splits(examples: pd.DataFrame, splits: list[str], folder: Path, extra: dict[str, str]) -> dict[str, int]:
    """Save one split per name (empty splits too, with the full schema) as a DatasetDict."""
    from datasets import Dataset, DatasetDict
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    feats = features(extra)
    columns = list(feats)
    parts = {}
    for split in splits:
        rows = examples[examples["split"] == split][columns].to_dict("records")
        for row in rows:
            row["messages"] = [dict(m) for m in row["messages"]]
            for name, kind in extra.items():
                if kind == "list":
                    value = row[name]  # a list, or missing (None, or NaN where no row of a frame had the column)
                    row[name] = [str(x) for x in value] if hasattr(value, "__iter__") and not isinstance(value, str) else []
        parts[split] = Dataset.from_dict({c: [row[c] for row in rows] for c in columns}, features=feats)
    DatasetDict(parts).save_to_disk(str(folder))
    for name, ds in parts.items():
        if not len(ds):
            _empty_shard(folder / name, ds)
    return {name: len(ds) for name, ds in parts.items()}


def _empty_shard(folder: Path, ds) -> None:
    """`save_to_disk` writes no Arrow file for an empty split, and `load_from_disk` then fails on it (datasets 5.0):
    an empty file with the split's schema (its features in the schema's metadata) makes it load as 0 rows."""
    import pyarrow as pa

    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    if state["_data_files"]:
        return
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, ds.data.table.schema):
            pass
    state["_data_files"] = [{"filename": "data-00000-of-00001.arrow"}]
    (folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")


def link_splits(parts: list[Path], splits: list[str], folder: Path, fingerprint: str,
                sources: list[tuple[str, str, str] | None] | None = None) -> None:
    """`folder`: one DatasetDict made of the DatasetDicts that `save_splits` wrote at `parts` (the same features),
    in order: their Arrow files linked (copied where a link cannot be made), each split's `state.json` listing them
    — the layout `save_to_disk` writes for a dataset of several files, so `load_from_disk` reads it as the
    concatenated rows (memory-mapped, nothing rewritten). Equal to saving the concatenated table at once (a test
    holds it to that); `fingerprint` identifies the result. `sources`: per part, the stored partition it is in
    (asset, partition, the part's path there), so a remote store keeps its Arrow files once (`write_links`)."""
    if not parts:
        raise ValueError("no saved datasets to link")
    folder.mkdir()
    for split in splits:
        out = folder / split
        out.mkdir()
        files, links = [], {}
        for n, (part, source) in enumerate(zip(parts, sources or [None] * len(parts))):
            state = json.loads((part / split / "state.json").read_text(encoding="utf-8"))
            for data_file in state["_data_files"]:
                name = f"data-{n:06d}-{len(files):06d}.arrow"
                link_or_copy(part / split / data_file["filename"], out / name)
                files.append({"filename": name})
                if source is not None:
                    links[name] = (source[0], source[1], f"{source[2]}/{split}/{data_file['filename']}")
        write_links(out, links)
        state = json.loads((parts[0] / split / "state.json").read_text(encoding="utf-8"))
        state.update(_data_files=files, _fingerprint=fingerprint[:16])
        (out / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        shutil.copyfile(parts[0] / split / "dataset_info.json", out / "dataset_info.json")
    shutil.copyfile(parts[0] / "dataset_dict.json", folder / "dataset_dict.json")
