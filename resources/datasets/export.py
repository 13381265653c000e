"""Hugging Face `datasets` on disk: what training and evaluation load (`load_from_disk`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


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
    return {name: len(ds) for name, ds in parts.items()}
