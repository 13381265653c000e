"""The instruction dataset one corpus segment at a time (`resources.segments`): a new batch's examples are made
once.

`build_examples` makes each document's example from that document alone (its split hashed from its id, its
prompt checked against the golden prompts), so the examples of a corpus segment and of its sections
(knowledge_examples' segment) depend only on them, the dataset policy and the curated golden prompts — all in
the segment's key. A changed curated golden set or policy makes every segment again; the golden hold-out, which
grows with every batch, makes again only the segments whose prompts may duplicate one of its questions.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from resources.artifacts import config_of
from resources.dedup import DedupRules, near_pairs, signature_table
from resources.datasets.builder import EXAMPLE_COLUMNS, GOLDEN_COLUMNS, build_examples, held_out_golden, with_messages
from resources.datasets.export import link_splits, save_splits
from resources.records import DROPPED_COLUMNS, Ledger, frame, rows, sha256_hex
from resources.segments import (CARD_SEGMENTS, CHUNK_SEGMENTS, CORPUS_SEGMENTS, EXAMPLE_SEGMENTS, GOLDEN_SEGMENTS,
                                GUARD_MERGE, INSTRUCTION_SEGMENTS, QA_MERGE, QA_PREFIX, SIGNATURES, KeptSignatures, link_parts,
                                merge_json, merge_tables, pieces, read_json, read_signatures, save_signatures, segment_dir,
                                segment_key, unfinished_key, write_signatures, write_typed, writing_segment)
from resources.storage import write_json

CODE = "4"
CHATS = frozenset({"messages"})
SPLITS = ["train", "validation"]
HF_EXTRA = {"source_doc_id": "string", "batch": "string", "origin": "string"}  # the HF export's columns beyond id, messages
SIGNATURE_SEGMENTS = "instruction_signatures"  # <model>/.../<key>: an instruction segment's prompts' signatures
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
    guarded: int = 0  # segments made again against held-out prompts they may duplicate


def instruction_segments(store, model: str, chains: list[str], example_keys: list[str], policy, golden_prompts: list[str],
                         held_out_prompts: list[str] = (), dedup_rules: DedupRules = DedupRules(),
                         golden_probes: list = (), golden_sources: list[str] = (),
                         held_out_probes: list = (), superseded: set[str] = frozenset()) -> InstructionBuild:
    """Per corpus segment (`chains`) and its knowledge-example segment (`example_keys`, the same order): the
    instruction examples of its documents and sections, made where the store does not hold them.

    `golden_prompts` (the curated golden set, which changes rarely) are in every segment's key. The golden
    hold-out (`held_out_prompts`) grows with every batch, so it is not: each segment's prompts' MinHash
    signatures are kept once (`held_out_near`), and a segment one of whose prompts duplicates a held-out question is
    made again with those questions in its guard (and its key) — usually none, so a new batch makes one segment.
    Without a hold-out no signature is made.

    The answer guard works alike: the curated golden set's sentences (`golden_probes`, `resources.contamination`) and
    the documents it names as sources (`golden_sources`, held out whole) are in every segment's key; the hold-out's
    sentences (`held_out_probes`) are compared with each segment's answers, and only a segment that holds one is made
    again with it in its guard. So is a segment holding a document a later batch superseded: made again without it
    (the superseded doc_ids it holds in its key)."""
    if len(chains) != len(example_keys):
        raise ValueError(f"{len(chains)} corpus segments but {len(example_keys)} example segments")
    asset = f"{model}/{INSTRUCTION_SEGMENTS}"
    config = config_of(policy, dedup_rules)
    golden = sha256_hex("\n".join(sorted(golden_prompts)) + "\0" + "\n".join(sorted(p.text for p in golden_probes))
                        + "\0" + "\n".join(sorted(map(str, golden_sources))))
    base = [segment_key(chain, examples, golden, config, CODE) for chain, examples in zip(chains, example_keys)]
    stale = _stale_by_segment(store, model, chains, set(superseded)) if superseded else [[] for _ in chains]
    base = [segment_key(key, found, CODE) if found else key for key, found in zip(base, stale)]
    held = set(store.partitions(asset))
    build = InstructionBuild(list(base))

    def ensure(i: int, key: str, guard: list[str], probes: list) -> None:
        if key in held:
            build.reused += 1
            return
        documents = _rows(segment_dir(store, f"{model}/{CORPUS_SEGMENTS}", chains[i]) / "kept.parquet")
        documents += _rows(segment_dir(store, f"{model}/{EXAMPLE_SEGMENTS}", example_keys[i]) / "examples.parquet")
        made = build_examples(documents, policy.split_rules(), policy.text_strategy, policy.title_template,
                              golden_prompts=guard, dedup_rules=dedup_rules, golden_probes=probes,
                              golden_sources=golden_sources, superseded=stale[i])
        table = frame(made.examples, EXAMPLE_COLUMNS)
        with writing_segment(store, asset, key) as out:
            write_typed(out / "examples.parquet", table, chats=CHATS)
            write_typed(out / "dropped.parquet", frame(made.dropped, DROPPED_COLUMNS))
            write_json(out, "ledger.json", made.ledger.to_dict())
            save_splits(table, SPLITS, out / "hf", HF_EXTRA)  # this segment's share of the HF export
            write_json(out, "counts.json", _counts(table))
        held.add(key)
        build.made += 1

    for i, key in enumerate(base):
        ensure(i, key, list(golden_prompts), list(golden_probes))
    near = held_out_near(store, model, base, list(held_out_prompts), dedup_rules) if held_out_prompts else {}
    overlapping = held_out_overlaps(store, model, base, list(held_out_probes)) if held_out_probes else {}
    for i, key in enumerate(base):
        if key in near or key in overlapping:  # made again, guarded against the held-out questions it may repeat too
            prompts, probes = near.get(key, []), overlapping.get(key, [])
            build.keys[i] = segment_key(key, prompts, [p.text for p in probes], CODE)
            ensure(i, build.keys[i], list(golden_prompts) + prompts, list(golden_probes) + probes)
    build.guarded = len(set(near) | set(overlapping))
    dropped: Counter = Counter()
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


def held_out_near(store, model: str, keys: list[str], prompts: list[str], dedup_rules: DedupRules) -> dict[str, list[str]]:
    """Segment key -> the held-out prompts (sorted) that one of its prompts duplicates (`near_pairs`: an exact key,
    or an equal band and the similarity confirmed on the MinHash values), read from the segments' signature tables
    (`<model>/instruction_signatures`, made once per segment the first time a hold-out needs them) in runs of 16 and
    256: no prompt of a segment is hashed again."""
    asset = f"{model}/{SIGNATURE_SEGMENTS}"
    held = set(store.partitions(asset))
    signed = [segment_key(key, config_of(dedup_rules), CODE) for key in keys]
    for key, signature_key in zip(keys, signed):
        if signature_key not in held:
            examples = segment_dir(store, f"{model}/{INSTRUCTION_SEGMENTS}", key) / "examples.parquet"
            with writing_segment(store, asset, signature_key) as out:
                write_signatures(out, list(pd.read_parquet(examples, columns=["prompt"])["prompt"]), dedup_rules, segment=key)
    guard, guard_values = signature_table(prompts, dedup_rules)
    near: dict[str, set[str]] = {}
    for _, folder in pieces(store, asset, signed, GUARD_MERGE):
        table, values = read_signatures(folder)
        segment = table["segment"].to_numpy()
        for row, hit in near_pairs(table, values, guard, guard_values, dedup_rules.threshold):
            near.setdefault(str(segment[row]), set()).add(prompts[hit])
    return {key: sorted(found) for key, found in near.items()}


def _stale_by_segment(store, model: str, chains: list[str], superseded: set[str]) -> list[list[str]]:
    """Per corpus segment, the superseded doc_ids it holds (sorted): its document ids read once per run."""
    out = []
    for chain in chains:
        path = segment_dir(store, f"{model}/{CORPUS_SEGMENTS}", chain) / "kept.parquet"
        held = set(pd.read_parquet(path, columns=["doc_id"])["doc_id"]) if path.exists() else set()
        out.append(sorted(held & superseded))
    return out


def held_out_overlaps(store, model: str, keys: list[str], probes: list) -> dict[str, list]:
    """Segment key -> the held-out golden sentences (`resources.contamination.Probe`) that one of its answers holds:
    each segment's examples read once per run and compared with the probes' n-grams."""
    from resources.contamination import ProbeIndex

    index = ProbeIndex(list(probes))
    found: dict[str, list] = {}
    for key in keys:
        table = pd.read_parquet(segment_dir(store, f"{model}/{INSTRUCTION_SEGMENTS}", key) / "examples.parquet",
                                columns=["messages"])
        hits = {i for messages in table["messages"] for m in messages if m["role"] == "assistant"
                for i, _ in index.overlaps(m["content"])}
        if hits:
            found[key] = sorted((index.probes[i] for i in hits), key=lambda p: (p.golden_id, p.text))
    return found


GOLDEN_MERGE = {"examples.parquet": merge_tables, "redactions.json": merge_json, "counts.json": merge_json,
                **QA_MERGE}  # and, written by the teacher, its questions' signatures


@dataclass
class GoldenBuild:
    keys: list[str]  # per corpus segment, in order
    examples: pd.DataFrame  # every segment's held-out examples, redacted, in order (GOLDEN_COLUMNS and doc_id)
    redactions: Counter  # replacements per entity, summed over the segments
    made: int = 0
    reused: int = 0
    counts: Counter = field(default_factory=Counter)  # the teacher's yield (qa_generated, qa_kept, ...), summed
    partial: int = 0  # segments the teacher left unfinished (a cap, a timeout): stored apart, made again next run


def golden_segments(store, model: str, chains: list[str], chunk_keys: list[str], dataset, knowledge, redactor,
                    session=None, teacher_identity=None) -> GoldenBuild:
    """The golden hold-out one corpus segment at a time: per corpus segment (`chains`) and its chunk segment
    (`chunk_keys`, the same order), the questions about its documents hashed into the hold-out — chats as they are,
    texts by their sections (text_strategy `sections`) or whole — redacted by `redactor` (the model's policy, whose
    hash is in the key), made once, as the whole build makes them. A new batch asks about and redacts its own
    held-out documents only. With a teacher `session` and `knowledge.golden_from` 'teacher' (`teacher_identity` in
    the key), the teacher writes the sections' questions (`held_out_qa`), de-duplicated against the questions
    every earlier segment kept (their signatures stored with each segment); a segment it left unfinished is stored
    apart (`unfinished_key`) and made again by the next run, with every segment after it."""
    from resources.knowledge.examples import JUDGE_PROMPT, QA_PROMPT, held_out_qa, held_out_sections, unindexed_questions

    if len(chains) != len(chunk_keys):
        raise ValueError(f"{len(chains)} corpus segments but {len(chunk_keys)} chunk segments")
    asset, sections, rules = f"{model}/{GOLDEN_SEGMENTS}", dataset.text_strategy == "sections", dataset.split_rules()
    taught = sections and knowledge.golden_from == "teacher" and session is not None
    config = [config_of(dataset, knowledge), redactor.policy().content_hash()]
    config += [{"teacher": teacher_identity, "prompts": [QA_PROMPT, JUDGE_PROMPT]}] if taught else []
    build = GoldenBuild([segment_key(chain, chunks if sections else "", config, CODE) for chain, chunks in zip(chains, chunk_keys)],
                        frame([], GOLDEN_COLUMNS + ["doc_id"]), Counter())
    held = set(store.partitions(asset))
    earlier = KeptSignatures(store, asset, GOLDEN_MERGE)  # the teacher's questions the segments before kept
    for i, (chain, chunks) in enumerate(zip(chains, chunk_keys)):
        key, signed = build.keys[i], None
        if key in held and not build.partial:
            build.reused += 1
        else:
            examples = list(held_out_golden(_rows(segment_dir(store, f"{model}/{CORPUS_SEGMENTS}", chain) / "kept.parquet"),
                                            rules, dataset.text_strategy, dataset.title_template))  # chats; or whole texts
            passages = _rows(segment_dir(store, f"{model}/{CHUNK_SEGMENTS}", chunks) / "chunks.parquet") if sections else []
            taught_build = None
            if taught:  # the held-out documents' sections, asked about by the teacher
                written, taught_build = held_out_qa(passages, rules, knowledge, session, earlier=earlier.before(build.keys, i))
                examples += written
            elif sections:  # or by their values and headings
                examples += held_out_sections(passages, rules, knowledge, dataset.title_template)
            examples += unindexed_questions(passages, rules, knowledge)  # documents kept out of the index
            if taught_build is not None and (taught_build.unfinished or build.partial):
                build.partial += 1
                key = build.keys[i] = unfinished_key(key, [e["id"] for e in examples], taught_build.counts)
            found = redactor.redact_fields(examples, ("prompt", "answer"))
            if key not in held:
                with writing_segment(store, asset, key) as out:
                    write_typed(out / "examples.parquet", frame([with_messages(e) for e in examples], GOLDEN_COLUMNS + ["doc_id"])
                                .assign(tags=lambda t: t["tags"].map(json.dumps),
                                        must_include=lambda t: t["must_include"].map(json.dumps),
                                        must_not_include=lambda t: t["must_not_include"].map(_json_list)), chats=CHATS)
                    write_json(out, "redactions.json", dict(found))
                    if taught_build is not None:
                        write_json(out, "counts.json", dict(taught_build.counts))
                        save_signatures(out, *taught_build.signatures, QA_PREFIX)
                        signed = taught_build.signatures
            build.made += 1
        if taught:
            earlier.passed(build.keys[i], signed)
    tables = []
    for _, folder in pieces(store, asset, build.keys, GOLDEN_MERGE):
        tables.append(pd.read_parquet(folder / "examples.parquet"))
        build.redactions.update(read_json(folder / "redactions.json", {}))
        build.counts.update(read_json(folder / "counts.json", {}))
    if tables:
        table = pd.concat(tables, ignore_index=True)
        build.examples = table.assign(tags=table["tags"].map(json.loads), must_include=table["must_include"].map(json.loads),
                                      must_not_include=table["must_not_include"].map(json.loads),
                                      messages=table["messages"].map(list))
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


def _json_list(value) -> str:
    return json.dumps(list(value) if isinstance(value, (list, tuple)) else [])


def _rows(path: Path) -> list[dict]:
    return rows(pd.read_parquet(path)) if path.exists() else []



def contamination_verdicts(store, model: str, examples: Path, golden_prompts: list[str],
                           dedup_rules: DedupRules = DedupRules()):
    """The contamination check (no golden question in train or validation, exactly or as a near-duplicate) over the
    parts of an examples table (`examples`: a folder of parts or one file), each part checked once against these
    golden prompts (`resources.segments.part_verdicts`). Verdicts: examples and contaminated counts per part.

    A golden hold-out grows with every batch, and every part is checked again against it; that costs one table
    read per part, not one MinHash per prompt: the check keeps each part's signatures (made by the check itself
    once per part content) and finds what `Deduplicator.check` would with `near_pairs`."""
    from resources.segments import CHECK_VERDICTS, part_verdicts, table_parts

    golden, golden_values = signature_table(golden_prompts, dedup_rules)
    asset = f"{model}/{CHECK_VERDICTS}"

    def verify(group, hashes):
        key = segment_key("prompt_signatures", hashes[0], config_of(dedup_rules), CODE)
        folder = segment_dir(store, asset, key)
        if not (folder / SIGNATURES).exists():
            with writing_segment(store, asset, key) as out:
                write_signatures(out, list(pd.read_parquet(group[0], columns=["prompt"])["prompt"]), dedup_rules)
        table, values = read_signatures(folder)
        rows_hit = {row for row, _ in near_pairs(table, values, golden, golden_values, dedup_rules.threshold)}
        return {"examples": len(table), "contaminated": len(rows_hit)}

    return part_verdicts(store, model, "golden_train_disjoint", [(part,) for part in table_parts(examples)],
                         [sorted(golden_prompts), config_of(dedup_rules), "2"], verify, hashed=True)


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
