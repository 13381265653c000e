"""The dataset card: a datasheet for the training data that a reviewer reads before training."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

_WORD = re.compile(r"[a-z][a-z'-]+")
STOPWORDS = set(
    "a an and are as at be but by can do does for from has have how i if in into is it its me my no not of on "
    "or our so that the their then there these this to up was we what when which who will with you your".split()
)


def token_lengths(frame: pd.DataFrame, tokenizer) -> list[int]:
    """Tokens per example with the tokenizer's own chat template (what training will see)."""
    texts = [tokenizer.apply_chat_template([dict(x) for x in m], tokenize=False) for m in frame["messages"]]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []


def diversity(texts: list[str]) -> dict[str, Any]:
    """Vocabulary, type/token ratio, distinct bigrams and the most frequent content words (ties: the first seen)."""
    words = _WORD.findall("\n".join(texts).lower())  # one scan; a line break is no word character, so no word spans two texts
    codes, vocabulary = pd.factorize(np.array(words, dtype=object))  # word -> its index in order of first appearance
    pairs = codes[:-1].astype(np.int64) * max(1, len(vocabulary)) + codes[1:] if len(words) > 1 else np.zeros(0, np.int64)
    counts = np.bincount(codes, minlength=len(vocabulary))
    content = np.array([w not in STOPWORDS and len(w) > 2 for w in vocabulary], dtype=bool)
    top = np.flatnonzero(content)[np.argsort(-counts[content], kind="stable")[:15]]
    return {
        "vocabulary_size": len(vocabulary),
        "type_token_ratio": round(len(vocabulary) / max(1, len(words)), 4),
        "distinct_2": round(len(pd.unique(pairs)) / max(1, len(words) - 1), 4),
        "top_terms": [str(vocabulary[i]) for i in top],
    }


def percentiles(values: list[int]) -> dict[str, int]:
    if not values:
        return {}
    arr = np.asarray(values)
    return {f"p{q}": int(np.percentile(arr, q)) for q in (5, 25, 50, 75, 95)} | {"max": int(arr.max())}


CARD_COLUMNS = ["id", "split", "batch", "origin", "prompt", "answer"]  # what the card reads of every example
DIVERSITY_SAMPLE = 5_000  # train examples (the lowest hashes of their ids) the diversity figures are read from


def tokenizer_identity(tokenizer) -> str:
    """A hash of the tokenizer's vocabulary, rules and chat template: token lengths are reused only for the same."""
    from resources.records import sha256_hex

    backend = getattr(tokenizer, "backend_tokenizer", None)
    return sha256_hex((backend.to_str() if backend is not None else repr(tokenizer.get_vocab()))
                      + "\0" + str(getattr(tokenizer, "chat_template", "") or ""))


def diversity_sample(train: pd.DataFrame, limit: int = DIVERSITY_SAMPLE) -> pd.DataFrame:
    """The train examples whose diversity the card reports: all of them up to `limit`, beyond it the `limit` with
    the lowest hashes of their ids (the same examples on every run; reading every example's text on every batch
    would grow with the dataset)."""
    if len(train) <= limit:
        return train
    from resources.records import sha256_hex

    hashes = np.array([sha256_hex(str(i)) for i in train["id"]])
    return train.iloc[np.sort(np.argsort(hashes, kind="stable")[:limit])]


def build_card(
    examples: pd.DataFrame,
    golden: pd.DataFrame,
    tokenizer,
    curation_drops: dict[str, int],
    raw_records: int,
    redaction_counts: dict[str, int],
    dataset_drops: dict[str, int],
    min_train_examples: int,
    lengths: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    """`examples` needs id, split, batch, origin, prompt, answer and, for the splits `lengths` does not give (token
    lengths per example of a split, made before), messages."""
    splits: dict[str, Any] = {}
    for name, part in [*examples.groupby("split"), ("golden", golden)]:
        known = (lengths or {}).get(name)
        if known is not None and len(known) != len(part):
            raise ValueError(f"token lengths were given for {len(known)} {name} examples, but the split has {len(part)}")
        found = known if known is not None else token_lengths(part, tokenizer)
        splits[name] = {"examples": len(part), "tokens": int(sum(found)), "token_length": percentiles(found)}
    train = examples[examples["split"] == "train"]
    sample = diversity_sample(train)
    duplicates = sum(v for k, v in curation_drops.items() if k.endswith("duplicate"))
    return {
        "splits": splits,
        "source_mix": {
            "by_batch": train["batch"].value_counts().sort_index().to_dict(),
            "by_origin": train["origin"].value_counts().sort_index().to_dict(),
        },
        "curation": {
            "raw_records": raw_records,
            "dropped_by_reason": dict(sorted(curation_drops.items())),
            "duplicate_ratio": round(duplicates / max(1, raw_records), 4),
            "drop_ratio": round(sum(curation_drops.values()) / max(1, raw_records), 4),
        },
        "dataset_drops": dict(sorted(dataset_drops.items())),
        "redactions_by_entity": dict(sorted(redaction_counts.items())),
        "diversity": diversity(list(sample["prompt"]) + list(sample["answer"])) | {"examples_read": len(sample)},
        "min_train_examples": min_train_examples,
        "train_below_minimum": len(train) < min_train_examples,
    }


def card_markdown(card: dict[str, Any]) -> str:
    lines = ["# Dataset card", "", "## Volume", "", "| split | examples | tokens | median tokens | p95 tokens |", "|---|---|---|---|---|"]
    for name, s in card["splits"].items():
        tl = s["token_length"]
        lines.append(f"| {name} | {s['examples']} | {s['tokens']} | {tl.get('p50', 0)} | {tl.get('p95', 0)} |")
    if card["train_below_minimum"]:
        lines += ["", f"**Warning:** fewer than {card['min_train_examples']} training examples: expect overfitting."]
    lines += ["", "## Sources (train)", "", "| batch | examples |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in card["source_mix"]["by_batch"].items()]
    lines += ["", "| origin | examples |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in card["source_mix"]["by_origin"].items()]
    cur = card["curation"]
    lines += ["", "## Curation", "", f"{cur['raw_records']} raw records; drop ratio {cur['drop_ratio']:.1%}, "
              f"duplicate ratio {cur['duplicate_ratio']:.1%}.", "", "| reason | dropped |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in {**cur["dropped_by_reason"], **card["dataset_drops"]}.items()]
    lines += ["", "## Redaction", "", "| entity | replaced |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in card["redactions_by_entity"].items()]
    d = card["diversity"]
    read = d.get("examples_read")
    lines += ["", "## Diversity (train)", "", f"vocabulary {d['vocabulary_size']}, type/token {d['type_token_ratio']}, "
              f"distinct-2 {d['distinct_2']}" + (f" (read from {read} train examples)" if read is not None else ""),
              "", "Top terms: " + ", ".join(d["top_terms"])]
    return "\n".join(lines) + "\n"
