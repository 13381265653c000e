"""Retrieval with the real embedded MiniLM model: nearest documents and recall@k."""

from helpers import package_readmes, signed_batches
from resources.retrieval.index import KnowledgeIndexer, recall_at_k


def test_questions_retrieve_their_source_documents():
    indexer = KnowledgeIndexer()
    docs = {
        "kb-tokens": "API tokens expire after 90 days; rotate them from Settings > API.",
        "kb-boards": "The Free plan allows 3 boards per workspace and up to 5 members.",
        "kb-export": "Exports are emailed to the workspace owner as a ZIP archive within 15 minutes.",
        "kb-sso": "SAML single sign-on is available on the Business and Enterprise plans.",
    }
    index = indexer.build(list(docs), list(docs.values()))
    assert index.vectors.shape == (4, 384)
    questions = ["When does my API token stop working?", "How many boards can a free workspace have?",
                 "How do I get a copy of all my data?"]
    retrieved = [[doc for doc, _ in row] for row in index.search(indexer.embed(questions), 2)]
    assert [r[0] for r in retrieved] == ["kb-tokens", "kb-boards", "kb-export"]


def test_recall_at_k_on_known_rankings():
    retrieved = [["a", "b", "c"], ["x", "a", "b"], ["x", "y", "z"]]
    assert recall_at_k(retrieved, ["a", "a", "a"], (1, 2, 3)) == {"recall@1": 1 / 3, "recall@2": 2 / 3, "recall@3": 2 / 3}
    assert recall_at_k([], [], (1,)) == {"recall@1": 0.0}


def test_chunks_and_vectors_are_made_once_per_corpus_segment_and_equal_a_whole_build(tmp_path, smol_tokenizer):
    """One more batch cuts and embeds only its own corpus segment; the linked passages and stacked vectors equal
    chunking and embedding the whole corpus at once; a changed chunk rule cuts every segment again."""
    import numpy as np
    import pandas as pd

    from resources.curation.corpus import build_corpus
    from resources.curation.curator import TextCurator
    from resources.knowledge.chunking import ChunkRules, Chunker
    from resources.knowledge.segments import chunk_segments, link_chunks
    from resources.retrieval.index import load_vectors
    from resources.retrieval.segments import vector_segments, write_index
    from resources.storage import ArtifactStore

    docs = package_readmes(24)
    assert len(docs) == 24
    batches = {f"batch-{b}": [dict(d, batch=f"batch-{b}") for d in docs[b * 6 : (b + 1) * 6]] for b in range(4)}
    batches["batch-3"].append(dict(batches["batch-0"][0], batch="batch-3", doc_id="copy"))  # dropped as a duplicate
    curator, store, indexer = TextCurator(), ArtifactStore(root=str(tmp_path / "artifacts")), KnowledgeIndexer()
    signed, load = signed_batches(curator, batches)
    columns = [c for c in docs[0]] + ["batch"]
    chunker = Chunker(smol_tokenizer.backend_tokenizer, ChunkRules(max_tokens=96, overlap_tokens=16))
    config = {"rules": "96/16"}

    first = build_corpus(curator, store, "support", [(b, "v1") for b in list(batches)[:3]], load, columns)
    chunks = chunk_segments(store, "support", first.chains, chunker, config)
    vectors = vector_segments(store, "support", chunks.keys, indexer)
    assert (chunks.made, chunks.reused, vectors.made, vectors.reused) == (3, 0, 3, 0)

    second = build_corpus(curator, store, "support", [(b, "v1") for b in batches], load, columns)
    chunks = chunk_segments(store, "support", second.chains, chunker, config)
    vectors = vector_segments(store, "support", chunks.keys, indexer)
    assert (chunks.made, chunks.reused, vectors.made, vectors.reused) == (1, 3, 1, 3)  # only the new batch
    assert vectors.passages_embedded == sum(1 for d in signed["batch-3"] if d["doc_id"] != "copy"
                                            for _ in chunker.chunk(d))

    out = tmp_path / "built"
    out.mkdir()
    link_chunks(store, "support", chunks.keys, out)
    write_index(store, "support", vectors.keys, out)
    stacked = load_vectors(out)
    corpus = [d for b in batches for d in signed[b] if d["doc_id"] != "copy"]  # the whole corpus, at once
    whole, _ = chunker.chunk_all(corpus)
    linked = pd.read_parquet(out / "chunks.parquet")
    assert list(linked["chunk_id"]) == [c["chunk_id"] for c in whole]
    assert list(linked["text"]) == [c["text"] for c in whole] and len(whole) > 24
    assert list(pd.read_parquet(out / "passages.parquet")["chunk_id"]) == [c["chunk_id"] for c in whole]
    assert stacked.shape == (len(whole), 384)
    assert np.allclose(stacked, indexer.embed([c["text"] for c in whole]), atol=1e-5)
    assert len(list((out / "vectors").glob("*.npy"))) == 4  # one linked part per segment: no copy of the vectors
    loaded = indexer.load(out)  # the index as the gateway and the evaluation read it
    hit = loaded.passages([whole[5]["text"][:300]], 1)[0][0]
    assert hit["chunk_id"] == whole[5]["chunk_id"] and hit["source_path"] == whole[5]["source_path"]

    assert chunks.stats["chunks"] == len(whole) and chunks.stats["tokens_max"] == int(linked["tokens"].max())
    assert chunks.stats["sections"] == len(linked[["doc_id", "section"]].drop_duplicates())
    assert chunks.stats["chunks_per_document_max"] == int(linked.groupby("doc_id").size().max())
    assert sorted(linked["tokens"])[(len(linked) - 1) // 2] == chunks.stats["tokens_p50"]
    recut = chunk_segments(store, "support", second.chains, chunker, {"rules": "changed"})
    assert (recut.made, recut.reused) == (4, 0)


def test_a_segments_files_are_read_only_so_no_version_writes_through_a_shared_link(tmp_path):
    import stat

    import pandas as pd

    from resources.segments import link_parts, merge_tables, writing_segment
    from resources.storage import ArtifactStore

    store = ArtifactStore(root=str(tmp_path / "artifacts"))
    with writing_segment(store, "m/chunk_segments", "k1") as out:
        pd.DataFrame({"a": ["x"]}).to_parquet(out / "chunks.parquet")
    piece = store.partition_dir("m/chunk_segments", "k1") / "chunks.parquet"
    assert stat.S_IMODE(piece.stat().st_mode) == 0o400
    merge = {"chunks.parquet": merge_tables}
    link_parts(store, "m/chunk_segments", ["k1"], "chunks.parquet", tmp_path / "v1", lambda path: None, merge)
    link_parts(store, "m/chunk_segments", ["k1"], "chunks.parquet", tmp_path / "v2", lambda path: None, merge)
    first = tmp_path / "v1" / "part-000000.parquet"
    assert first.stat().st_ino == piece.stat().st_ino == (tmp_path / "v2" / "part-000000.parquet").stat().st_ino
    assert not first.stat().st_mode & 0o222  # no one may write through the link (root aside)
