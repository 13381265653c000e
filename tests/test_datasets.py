"""Datasets: hashed splits, the plain-text strategy, golden files and the contamination guard."""

import json
from collections import Counter

import pytest

from resources.datasets.builder import SplitRules, build_examples, read_golden_file
from resources.datasets.policy import DatasetPolicy
from helpers import HEADINGS


def chat(doc_id, prompt, answer, kind="instruction"):
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return {"doc_id": doc_id, "kind": kind, "title": None, "text": f"{prompt}\n\n{answer}",
            "messages": json.dumps(messages), "batch": "b", "external_id": None}


def test_splits_are_deterministic_and_close_to_the_fractions():
    rules = SplitRules(validation_fraction=0.2, golden_holdout_fraction=0.1)
    ids = [f"doc-{i}" for i in range(4000)]
    splits = [rules.split_of(i) for i in ids]
    assert splits == [rules.split_of(i) for i in ids]
    assert 0.17 < splits.count("validation") / len(ids) < 0.23
    assert 0.08 < splits.count("golden") / len(ids) < 0.12
    # adding data never moves an existing example
    assert [SplitRules(0.2, 0.1).split_of(i) for i in ids[:100]] == splits[:100]


def test_text_documents_follow_the_strategy():
    titled = {"doc_id": "t1", "kind": "text", "title": "Token expiry", "text": "# Token expiry\n\nTokens expire after 90 days.",
              "messages": None, "batch": "b", "external_id": "KB-1"}
    untitled = {**titled, "doc_id": "t2", "title": None, "text": "Loose note."}
    build = build_examples([titled, untitled], SplitRules(0.0), "title_to_instruction", "Tell me about {title}.")
    [example] = build.examples
    assert example["messages"] == [
        {"role": "user", "content": "Tell me about Token expiry."},
        {"role": "assistant", "content": "Tokens expire after 90 days."},
    ]
    assert build.dropped[0]["reason"] == "untitled_text"
    excluded = build_examples([titled], SplitRules(0.0), "exclude", "{title}")
    assert excluded.examples == [] and excluded.dropped[0]["reason"] == "text_excluded"
    assert build.ledger.balanced() and excluded.ledger.balanced()


def test_golden_questions_never_reach_training():
    docs = [
        chat("a", "How many boards does the free plan allow?", "Three."),
        chat("b", "How many boards does the free plan allow ?!", "3 boards."),
        chat("c", "how many boards does the free plan alow", "Three boards."),
        chat("d", "How do I rotate an API token?", "Open Settings, then API."),
    ]
    build = build_examples(docs, SplitRules(0.0), "exclude", "{title}", golden_prompts=["How many boards does the free plan allow?"])
    assert [e["id"] for e in build.examples] == ["d"]
    assert {d["reason"] for d in build.dropped} == {"golden_contamination"}
    assert build.ledger.dropped["golden_contamination"] == 3


def test_golden_file_reader_quarantines_bad_lines(tmp_path):
    path = tmp_path / "golden.jsonl"
    path.write_text(
        '{"id": "G1", "question": "Q?", "reference_answer": "A.", "source_doc_id": "KB-1", "tags": ["x"]}\n'
        '{"id": "G2", "question": "Q2?"}\n'
        "{broken\n"
    )
    examples, quarantine = read_golden_file(path, "golden.jsonl")
    assert [e["id"] for e in examples] == ["G1"]
    assert examples[0]["source_doc_id"] == "KB-1" and examples[0]["split"] == "golden"
    assert [(q["line"], q["reason"]) for q in quarantine] == [(2, "unrecognised_schema"), (3, "malformed_json")]
    assert "reference_answer" in quarantine[0]["detail"]


def test_dataset_policy_validation():
    with pytest.raises(ValueError, match="room for train"):
        DatasetPolicy(validation_fraction=0.6, golden_holdout_fraction=0.5)
    with pytest.raises(ValueError, match="{title}"):
        DatasetPolicy(title_template="no placeholder")


def test_examples_and_the_instruction_dataset_are_made_once_per_segment_and_equal_a_whole_build(tmp_path, smol_tokenizer):
    """With the document-local `headings` strategy, the knowledge examples and the instruction dataset are made one
    corpus segment at a time: one more batch makes one segment of each, and the linked tables equal building both
    from the whole corpus at once (set and ledger); a changed golden set makes every instruction segment again."""
    import pandas as pd

    from helpers import package_readmes, signed_batches
    from resources.curation.corpus import build_corpus, link_segments
    from resources.curation.curator import TextCurator
    from resources.datasets.builder import EXAMPLE_COLUMNS, build_examples
    from resources.datasets.policy import DatasetPolicy
    from resources.datasets.segments import instruction_segments, link_instructions
    from resources.knowledge.chunking import ChunkRules, Chunker
    from resources.knowledge.examples import build_knowledge_examples
    from resources.knowledge.policy import KnowledgePolicy
    from resources.knowledge.segments import chunk_segments, example_segments, link_chunks, link_examples
    from resources.records import frame, rows
    from resources.storage import ArtifactStore

    docs = package_readmes(30)
    batches = {f"b{b}": [dict(d, batch=f"b{b}") for d in docs[b * 10 : (b + 1) * 10]] for b in range(3)}
    faq = {"doc_id": "faq-2", "external_id": "F-1", "source_path": "faq.jsonl", "source_sha256": "0" * 64, "kind": "instruction",
           "source_format": "jsonl", "line": 1, "title": None, "pii_found": 0, "text": "Q\n\nA", "batch": "b2",
           "messages": '[{"role": "user", "content": "How do I reset my password?"}, '
                       '{"role": "assistant", "content": "Open Settings, then Security."}]'}
    batches["b2"].append(faq)
    curator, store = TextCurator(), ArtifactStore(root=str(tmp_path / "artifacts"))
    _, load = signed_batches(curator, batches)
    columns = list(faq)
    chunker = Chunker(smol_tokenizer.backend_tokenizer, ChunkRules(max_tokens=128, overlap_tokens=16))
    policy, knowledge = DatasetPolicy(validation_fraction=0.2, golden_holdout_fraction=0.1), HEADINGS
    golden = ["How do I reset my password?"]  # the FAQ duplicates it: dropped as contamination

    def build(names, golden_prompts):
        corpus = build_corpus(curator, store, "m", [(b, "v1") for b in names], load, columns)
        chunks = chunk_segments(store, "m", corpus.chains, chunker, {"rules": "128/16"})
        examples = example_segments(store, "m", chunks.keys, knowledge, policy.title_template, policy.split_rules())
        made = instruction_segments(store, "m", corpus.chains, examples.keys, policy, golden_prompts)
        return corpus, chunks, examples, made

    build(["b0", "b1"], golden)
    corpus, chunks, examples, made = build(["b0", "b1", "b2"], golden)
    assert (examples.made, examples.reused, made.made, made.reused) == (1, 2, 1, 2)

    out = tmp_path / "built"
    out.mkdir()
    link_segments(store, "m", corpus.chains, "kept.parquet", out, frame([], columns), "documents.parquet")
    link_chunks(store, "m", chunks.keys, out)
    (out / "k").mkdir()
    link_examples(store, "m", examples.keys, out / "k")
    (out / "i").mkdir()
    link_instructions(store, "m", made.keys, out / "i")
    whole_docs = rows(pd.read_parquet(out / "documents.parquet"))
    whole_chunks = rows(pd.read_parquet(out / "chunks.parquet"))
    split = policy.split_rules()
    held = {c["doc_id"] for c in whole_chunks if split.split_of(c["doc_id"]) == "golden"}
    sections = build_knowledge_examples(whole_chunks, knowledge, policy.title_template, held_out_docs=held)
    assert examples.counts == dict(sections.counts) and sections.counts["headings_kept"] > 30
    linked_sections = rows(pd.read_parquet(out / "k" / "examples.parquet"))
    assert sorted((e["doc_id"], json.loads(e["messages"])[1]["content"]) for e in linked_sections) == \
        sorted((e["doc_id"], json.loads(e["messages"])[1]["content"]) for e in sections.examples)
    whole = build_examples(whole_docs + rows(pd.read_parquet(out / "k" / "examples.parquet")), split, policy.text_strategy,
                           policy.title_template, golden_prompts=golden)
    table = pd.read_parquet(out / "i" / "examples.parquet")
    key = lambda e: (e["id"], e["prompt"], e["answer"], e["split"])  # noqa: E731
    assert sorted(key(e) for e in rows(table[EXAMPLE_COLUMNS])) == sorted(key(e) for e in whole.examples)
    assert set(table["split"]) == {"train", "validation"} and len(table) > 30
    assert made.ledger.to_dict() == whole.ledger.to_dict() and made.ledger.dropped["golden_contamination"] == 1
    assert made.ledger.dropped["held_out_for_golden"] > 0

    # the HF export (what training loads): each segment's Arrow files linked, then reviewers' examples, equal to
    # saving the linked table at once
    from datasets import load_from_disk

    from resources.datasets.export import save_splits
    from resources.datasets.segments import HF_EXTRA, link_instruction_hf

    feedback = table.iloc[:3].assign(id=["fb-1", "fb-2", "fb-3"], origin="feedback", split=["train", "train", "validation"])
    extra = link_instruction_hf(store, "m", made.keys, out / "i", feedback)
    save_splits(pd.concat([table, feedback], ignore_index=True), ["train", "validation"], out / "whole-hf", HF_EXTRA)
    linked, saved = load_from_disk(str(out / "i" / "hf")), load_from_disk(str(out / "whole-hf"))
    for name in ("train", "validation"):
        assert linked[name].to_list() == saved[name].to_list() and len(linked[name]) > 0
    assert len(list((out / "i" / "hf" / "train").glob("*.arrow"))) == 4  # three segments and the feedback
    assert dict(made.splits + Counter(extra["splits"])) == {n: len(saved[n]) for n in ("train", "validation")}
    assert dict(made.origins) == table["origin"].value_counts().to_dict() and extra["origins"] == {"feedback": 3}
    (out / "no-feedback").mkdir()
    link_instruction_hf(store, "m", made.keys, out / "no-feedback")
    assert load_from_disk(str(out / "no-feedback" / "hf"))["train"].to_list() == load_from_disk(str(out / "whole-hf"))["train"].to_list()[:-2]

    # the checks over parts: passages against their documents, examples against the golden prompts, a part each
    from resources.datasets.segments import contamination_verdicts
    from resources.knowledge.segments import chunk_trace_verdicts

    traced = chunk_trace_verdicts(store, "m", out / "chunks.parquet", out / "documents.parquet", 128)
    assert [p for v in traced.verdicts for p in v["problems"]] == [] and traced.made == 3
    assert sum(v["chunks"] for v in traced.verdicts) == len(whole_chunks)
    clean = contamination_verdicts(store, "m", out / "i" / "examples.parquet", golden)
    assert sum(v["contaminated"] for v in clean.verdicts) == 0 and sum(v["examples"] for v in clean.verdicts) == len(table)
    for name, column, value in (("chunks.parquet", "text", "a span that is not the document's"),
                                ("i/examples.parquet", "prompt", golden[0])):
        part = sorted((out / name).glob("*.parquet"))[1]  # replaced, as a bug upstream would (never written through)
        changed = pd.read_parquet(part).assign(**{column: lambda df: [value] + list(df[column])[1:]})
        part.unlink()
        changed.to_parquet(part)
    traced = chunk_trace_verdicts(store, "m", out / "chunks.parquet", out / "documents.parquet", 128)
    assert (traced.made, traced.reused) == (1, 2) and "text differs" in " ".join(p for v in traced.verdicts for p in v["problems"])
    dirty = contamination_verdicts(store, "m", out / "i" / "examples.parquet", golden)
    assert (dirty.made, sum(v["contaminated"] for v in dirty.verdicts)) == (1, 1)

    # the dataset card's token lengths: counted once per segment, the card equal to one counted from the whole table
    from resources.datasets.card import CARD_COLUMNS, build_card
    from resources.datasets.segments import segment_lengths

    counted = segment_lengths(store, "m", made.keys, smol_tokenizer)
    assert (counted.made, counted.reused) == (3, 0)
    assert (segment_lengths(store, "m", made.keys, smol_tokenizer).made, len(counted.lengths["train"])) == (0, made.splits["train"])
    card = lambda examples, lengths=None: build_card(examples, table.iloc[:2], smol_tokenizer, {"exact_duplicate": 1}, 40,  # noqa: E731
                                                     {}, {}, 10, lengths)
    assert card(table[CARD_COLUMNS], counted.lengths) == card(table)
    with pytest.raises(ValueError, match="token lengths were given for"):
        card(table[CARD_COLUMNS], {"train": counted.lengths["train"][:-1], "validation": counted.lengths["validation"]})

    *_, again = build(["b0", "b1", "b2"], golden + ["What is new in this release?"])
    assert (again.made, again.reused) == (3, 0)  # the guard changed: every segment is made again


def test_a_growing_golden_hold_out_makes_again_only_the_segments_that_may_duplicate_it(tmp_path, smol_tokenizer):
    """Held-out golden questions are not in the segments' keys: a batch whose hold-out adds questions makes its own
    segment, and again only the segments holding a prompt that shares a key or LSH band with a held-out question
    (read from their signature tables), guarded against those. The linked examples equal a whole build guarded
    against every golden question, exact and near duplicates dropped as contamination."""
    import pandas as pd

    from helpers import package_readmes, signed_batches
    from resources.curation.corpus import build_corpus
    from resources.curation.curator import TextCurator
    from resources.datasets.builder import EXAMPLE_COLUMNS, build_examples
    from resources.datasets.policy import DatasetPolicy
    from resources.datasets.segments import instruction_segments, link_instructions
    from resources.knowledge.chunking import ChunkRules, Chunker
    from resources.knowledge.policy import KnowledgePolicy
    from resources.knowledge.segments import example_segments, chunk_segments
    from resources.records import rows
    from resources.segments import EXAMPLE_SEGMENTS, INSTRUCTION_SEGMENTS, segment_dir
    from resources.storage import ArtifactStore

    docs = package_readmes(30)
    batches = {f"b{b}": [dict(d, batch=f"b{b}") for d in docs[b * 10 : (b + 1) * 10]] for b in range(3)}
    curator, store = TextCurator(), ArtifactStore(root=str(tmp_path / "artifacts"))
    signed, load = signed_batches(curator, batches)
    columns = list(docs[0]) + ["batch"]
    chunker = Chunker(smol_tokenizer.backend_tokenizer, ChunkRules(max_tokens=128, overlap_tokens=16))
    policy, knowledge = DatasetPolicy(validation_fraction=0.2, golden_holdout_fraction=0.1), HEADINGS
    curated = ["How do I reset my password?"]

    def build(names, held_out):
        corpus = build_corpus(curator, store, "m", [(b, "v1") for b in names], load, columns)
        chunks = chunk_segments(store, "m", corpus.chains, chunker, {"rules": "128/16"})
        examples = example_segments(store, "m", chunks.keys, knowledge, policy.title_template, policy.split_rules())
        made = instruction_segments(store, "m", corpus.chains, examples.keys, policy, curated, held_out)
        return corpus, examples, made

    first = ["What does the zebra-keeping handbook say about feeding at night?"]
    _, _, made = build(["b0", "b1"], first)
    assert (made.made, made.guarded) == (2, 0)
    prompts = [list(pd.read_parquet(segment_dir(store, f"m/{INSTRUCTION_SEGMENTS}", k) / "examples.parquet")["prompt"])
               for k in made.keys]
    exact = prompts[0][0].upper() + " !!"  # the same normalised text as a b0 prompt
    words = prompts[1][-1].split()
    near = " ".join(words[:-1] + [words[-1] + "s"]) if len(" ".join(words)) > 40 else prompts[1][-1] + " please"
    held_out = first + [exact, near]
    before = made.keys
    corpus, examples, made = build(["b0", "b1", "b2"], held_out)
    changed = [i for i, k in enumerate(made.keys[:2]) if k != before[i]]
    assert changed == [0, 1] and made.reused == 2  # b0 and b1 made again, guarded; b2's own segment (maybe guarded)
    assert made.made == 1 + made.guarded and made.guarded <= 3

    out = tmp_path / "i"
    out.mkdir()
    link_instructions(store, "m", made.keys, out)
    table = pd.read_parquet(out / "examples.parquet")
    documents = [d for b in ("b0", "b1", "b2") for d in signed[b]]
    sections = [e for k in examples.keys
                for e in rows(pd.read_parquet(segment_dir(store, f"m/{EXAMPLE_SEGMENTS}", k) / "examples.parquet"))]
    whole = build_examples(documents + sections, policy.split_rules(), policy.text_strategy, policy.title_template,
                           golden_prompts=curated + held_out)
    key = lambda e: (e["id"], e["prompt"], e["answer"], e["split"])  # noqa: E731
    assert sorted(key(e) for e in rows(table[EXAMPLE_COLUMNS])) == sorted(key(e) for e in whole.examples)
    assert made.ledger.to_dict() == whole.ledger.to_dict() and made.ledger.dropped["golden_contamination"] >= 2
    assert prompts[0][0] not in set(table["prompt"]) and prompts[1][-1] not in set(table["prompt"])

    # a further held-out question that duplicates nothing: every segment reused, the guarded ones included
    _, _, again = build(["b0", "b1", "b2"], held_out + ["What does the zebra-keeping handbook say about stripes?"])
    assert (again.made, again.guarded, again.keys) == (0, made.guarded, made.keys)

    # the blocking check: each part's signatures made once by the check, candidates confirmed, equal to checking
    # every prompt; an unguarded table (b0's segment before the hold-out) is caught
    from resources.datasets.builder import contamination, golden_guard
    from resources.datasets.segments import contamination_verdicts

    golden = curated + held_out
    checked = contamination_verdicts(store, "m", out / "examples.parquet", golden)
    assert sum(v["contaminated"] for v in checked.verdicts) == 0 and sum(v["examples"] for v in checked.verdicts) == len(table)
    unguarded = segment_dir(store, f"m/{INSTRUCTION_SEGMENTS}", before[0]) / "examples.parquet"
    guard = golden_guard(golden)
    plain = sum(1 for prompt in pd.read_parquet(unguarded)["prompt"] if contamination(guard, prompt))
    caught = contamination_verdicts(store, "m", unguarded, golden)
    assert plain >= 1 and [v["contaminated"] for v in caught.verdicts] == [plain]
    kept = len(store.partitions("m/check_verdicts"))
    grown = contamination_verdicts(store, "m", unguarded, golden + ["What does the zebra-keeping handbook say about ears?"])
    assert grown.made == 1 and [v["contaminated"] for v in grown.verdicts] == [plain]
    assert len(store.partitions("m/check_verdicts")) == kept + 1  # a new verdict; the part's signatures reused


def test_the_golden_hold_out_is_asked_and_redacted_once_per_segment_and_equals_a_whole_build(tmp_path, smol_tokenizer,
                                                                                             redactor):
    """The held-out questions of a new batch are made and redacted with the real Presidio redactor once, in their
    corpus segment: the segments' examples and redaction counts equal asking about and redacting the whole corpus
    at once (a held-out chat with an e-mail address included); forget reaches the segments."""
    from collections import Counter

    from helpers import package_readmes, signed_batches
    from resources.curation.corpus import build_corpus
    from resources.curation.curator import TextCurator
    from resources.datasets.builder import held_out_golden
    from resources.datasets.policy import DatasetPolicy
    from resources.datasets.segments import golden_segments
    from resources.governance.forget import reach
    from resources.knowledge.chunking import ChunkRules, Chunker
    from resources.knowledge.examples import held_out_sections
    from resources.knowledge.policy import KnowledgePolicy
    from resources.knowledge.segments import chunk_segments
    from resources.storage import ArtifactStore

    policy, knowledge = DatasetPolicy(validation_fraction=0.2, golden_holdout_fraction=0.2), HEADINGS
    rules = policy.split_rules()
    faq_id = next(f"faq-{i}" for i in range(1000) if rules.split_of(f"faq-{i}") == "golden")
    docs = package_readmes(24)
    faq = {**docs[0], "doc_id": faq_id, "external_id": "F-9", "kind": "instruction", "title": None, "text": "Q\n\nA",
           "messages": '[{"role": "user", "content": "Who handles refunds?"}, '
                       '{"role": "assistant", "content": "Write to jane.doe@example.com, she answers within a day."}]'}
    batches = {"b0": docs[:12] + [faq], "b1": docs[12:]}
    batches = {b: [dict(d, batch=b) for d in ds] for b, ds in batches.items()}
    curator, store = TextCurator(), ArtifactStore(root=str(tmp_path / "artifacts"))
    signed, load = signed_batches(curator, batches)
    columns = list(faq) + ["batch"]
    chunker = Chunker(smol_tokenizer.backend_tokenizer, ChunkRules(max_tokens=128, overlap_tokens=16))

    def build(names):
        corpus = build_corpus(curator, store, "m", [(b, "v1") for b in names], load, columns)
        chunks = chunk_segments(store, "m", corpus.chains, chunker, {"rules": "128/16"})
        return chunks, golden_segments(store, "m", corpus.chains, chunks.keys, policy, knowledge, redactor)

    _, first = build(["b0"])
    chunks, held = build(["b0", "b1"])
    assert (first.made, held.made, held.reused) == (1, 1, 1)

    whole_chunks = [c for k in chunks.keys for c in chunk_rows(store, k)]
    whole = list(held_out_golden([d for b in ("b0", "b1") for d in signed[b]], rules, policy.text_strategy, policy.title_template))
    whole += held_out_sections(whole_chunks, rules, knowledge, policy.title_template)
    found = redactor.redact_fields(whole, ("prompt", "answer"))
    key = lambda e: (e["id"], e["prompt"], e["answer"], e["source_doc_id"], e["origin"], list(e["tags"]))  # noqa: E731
    assert sorted(map(key, held.examples.to_dict("records"))) == sorted(map(key, whole))
    assert held.redactions == Counter(found) and held.redactions["EMAIL_ADDRESS"] >= 1
    assert len(held.examples) > 3 and "jane.doe@example.com" not in " ".join(held.examples["answer"])
    assert "Who handles refunds?" in set(held.examples["prompt"])
    assert held.examples["messages"].iloc[0][0]["role"] == "user"
    assert "m/golden_segments" in reach(store, ["m"], {faq_id})


def test_the_teachers_golden_hold_out_is_written_once_per_segment_and_equals_a_whole_build(tmp_path, smol_tokenizer,
                                                                                            redactor):
    """knowledge.golden_from 'teacher' one corpus segment at a time, against the scripted teacher on 127.0.0.1 (a large
    teacher LLM cannot run here): the segments' golden rows equal asking about the whole corpus's held-out passages
    in order and redacting them (a question repeated in a later batch dropped as one kept before, an e-mail address
    in a teacher's answer redacted); one more batch asks about its own held-out passages only; a segment the cap
    cut short is stored apart and made again by the next run."""
    from collections import Counter

    from helpers import package_readmes, signed_batches
    from resources.curation.corpus import build_corpus
    from resources.curation.curator import TextCurator
    from resources.datasets.policy import DatasetPolicy
    from resources.datasets.segments import golden_segments
    from resources.knowledge.chunking import ChunkRules, Chunker
    from resources.knowledge.examples import held_out_qa
    from resources.knowledge.policy import KnowledgePolicy
    from resources.knowledge.segments import chunk_segments
    from resources.knowledge.teacher import TeacherModel
    from resources.storage import ArtifactStore
    from servers.openai_server import serve
    from servers.scripted_teacher import build_teacher

    policy = DatasetPolicy(validation_fraction=0.1, golden_holdout_fraction=0.3, text_strategy="sections")
    knowledge = KnowledgePolicy(golden_from="teacher")
    rules = policy.split_rules()
    held_ids = [f"held-{i}" for i in range(1000) if rules.split_of(f"held-{i}") == "golden"][:3]
    docs = package_readmes(9)
    planted = lambda doc_id, text: {**docs[0], "doc_id": doc_id, "source_path": f"{doc_id}.md", "title": doc_id,  # noqa: E731
                                    "source_sha256": doc_id.ljust(64, "0"), "text": text}
    batches = {"b0": docs[:4] + [planted(held_ids[0], "# Refunds\n\nRefunds are approved by jane.doe@example.com within a day.\n")],
               "b1": docs[4:7] + [planted(held_ids[1], "# Again\n\nRefunds are approved by the finance team, always.\n")],
               "b2": docs[7:9]}
    batches = {b: [dict(d, batch=b) for d in ds] for b, ds in batches.items()}
    curator, store = TextCurator(), ArtifactStore(root=str(tmp_path / "artifacts"))
    _, load = signed_batches(curator, batches)
    chunker = Chunker(smol_tokenizer.backend_tokenizer, ChunkRules(max_tokens=128, overlap_tokens=16))
    key = lambda e: (e["id"], e["prompt"], e["answer"], e["source_doc_id"], e["origin"])  # noqa: E731

    with serve(build_teacher()) as url:
        teacher = lambda **caps: TeacherModel(base_url=url, model="teacher", cache_dir=str(tmp_path / "cache"), **caps)  # noqa: E731

        def build(names, **caps):
            corpus = build_corpus(curator, store, "m", [(b, "v1") for b in names], load, list(docs[0]) + ["batch"])
            chunks = chunk_segments(store, "m", corpus.chains, chunker, {"rules": "128/16"})
            session = teacher(**caps).session()
            return chunks, golden_segments(store, "m", corpus.chains, chunks.keys, policy, knowledge, redactor,
                                           session=session, teacher_identity=teacher().identity()), session

        def whole(chunks):
            written, made = held_out_qa([c for k in chunks.keys for c in chunk_rows(store, k)], rules, knowledge,
                                        teacher().session())
            return written, made, Counter(redactor.redact_fields(written, ("prompt", "answer")))

        _, first, _ = build(["b0", "b1"])
        chunks, held, session = build(["b0", "b1", "b2"])
        assert (held.made, held.reused, held.partial) == (1, 2, 0) and session.usage.cached == 0
        written, made, found = whole(chunks)
        assert sorted(map(key, held.examples.to_dict("records"))) == sorted(map(key, written))
        assert (held.counts["qa_generated"], held.counts["qa_kept"]) == (made.counts["qa_generated"], made.counts["qa_kept"])
        assert held.redactions == found and held.redactions["EMAIL_ADDRESS"] >= 1
        prompts = list(held.examples["prompt"])
        assert prompts.count("What is stated about Refunds are approved by?") == 1 and all(o == "holdout:qa" for o in held.examples["origin"])
        assert "jane.doe@example.com" not in " ".join(held.examples["answer"]) and held.counts["qa_dropped_duplicate_question"] >= 1

        chunks, cut, session = build(["b0", "b1", "b2"], max_calls_per_run=1)
        assert (cut.made, cut.reused, cut.partial) == (0, 3, 0)  # nothing to ask: every segment held
        batches["b3"] = [dict(d, batch="b3") for d in package_readmes(11)[9:11] + [planted(held_ids[2], "# Late\n\nLate invoices are charged a fee of 2%.\n")]]
        _, load = signed_batches(curator, batches)
        chunks, cut, session = build(["b0", "b1", "b2", "b3"], max_calls_per_run=1)
        assert (cut.made, cut.partial) == (1, 1) and cut.keys[:3] == held.keys and "max_calls_per_run" in session.usage.stopped
        chunks, again, _ = build(["b0", "b1", "b2", "b3"])
        assert (again.made, again.partial) == (1, 0) and again.keys[3] != cut.keys[3]
        written, _, _ = whole(chunks)
        assert sorted(map(key, again.examples.to_dict("records"))) == sorted(map(key, written))


def chunk_rows(store, key):
    import pandas as pd

    from resources.records import rows
    from resources.segments import CHUNK_SEGMENTS, segment_dir

    return rows(pd.read_parquet(segment_dir(store, f"m/{CHUNK_SEGMENTS}", key) / "chunks.parquet"))


def test_an_empty_split_of_the_hf_export_loads_as_zero_rows(tmp_path):
    """datasets writes no Arrow file for an empty split and then cannot load it: the export writes an empty one."""
    from datasets import load_from_disk

    from resources.datasets.builder import EXAMPLE_COLUMNS
    from resources.datasets.export import link_splits, save_splits
    from resources.datasets.segments import HF_EXTRA
    from resources.records import frame

    row = {c: "x" for c in EXAMPLE_COLUMNS} | {"id": "e1", "split": "train",
                                              "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    sizes = save_splits(frame([row], EXAMPLE_COLUMNS), ["train", "validation"], tmp_path / "one", HF_EXTRA)
    save_splits(frame([], EXAMPLE_COLUMNS), ["train", "validation"], tmp_path / "none", HF_EXTRA)
    assert sizes == {"train": 1, "validation": 0}
    loaded = load_from_disk(str(tmp_path / "one"))
    assert len(loaded["validation"]) == 0 and loaded["validation"].features == loaded["train"].features
    link_splits([tmp_path / "none", tmp_path / "one", tmp_path / "none"], ["train", "validation"], tmp_path / "all", "f" * 16)
    linked = load_from_disk(str(tmp_path / "all"))
    assert linked["train"]["id"] == ["e1"] and len(linked["validation"]) == 0


def test_the_card_reads_diversity_from_a_bounded_sample_chosen_by_hash():
    import pandas as pd

    from resources.datasets.card import diversity_sample

    train = pd.DataFrame({"id": [f"e{i}" for i in range(40)], "prompt": [f"question {i}" for i in range(40)]})
    sample = diversity_sample(train, limit=10)
    assert len(sample) == 10 and list(sample.index) == sorted(sample.index)  # in the dataset's order
    assert diversity_sample(train.iloc[::-1], limit=10)["id"].tolist()[::-1] == sample["id"].tolist()  # order-independent
    assert diversity_sample(train, limit=40) is train


def test_a_check_over_parts_verifies_each_content_once_and_a_replaced_part_again(tmp_path):
    import pandas as pd

    from resources.segments import part_verdicts, table_parts
    from resources.storage import ArtifactStore

    store = ArtifactStore(root=str(tmp_path / "artifacts"))
    table = tmp_path / "examples.parquet"
    table.mkdir()
    for i in range(3):
        pd.DataFrame({"prompt": [f"question {i}", "golden"] if i == 1 else [f"question {i}"]}).to_parquet(table / f"part-{i:06d}.parquet")
    seen = []

    def verify(group):
        seen.append(group[0].name)
        prompts = pd.read_parquet(group[0])["prompt"]
        return {"examples": len(prompts), "hits": int((prompts == "golden").sum())}

    check = lambda context="g1": part_verdicts(store, "m", "c", [(p,) for p in table_parts(table)], context, verify)  # noqa: E731
    first = check()
    assert (first.made, first.reused, [v["hits"] for v in first.verdicts]) == (3, 0, [0, 1, 0])
    again = check()
    assert (again.made, again.reused, again.verdicts) == (0, 3, first.verdicts) and len(seen) == 3
    (table / "part-000002.parquet").unlink()  # a part replaced (never written through: parts are links)
    pd.DataFrame({"prompt": ["golden"]}).to_parquet(table / "part-000002.parquet")
    replaced = check()
    assert (replaced.made, [v["hits"] for v in replaced.verdicts], seen[-1]) == (1, [0, 1, 1], "part-000002.parquet")
    assert check("g2").made == 3  # another context (other golden prompts): verified again


def test_the_dataset_suite_validates_each_part_once_and_ids_across_parts(tmp_path):
    import pandas as pd
    from dagster import AssetKey

    from assets.checks import parts_suite_result
    from resources.artifacts import Artifact
    from resources.quality import example_expectations
    from resources.storage import ArtifactStore

    store = ArtifactStore(root=str(tmp_path / "artifacts"))
    row = lambda i, **kw: {"id": f"e{i}", "split": "train", "prompt": f"q{i}", "answer": f"a{i}", **kw}  # noqa: E731

    def check(parts, version):
        artifact = Artifact.create(store, AssetKey(["m", "instruction_dataset"]), version)
        with artifact.writing() as out:
            (out / "examples.parquet").mkdir()
            for n, rows in enumerate(parts):
                pd.DataFrame(rows).to_parquet(out / "examples.parquet" / f"part-{n:06d}.parquet")
        return parts_suite_result(artifact, "m", "examples.parquet", "suite", example_expectations(("train", "validation"), "rows"),
                                  example_expectations(("train", "validation"), "table"), ["id", "split", "prompt", "answer"], ["id"])

    good = [[row(0), row(1)], [row(2)]]
    first = check(good, "v1")
    assert first.passed and (first.metadata["parts_validated_now"].value, first.metadata["rows"].value) == (2, 3)
    again = check(good + [[row(3)]], "v2")  # one more batch: one more part validated
    assert again.passed and (again.metadata["parts_validated_now"].value, again.metadata["parts_validated_before"].value) == (1, 2)
    empty_prompt = check(good + [[row(4, prompt="")]], "v3")
    assert not empty_prompt.passed and "prompt" in empty_prompt.metadata["failures"].value
    duplicate = check(good + [[row(1)]], "v4")  # each part valid on its own; the id is repeated across parts
    assert not duplicate.passed and "unique" in duplicate.metadata["failures"].value


def test_the_cards_diversity_equals_counting_words_and_bigrams_plainly():
    """The card's diversity (computed over factorized words) equals the plain count on real READMEs: vocabulary,
    type/token ratio, distinct bigrams across the texts in order, the top content words with ties in order of first
    appearance."""
    import re
    from collections import Counter

    from helpers import package_readmes
    from resources.datasets.card import STOPWORDS, diversity

    texts = [d["text"] for d in package_readmes(40)] + ["Zeta alpha zeta ALPHA beta", "", "x"]
    words = [w for t in texts for w in re.findall(r"[a-z][a-z'-]+", t.lower())]
    content = Counter(w for w in words if w not in STOPWORDS and len(w) > 2)
    assert diversity(texts) == {
        "vocabulary_size": len(set(words)), "type_token_ratio": round(len(set(words)) / len(words), 4),
        "distinct_2": round(len(set(zip(words, words[1:]))) / (len(words) - 1), 4),
        "top_terms": [w for w, _ in content.most_common(15)]}
    assert diversity(["alpha beta gamma beta alpha delta"])["top_terms"] == ["alpha", "beta", "gamma", "delta"]
    assert diversity([])["vocabulary_size"] == 0 and diversity(["a"])["distinct_2"] == 0.0
