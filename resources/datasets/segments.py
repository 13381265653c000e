"""The instruction dataset one corpus segment at a time (`resources.segments`): a new batch's examples are made
once.

`build_examples` makes each document's example from that document alone (its split hashed from its id, its
prompt checked against the golden prompts), so the examples of a corpus segment and of its sections
(knowledge_examples' segment) depend only on them, the dataset policy and the golden prompts — all in the
segment's key. A changed golden set or policy makes every segment again.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from resources.artifacts import config_of
from resources.dedup import DedupRules
from resources.datasets.builder import EXAMPLE_COLUMNS, build_examples
from resources.datasets.export import link_splits, save_splits
from resources.records import DROPPED_COLUMNS, Ledger, frame, rows, sha256_hex
from resources.segments import (CARD_SEGMENTS, CORPUS_SEGMENTS, EXAMPLE_SEGMENTS, INSTRUCTION_SEGMENTS, link_parts,
                                merge_json, merge_tables, pieces, read_json, segment_dir, segment_key, write_typed,
                                writing_segment)
from resources.storage import write_json

CODE = "2"
CHATS = frozenset({"messages"})
SPLITS = ["train", "validation"]
HF_EXTRA = {"source_doc_id": "string", "batch": "string", "origin": "string"}  # the HF export's columns beyond id, messages
EXTRA_PART = "part-zz-extra.parquet"  # the examples made outside the segments (reviewers'), after the segments' parts


def merge_hf(sources: list[Path], target: Path) -> None:
    """A run's HF export: its merged examples.parquet (merged first: files merge in name order) saved as splits,
    what each segment's own export holds, in order."""
    save_splits(pd.read_parquet(target.parent / "examples.parquet"), SPLITS, target, HF_EXTRA)


INSTRUCTION_MERGE = {"examples.parquet": merge_tables, "dropped.parquet": merge_tables, "ledger.json": merge_json,
                     "counts.json": merge_json, "hf": merge_hf}  # a run of instruction segments' files
CARD_MERGE = {"lengths.json": merge_json}


@dataclass
class InstructionBuild:
    keys: list[str]  # per corpus segment, in order
    made: int = 0
    reused: int = 0
    ledger: Ledger = field(default_factory=lambda: Ledger(stage="instruction_dataset"))  # summed over the segments
    splits: Counter = field(default_factory=Counter)  # examples per split, summed over the segments
    origins: Counter = field(default_factory=Counter)  # examples per origin (corpus, sections, ...), summed


def instruction_segments(store, model: str, chains: list[str], example_keys: list[str], policy, golden_prompts: list[str],
                         dedup_rules: DedupRules = DedupRules()) -> InstructionBuild:
    """Per corpus segment (`chains`) and its knowledge-example segment (`example_keys`, the same order): the
    instruction examples of its documents and sections, made where the store does not hold them."""
    if len(chains) != len(example_keys):
        raise ValueError(f"{len(chains)} corpus segments but {len(example_keys)} example segments")
    asset = f"{model}/{INSTRUCTION_SEGMENTS}"
    golden = sha256_hex("\n".join(sorted(golden_prompts)))
    config = config_of(policy, dedup_rules)
    build = InstructionBuild([segment_key(chain, examples, golden, config, CODE) for chain, examples in zip(chains, example_keys)])
    held = set(store.partitions(asset))
    dropped: Counter = Counter()
    for chain, examples, key in zip(chains, example_keys, build.keys):
        if key not in held:
            documents = _rows(segment_dir(store, f"{model}/{CORPUS_SEGMENTS}", chain) / "kept.parquet")
            documents += _rows(segment_dir(store, f"{model}/{EXAMPLE_SEGMENTS}", examples) / "examples.parquet")
            made = build_examples(documents, policy.split_rules(), policy.text_strategy, policy.title_template,
                                  golden_prompts=golden_prompts, dedup_rules=dedup_rules)
            table = frame(made.examples, EXAMPLE_COLUMNS)
            with writing_segment(store, asset, key) as out:
                write_typed(out / "examples.parquet", table, chats=CHATS)
                write_typed(out / "dropped.parquet", frame(made.dropped, DROPPED_COLUMNS))
                write_json(out, "ledger.json", made.ledger.to_dict())
                save_splits(table, SPLITS, out / "hf", HF_EXTRA)  # this segment's share of the HF export
                write_json(out, "counts.json", _counts(table))
            build.made += 1
        else:
            build.reused += 1
    for _, folder in pieces(store, asset, build.keys, INSTRUCTION_MERGE):
        counts = read_json(folder / "counts.json", {})
        build.splits.update(counts.get("splits", {}))
        build.origins.update(counts.get("origins", {}))
        part = Ledger.from_dict(read_json(folder / "ledger.json"))
        build.ledger.records_in += part.records_in
        build.ledger.kept += part.kept
        dropped.update(part.dropped)
    build.ledger.dropped = dropped
    return build


def link_instructions(store, model: str, keys: list[str], folder: Path, extra: pd.DataFrame | None = None,
                      extra_dropped: pd.DataFrame | None = None) -> None:
    """`folder/examples.parquet` and `folder/dropped.parquet`: the segments' tables linked in order, then `extra`
    (the examples made outside the segments: reviewers' corrections) as the last part."""
    asset = f"{model}/{INSTRUCTION_SEGMENTS}"
    link_parts(store, asset, keys, "examples.parquet", folder / "examples.parquet",
               lambda path: write_typed(path, frame([], EXAMPLE_COLUMNS), chats=CHATS), INSTRUCTION_MERGE)
    link_parts(store, asset, keys, "dropped.parquet", folder / "dropped.parquet",
               lambda path: write_typed(path, frame([], DROPPED_COLUMNS)), INSTRUCTION_MERGE)
    if extra is not None and len(extra):
        write_typed(folder / "examples.parquet" / EXTRA_PART, extra[EXAMPLE_COLUMNS], chats=CHATS)
    if extra_dropped is not None and len(extra_dropped):
        write_typed(folder / "dropped.parquet" / EXTRA_PART, extra_dropped[DROPPED_COLUMNS])


def link_instruction_hf(store, model: str, keys: list[str], folder: Path, extra: pd.DataFrame | None = None) -> dict:
    """`folder/hf`: the HF `DatasetDict` (train, validation) of the segments' examples, then `extra`'s, in the order
    of `examples.parquet` — each segment's Arrow files linked, not the whole dataset written again. Returns the
    examples per split and per origin of `extra` (the segments' are in `instruction_segments`' build)."""
    asset = f"{model}/{INSTRUCTION_SEGMENTS}"
    held = [piece for _, piece in pieces(store, asset, keys, INSTRUCTION_MERGE)]
    parts = [piece / "hf" for piece in held]
    sources = [(asset, piece.name, "hf") for piece in held]
    staged = folder / ".hf-extra"
    if extra is not None and len(extra) or not parts:
        save_splits(extra if extra is not None else frame([], EXAMPLE_COLUMNS), SPLITS, staged, HF_EXTRA)
        parts.append(staged)
        sources.append(None)  # written here: stored with this version
    try:
        link_splits(parts, SPLITS, folder / "hf", segment_key(keys, None if extra is None else list(extra["id"])), sources)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return _counts(extra if extra is not None else frame([], EXAMPLE_COLUMNS))


@dataclass
class LengthBuild:
    lengths: dict[str, list[int]]  # token lengths per split, the segments' in order
    made: int = 0
    reused: int = 0


def segment_lengths(store, model: str, keys: list[str], tokenizer) -> LengthBuild:
    """The dataset card's token lengths (chat template applied, as training sees them) of each instruction segment's
    examples, per split: counted once per segment and tokenizer (`<model>/card_segments`, numbers only), so one
    more batch tokenizes one more segment."""
    from resources.datasets.card import token_lengths, tokenizer_identity

    asset = f"{model}/{CARD_SEGMENTS}"
    identity = tokenizer_identity(tokenizer)
    held = set(store.partitions(asset))
    build = LengthBuild({split: [] for split in SPLITS})
    card_keys = [segment_key(ikey, identity, CODE) for ikey in keys]
    for ikey, key in zip(keys, card_keys):
        if key not in held:
            table = pd.read_parquet(segment_dir(store, f"{model}/{INSTRUCTION_SEGMENTS}", ikey) / "examples.parquet",
                                    columns=["split", "messages"])
            with writing_segment(store, asset, key) as out:
                write_json(out, "lengths.json", {split: token_lengths(table[table["split"] == split], tokenizer)
                                                 for split in SPLITS})
            build.made += 1
        else:
            build.reused += 1
    for _, folder in pieces(store, asset, card_keys, CARD_MERGE):
        for split, found in read_json(folder / "lengths.json").items():
            build.lengths[split] += found
    return build


def _counts(table: pd.DataFrame) -> dict:
    return {"splits": {s: int((table["split"] == s).sum()) for s in SPLITS},
            "origins": {str(k): int(v) for k, v in table["origin"].value_counts().items()} if len(table) else {}}


def _rows(path: Path) -> list[dict]:
    return rows(pd.read_parquet(path)) if path.exists() else []



def contamination_verdicts(store, model: str, examples: Path, golden_prompts: list[str],
                           dedup_rules: DedupRules = DedupRules()):
    """The contamination check (no golden question in train or validation, exactly or as a near-duplicate) over the
    parts of an examples table (`examples`: a folder of parts or one file), each part checked once against these
    golden prompts (`resources.segments.part_verdicts`). Verdicts: examples and contaminated counts per part."""
    from resources.datasets.builder import contamination, golden_guard
    from resources.segments import part_verdicts, table_parts

    guard = golden_guard(golden_prompts, dedup_rules)

    def verify(group):
        prompts = pd.read_parquet(group[0], columns=["prompt"])["prompt"]
        return {"examples": len(prompts), "contaminated": sum(1 for e in prompts if contamination(guard, e))}

    return part_verdicts(store, model, "golden_train_disjoint", [(part,) for part in table_parts(examples)],
                         [sorted(golden_prompts), config_of(dedup_rules), "1"], verify)


def validate_parts(store, model: str, table: Path, suite_name: str, row_expectations: list, table_expectations: list,
                   row_columns: list[str], table_columns: list[str]):
    """A suite over a table kept in parts (`table`: a folder of parts or one file): the expectations each row meets
    on its own run once per part (the verdict kept by the part's sha256, `resources.segments.part_verdicts`), those
    over the whole table (row count, unique ids) on its `table_columns` only. One more batch validates one more
    part. Returns (the whole-table outcome, the parts' verdicts)."""
    from resources.quality import expectations_config, validate
    from resources.segments import part_verdicts, table_parts

    def verify(group):
        outcome = validate(pd.read_parquet(group[0], columns=row_columns), suite_name, row_expectations)
        return {"success": outcome.success, "rows": outcome.rows, "failures": outcome.failures, "evaluated": outcome.evaluated}

    parts = part_verdicts(store, model, suite_name, [(p,) for p in table_parts(table)],
                          [expectations_config(row_expectations), row_columns], verify)
    whole = validate(pd.read_parquet(table, columns=table_columns), suite_name, table_expectations)
    return whole, parts
