"""Runs of segments merged as history grows: fewer parts, the same tables, made once, reached by forget."""

from resources.segments import RUN_FANOUT, runs
from helpers import HEADINGS


def test_runs_cover_the_pieces_in_aligned_blocks_that_later_histories_keep():
    assert runs(1000) == [(0, 256), (256, 512), (512, 768)] + [(768 + 16 * i, 784 + 16 * i) for i in range(14)] + \
        [(i, i + 1) for i in range(992, 1000)]
    assert runs(0) == [] and runs(15) == [(i, i + 1) for i in range(15)] and runs(16) == [(0, 16)]
    for n in range(1, 700, 7):
        blocks = runs(n)
        assert [lo for lo, _ in blocks] == [0] + [hi for _, hi in blocks[:-1]] and blocks[-1][1] == n
        assert all(lo % (hi - lo) == 0 and (hi - lo) in (1, RUN_FANOUT, RUN_FANOUT ** 2) for lo, hi in blocks)
        for m in (n + 1, n + 17, n + 300):  # a later history merges further, never splits a block it has made
            later = runs(m)
            assert all(any(a <= lo and hi <= b for a, b in later) for lo, hi in blocks)


def test_a_long_history_links_merged_runs_equal_to_its_segments_and_to_a_whole_build(tmp_path, smol_tokenizer, monkeypatch):
    """34 batches: every stage's artifact links 4 parts (two runs of 16, two segments), reads the same rows, vectors,
    HF export, card lengths and summaries as its 34 segments and as a whole build; one more batch reuses the runs;
    a run too large stays as its segments; forget reaches the runs."""
    import numpy as np
    import pandas as pd
    from datasets import load_from_disk

    import resources.segments as segments
    from helpers import package_readmes, signed_batches
    from resources.curation.corpus import build_corpus, link_segments
    from resources.curation.curator import TextCurator
    from resources.datasets.builder import EXAMPLE_COLUMNS, build_examples
    from resources.datasets.card import token_lengths
    from resources.datasets.policy import DatasetPolicy
    from resources.datasets.segments import (contamination_verdicts, instruction_segments, link_instruction_hf,
                                             link_instructions, segment_lengths)
    from resources.governance.forget import reach
    from resources.knowledge.chunking import ChunkRules, Chunker
    from resources.knowledge.policy import KnowledgePolicy
    from resources.knowledge.segments import chunk_segments, example_segments, link_chunks
    from resources.records import frame, rows
    from resources.retrieval.index import KnowledgeIndexer, load_vectors
    from resources.retrieval.segments import vector_segments, write_index
    from resources.storage import ArtifactStore

    docs = package_readmes(35)
    assert len(docs) == 35
    names = [f"b{b:02d}" for b in range(35)]
    batches = {name: [dict(d, batch=name) for d in docs[b : b + 1]] for b, name in enumerate(names)}
    batches["b20"].append(dict(batches["b03"][0], batch="b20", doc_id="copy"))  # dropped as a duplicate
    curator, store, indexer = TextCurator(), ArtifactStore(root=str(tmp_path / "artifacts")), KnowledgeIndexer()
    signed, load = signed_batches(curator, batches)
    columns = list(docs[0]) + ["batch"]
    chunker = Chunker(smol_tokenizer.backend_tokenizer, ChunkRules(max_tokens=256, overlap_tokens=16))
    policy, knowledge = DatasetPolicy(validation_fraction=0.2, golden_holdout_fraction=0.1), HEADINGS
    split = policy.split_rules()

    def build(order, out):
        corpus = build_corpus(curator, store, "m", [(b, "v1") for b in order], load, columns)
        chunks = chunk_segments(store, "m", corpus.chains, chunker, {"rules": "256/16"})
        vectors = vector_segments(store, "m", chunks.keys, indexer)
        examples = example_segments(store, "m", chunks.keys, knowledge, policy.title_template, split)
        made = instruction_segments(store, "m", corpus.chains, examples.keys, policy, [])
        lengths = segment_lengths(store, "m", made.keys, smol_tokenizer)
        out.mkdir()
        link_segments(store, "m", corpus.chains, "kept.parquet", out, frame([], columns), "documents.parquet")
        link_chunks(store, "m", chunks.keys, out)
        write_index(store, "m", vectors.keys, out)
        (out / "i").mkdir()
        link_instructions(store, "m", made.keys, out / "i")
        link_instruction_hf(store, "m", made.keys, out / "i")
        return corpus, chunks, vectors, made, lengths

    corpus, chunks, vectors, made, lengths = build(names[:34], tmp_path / "v34")
    out = tmp_path / "v34"
    for table in ("documents.parquet", "chunks.parquet", "passages.parquet", "i/examples.parquet"):
        assert sorted(p.name for p in (out / table).glob("*.parquet")) == \
            ["part-000000.parquet", "part-000016.parquet", "part-000032.parquet", "part-000033.parquet"], table
    assert len(list((out / "vectors").glob("*.npy"))) == 4

    # the same as the whole corpus built at once
    whole_docs = [d for b in names[:34] for d in signed[b] if d["doc_id"] != "copy"]
    assert list(pd.read_parquet(out / "documents.parquet")["doc_id"]) == [d["doc_id"] for d in whole_docs]
    whole, _ = chunker.chunk_all(whole_docs)
    linked = pd.read_parquet(out / "chunks.parquet")
    assert list(linked["chunk_id"]) == [c["chunk_id"] for c in whole] and list(linked["text"]) == [c["text"] for c in whole]
    assert list(pd.read_parquet(out / "passages.parquet")["chunk_id"]) == [c["chunk_id"] for c in whole]
    assert np.allclose(load_vectors(out), indexer.embed([c["text"] for c in whole]), atol=1e-5)
    assert chunks.stats["chunks"] == len(whole) and chunks.stats["tokens_max"] == int(linked["tokens"].max())
    assert chunks.stats["chunks_per_document_max"] == int(linked.groupby("doc_id").size().max())
    assert sorted(linked["tokens"])[(len(linked) - 1) // 2] == chunks.stats["tokens_p50"]
    table = pd.read_parquet(out / "i" / "examples.parquet")
    sections = rows(pd.read_parquet(out / "chunks.parquet"))
    from resources.knowledge.examples import build_knowledge_examples

    held = {c["doc_id"] for c in sections if split.split_of(c["doc_id"]) == "golden"}
    whole_sections = build_knowledge_examples(sections, knowledge, policy.title_template, held_out_docs=held)
    expected = build_examples(whole_docs + whole_sections.examples, split, policy.text_strategy, policy.title_template,
                              golden_prompts=[])
    key = lambda e: (e["id"], e["prompt"], e["answer"], e["split"])  # noqa: E731
    assert sorted(key(e) for e in rows(table[EXAMPLE_COLUMNS])) == sorted(key(e) for e in expected.examples)
    assert made.ledger.to_dict() == expected.ledger.to_dict() and len(table) > 100
    assert dict(made.splits) == {s: int((table["split"] == s).sum()) for s in ("train", "validation")}
    hf = load_from_disk(str(out / "i" / "hf"))
    for name in ("train", "validation"):
        assert list(hf[name]["id"]) == list(table.loc[table["split"] == name, "id"])
        assert lengths.lengths[name] == token_lengths(table[table["split"] == name], smol_tokenizer)
    # a check over the linked table verifies 4 parts, each once
    verdicts = contamination_verdicts(store, "m", out / "i" / "examples.parquet", ["How do I reset my password?"])
    assert (verdicts.made, sum(v["examples"] for v in verdicts.verdicts)) == (4, len(table))

    # one more batch: its own segment of each stage made, the runs reused as they are (the same files)
    run = next(p for p in (out / "chunks.parquet").glob("part-000016.parquet"))
    _, chunks2, _, made2, _ = build(names, tmp_path / "v35")
    assert (chunks2.made, made2.made) == (1, 1)
    assert (tmp_path / "v35" / "chunks.parquet" / "part-000016.parquet").stat().st_ino == run.stat().st_ino
    assert len(list((tmp_path / "v35" / "chunks.parquet").glob("*.parquet"))) == 5

    # a run whose files exceed the bound stays as its segments: the same table from 34 parts
    monkeypatch.setattr(segments, "RUN_MAX_BYTES", 0)
    (tmp_path / "plain").mkdir()
    link_chunks(store, "m", chunks.keys, tmp_path / "plain")
    assert len(list((tmp_path / "plain" / "chunks.parquet").glob("*.parquet"))) == 4  # runs already made are reused
    fresh = ArtifactStore(root=str(tmp_path / "fresh"))
    for k in chunks.keys:  # the 34 segments alone, in a store holding no run
        src = store.partition_dir("m/chunk_segments", k)
        with fresh.writing("m/chunk_segments", k) as o:
            for f in src.iterdir():
                (o / f.name).write_bytes(f.read_bytes())
    (tmp_path / "unmerged").mkdir()
    link_chunks(fresh, "m", chunks.keys, tmp_path / "unmerged")
    assert len(list((tmp_path / "unmerged" / "chunks.parquet").glob("*.parquet"))) == 34
    assert pd.read_parquet(tmp_path / "unmerged" / "chunks.parquet").equals(linked)

    # forget reaches a document's copies in the runs, not only in its own segment
    gone = {next(d["doc_id"] for b in names[:16] for d in signed[b] if d["doc_id"] != "copy"
                 and split.split_of(d["doc_id"]) != "golden")}  # in the first run, with an instruction example
    found = reach(store, ["m"], gone)
    own = set(corpus.chains) | set(chunks.keys) | set(vectors.keys) | set(made.keys)
    for asset, table, column in (("m/corpus_segments", "kept.parquet", "doc_id"), ("m/chunk_segments", "chunks.parquet", "doc_id"),
                                 ("m/passage_vectors", "passages.parquet", "doc_id"),
                                 ("m/instruction_segments", "examples.parquet", "source_doc_id")):
        run_keys = [k for k in found[asset] if k not in own]
        assert len(run_keys) == 1 and len(found[asset]) == 2, asset  # the segment and the run of 16 holding it
        held_rows = pd.read_parquet(store.partition_dir(asset, run_keys[0]) / table)
        assert gone <= set(held_rows[column]) and len(held_rows) > 2, asset


def test_grounded_strategies_are_made_per_segment_among_the_passages_up_to_it(tmp_path, smol_tokenizer):
    """raft, cloze and continued pre-training one chunk segment at a time: each segment's examples are those of its
    own passages, grounded among the passages of the segments up to and including it (an index embedded here,
    apart from the store's); one more batch makes its own segment only and grounds its questions among every
    earlier passage too; a policy with `qa` is refused (it asks a teacher about the whole corpus)."""
    import json
    from functools import partial

    import pandas as pd
    import pytest

    from helpers import package_readmes, signed_batches
    from resources.curation.corpus import build_corpus
    from resources.curation.curator import TextCurator
    from resources.datasets.policy import DatasetPolicy
    from resources.knowledge.chunking import ChunkRules, Chunker
    from resources.knowledge.examples import build_knowledge_examples
    from resources.knowledge.policy import KnowledgePolicy
    from resources.knowledge.segments import chunk_segments, example_segments
    from resources.records import rows
    from resources.retrieval.index import PASSAGE_COLUMNS, DenseIndex, KnowledgeIndexer, LoadedIndex
    from resources.retrieval.segments import retrieve_upto, vector_segments
    from resources.segments import CHUNK_SEGMENTS, EXAMPLE_SEGMENTS, segment_dir
    from resources.storage import ArtifactStore

    docs = package_readmes(12)
    names = ["b0", "b1", "b2"]
    batches = {name: [dict(d, batch=name) for d in docs[4 * b : 4 * b + 4]] for b, name in enumerate(names)}
    curator, store, indexer = TextCurator(), ArtifactStore(root=str(tmp_path / "artifacts")), KnowledgeIndexer()
    _, load = signed_batches(curator, batches)
    chunker = Chunker(smol_tokenizer.backend_tokenizer, ChunkRules(max_tokens=128, overlap_tokens=16))
    dataset = DatasetPolicy(golden_holdout_fraction=0.2)
    split = dataset.split_rules()
    policy = KnowledgePolicy(strategies=["headings", "raft", "cloze", "continued_pretraining"], raft_distractors=2)

    def build(order):
        corpus = build_corpus(curator, store, "m", [(b, "v1") for b in order], load, list(docs[0]) + ["batch"])
        chunks = chunk_segments(store, "m", corpus.chains, chunker, {"rules": "128/16"})
        vectors = vector_segments(store, "m", chunks.keys, indexer)
        return chunks, example_segments(store, "m", chunks.keys, policy, dataset.title_template, split,
                                        retrieve_upto=partial(retrieve_upto, store, "m", indexer, vectors.keys),
                                        index_identity=indexer.identity())

    _, first = build(names[:2])
    chunks, made = build(names)
    assert (made.made, made.reused, made.keys[:2]) == (1, 2, first.keys)
    passages = [rows(pd.read_parquet(segment_dir(store, f"m/{CHUNK_SEGMENTS}", k) / "chunks.parquet")) for k in chunks.keys]
    held = {c["doc_id"] for segment in passages for c in segment if split.split_of(c["doc_id"]) == "golden"}
    own = lambda e: (e["doc_id"], e["messages"])  # noqa: E731
    for i, key in enumerate(made.keys):
        upto = [c for segment in passages[: i + 1] for c in segment]
        index = LoadedIndex(indexer, DenseIndex([c["chunk_id"] for c in upto], indexer.embed([c["text"] for c in upto])),
                            {c["chunk_id"]: {k: c.get(k) for k in PASSAGE_COLUMNS} for c in upto})
        expected = build_knowledge_examples(passages[i], policy, dataset.title_template, retrieve=index.passages,
                                            held_out_docs=held)
        stored = rows(pd.read_parquet(segment_dir(store, f"m/{EXAMPLE_SEGMENTS}", key) / "examples.parquet"))
        assert sorted(map(own, stored)) == sorted(map(own, expected.examples)), i
    kinds = {e["kind"] for e in stored}
    assert {"knowledge:raft", "knowledge:continued_pretraining"} <= kinds, kinds
    grounded = " ".join(json.loads(e["messages"])[0]["content"] for e in stored if e["kind"] in ("knowledge:raft", "knowledge:cloze"))
    assert any(c["text"][:200] in grounded for segment in passages[:2] for c in segment)  # earlier batches' passages
    assert made.counts["raft_kept"] > 0 and made.counts["continued_pretraining_kept"] > 0
    with pytest.raises(ValueError, match="retrieve distractors"):
        example_segments(store, "m", chunks.keys, policy, dataset.title_template, split)


def test_qa_is_asked_per_segment_deduplicated_against_earlier_segments_and_an_unfinished_one_is_made_again(tmp_path, smol_tokenizer):
    """The qa strategy one chunk segment at a time, against the scripted teacher on 127.0.0.1 (a large teacher LLM
    cannot run here), over package READMEs and two planted passages in different batches whose questions are the
    same: the segments' examples equal asking about the whole corpus in order (the later batch's duplicate question
    dropped as one kept before); one more batch asks about its own passages only; a batch the teacher's cap cut
    short is stored apart and made again, whole, by the next run."""
    import json

    import pandas as pd

    from helpers import package_readmes, signed_batches
    from resources.curation.corpus import build_corpus
    from resources.curation.curator import TextCurator
    from resources.datasets.policy import DatasetPolicy
    from resources.knowledge.chunking import ChunkRules, Chunker
    from resources.knowledge.examples import HeldOut, build_knowledge_examples, qa_examples
    from resources.knowledge.policy import KnowledgePolicy
    from resources.knowledge.segments import chunk_segments, example_segments
    from resources.knowledge.teacher import TeacherModel
    from resources.records import rows
    from resources.segments import CHUNK_SEGMENTS, EXAMPLE_SEGMENTS, segment_dir
    from resources.storage import ArtifactStore
    from servers.openai_server import serve
    from servers.scripted_teacher import build_teacher

    docs = package_readmes(8)
    planted = lambda i, text: {**docs[0], "doc_id": f"planted{i}", "source_path": f"planted{i}.md", "title": f"Planted {i}",  # noqa: E731
                                 "source_sha256": f"{i}" * 64, "text": text}
    batches = {"b0": docs[:3] + [planted(0, "# Backups\n\nBackups run every night and are kept for 30 days.\n")],
               "b1": docs[3:5] + [planted(1, "# Retention\n\nBackups run every night, the policy says, at two.\n")],
               "b2": docs[5:7], "b3": docs[7:8]}
    curator, store = TextCurator(), ArtifactStore(root=str(tmp_path / "artifacts"))
    _, load = signed_batches(curator, {b: [dict(d, batch=b) for d in ds] for b, ds in batches.items()})
    chunker = Chunker(smol_tokenizer.backend_tokenizer, ChunkRules(max_tokens=128, overlap_tokens=16))
    dataset = DatasetPolicy(golden_holdout_fraction=0.2)
    split = dataset.split_rules()
    policy = KnowledgePolicy(strategies=["headings", "qa"])
    own = lambda e: (e["doc_id"], e["messages"])  # noqa: E731

    app = build_teacher()
    with serve(app) as url:
        def build(order, **caps):
            corpus = build_corpus(curator, store, "m", [(b, "v1") for b in order], load, list(docs[0]) + ["batch"])
            chunks = chunk_segments(store, "m", corpus.chains, chunker, {"rules": "128/16"})
            teacher = TeacherModel(base_url=url, model="teacher", cache_dir=str(tmp_path / "cache"), **caps)
            session = teacher.session()
            made = example_segments(store, "m", chunks.keys, policy, dataset.title_template, split, session=session,
                                    teacher_identity=teacher.identity())
            return chunks, made, session

        def whole(chunks):
            """Asking about the whole corpus at once, in order (the teacher's replies from the cache)."""
            passages = [c for k in chunks.keys for c in rows(pd.read_parquet(
                segment_dir(store, f"m/{CHUNK_SEGMENTS}", k) / "chunks.parquet"))]
            out = build_knowledge_examples(passages, policy, dataset.title_template, held_out_docs=HeldOut(split))
            qa_examples(passages, policy, TeacherModel(base_url=url, model="teacher", cache_dir=str(tmp_path / "cache"))
                        .session(), HeldOut(split), out=out)
            return out

        def linked(made):
            return [e for k in made.keys for e in rows(pd.read_parquet(
                segment_dir(store, f"m/{EXAMPLE_SEGMENTS}", k) / "examples.parquet"))]

        _, first, _ = build(["b0", "b1"])
        judged = [p for p in app.state.prompts if "Question: What is stated about Backups run every night" in p]
        assert len(judged) == 1  # b0's question judged; b1's, a repeat of it, dropped before the judge is asked
        chunks, made, session = build(["b0", "b1", "b2"])
        assert (made.made, made.reused, made.partial, made.keys[:2]) == (1, 2, 0, first.keys)
        expected = whole(chunks)
        assert sorted(map(own, linked(made))) == sorted(map(own, expected.examples))
        assert made.counts["qa_kept"] == expected.counts["qa_kept"] > 5
        asked = [c for c in rows(pd.read_parquet(segment_dir(store, f"m/{CHUNK_SEGMENTS}", chunks.keys[2]) / "chunks.parquet"))
                 if c["kind"] == "text" and split.split_of(c["doc_id"]) != "golden"]
        dropped = [rows(pd.read_parquet(segment_dir(store, f"m/{EXAMPLE_SEGMENTS}", k) / "dropped.parquet")) for k in made.keys]
        repeated = [[d for d in part if "duplicates a question kept before" in d["detail"]] for part in dropped]
        assert session.usage.cached + session.usage.calls == len(asked) + made.counts["qa_generated"] - \
            first.counts["qa_generated"] - len(repeated[2])  # its passages, their pairs judged but for repeated ones
        questions = [json.loads(e["messages"])[0]["content"] for e in linked(made) if e["kind"] == "knowledge:qa"]
        assert questions.count("What is stated about Backups run every night?") == 1  # b1's duplicate dropped
        assert any("Backups run every night" in d["detail"] and d["reason"] == "duplicate_question" for d in repeated[1])

        chunks, cut, session = build(["b0", "b1", "b2", "b3"], max_calls_per_run=2)  # a new batch, the cap too low
        assert "max_calls_per_run" in session.usage.stopped and (cut.made, cut.reused, cut.partial) == (1, 3, 1)
        assert cut.keys[:3] == made.keys and cut.counts["qa_dropped_budget_exhausted"] > 0
        _, again, session = build(["b0", "b1", "b2", "b3"])
        assert (again.made, again.reused, again.partial) == (1, 3, 0) and again.keys[3] != cut.keys[3]
        assert sorted(map(own, linked(again))) == sorted(map(own, whole(chunks).examples))
        assert "qa_dropped_budget_exhausted" not in again.counts
