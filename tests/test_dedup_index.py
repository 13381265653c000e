"""The persistent cross-batch de-duplication index: the same result as de-duplicating every batch again, resumed
after the longest prefix of batches it already holds, rewound when a batch changes, on SQLite and on PostgreSQL."""

import random

import pytest

from postgres_server import postgres_server


def corpus(seed: int, batches: int, per_batch: int) -> list[tuple[str, list[dict]]]:
    """Batches of short texts in which some are copies or light edits of texts in earlier (or the same) batches."""
    from resources.curation.curator import TextCurator

    rng = random.Random(seed)
    words = ("invoice plan seats export webhook token audit region backup retention admin billing user policy "
             "quota archive refund trial").split()
    seen, out = [], []
    for b in range(batches):
        texts = []
        for _ in range(per_batch):
            roll = rng.random()
            if seen and roll < 0.15:
                texts.append(rng.choice(seen))  # an exact copy
            elif seen and roll < 0.3:
                base = rng.choice(seen).split()
                base[rng.randrange(len(base))] = rng.choice(words)  # one word changed: a near-duplicate
                texts.append(" ".join(base))
            else:
                texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(12, 30))))
            seen.append(texts[-1])
        signed = TextCurator().signatures(texts)
        out.append((f"batch-{b:03d}", [{"doc_id": f"d{b}-{i}", "text": t, "dedup_key": k, "minhash": m}
                                        for i, (t, (k, m)) in enumerate(zip(texts, signed))]))
    return out


def sync(index, batches, config="c") -> list:
    """What the corpus asset does: resume after the longest prefix the index holds, apply the rest."""
    from resources.dedup import chain_hashes

    chains = chain_hashes(config, [(b, "v1") for b, _ in batches])
    held = index.applied()
    common = 0
    while common < min(len(held), len(chains)) and held[common].chain == chains[common]:
        common += 1
    index.rewind(common)
    outcomes = []
    for seq in range(common, len(batches)):
        outcomes.append(index.apply(seq, batches[seq][0], "v1", chains[seq], batches[seq][1]))
    return outcomes


def check_equivalent(url: str, namespace: str = "support"):
    from resources.curation.curator import TextCurator
    from resources.dedup import DedupIndex

    curator = TextCurator()
    batches = corpus(3, 12, 15)
    reference = curator.deduplicate(batches)
    index = DedupIndex(url, curator.dedup_rules(), namespace)
    kept, dropped = [], []
    for step in range(1, len(batches) + 1):  # one batch at a time, as they arrive
        for outcome in sync(index, batches[:step]):
            kept += [d["doc_id"] for d in outcome.kept]
            dropped += [(d["doc_id"], d["reason"]) for d in outcome.dropped]
    assert kept == [d["doc_id"] for d in reference.kept]
    assert dropped == [(d["doc_id"], d["reason"]) for d in reference.dropped]
    assert {r for _, r in dropped} == {"exact_duplicate", "near_duplicate"}  # the corpus has both kinds
    held = index.applied()
    assert [h.seq for h in held] == list(range(12)) and sum(h.summary["kept"] for h in held) == len(reference.kept)
    assert sync(index, batches) == []  # nothing new: nothing applied again

    # a batch in the middle leaves the chain (its checks failed, say): the index rewinds to the batch before it
    without = batches[:5] + batches[6:]
    outcomes = sync(index, without)
    assert len(outcomes) == len(without) - 5  # the first five are not applied again
    expected = curator.deduplicate(without)
    resumed_kept = [d["doc_id"] for d in reference.kept if d["doc_id"].split("-")[0] in {f"d{b}" for b in range(5)}]
    assert resumed_kept + [d["doc_id"] for o in outcomes for d in o.kept] == [d["doc_id"] for d in expected.kept]

    # another model's namespace in the same database is independent
    other = DedupIndex(url, curator.dedup_rules(), "other-model")
    assert other.applied() == []
    index.dispose(), other.dispose()


def test_index_equals_full_deduplication_on_sqlite(tmp_path):
    check_equivalent(f"sqlite:///{tmp_path / 'dedup.sqlite'}")


def test_index_survives_a_new_process_and_a_config_change(tmp_path):
    from resources.curation.curator import TextCurator
    from resources.dedup import DedupIndex

    url = f"sqlite:///{tmp_path / 'dedup.sqlite'}"
    batches = corpus(5, 4, 10)
    first = DedupIndex(url, TextCurator().dedup_rules(), "support")
    assert len(sync(first, batches[:3])) == 3
    first.dispose()
    reopened = DedupIndex(url, TextCurator().dedup_rules(), "support")  # a later run: the state is on disk
    assert [o.summary["records_in"] for o in sync(reopened, batches)] == [10]
    assert len(sync(reopened, batches, config="other")) == 4  # another config: every batch applied again


@pytest.mark.slow
def test_index_equals_full_deduplication_on_postgres():
    with postgres_server() as pg:
        check_equivalent(f"postgresql+psycopg2://{pg['user']}:{pg['password']}@{pg['host']}:{pg['port']}/{pg['db']}")


def test_the_corpus_build_resumes_reads_only_new_batches_and_links_one_part_per_batch(tmp_path):
    import pandas as pd

    from resources.curation.corpus import build_corpus, link_segments
    from resources.curation.curator import TextCurator
    from resources.records import DROPPED_COLUMNS, frame
    from resources.storage import ArtifactStore

    curator, store = TextCurator(), ArtifactStore(root=str(tmp_path / "artifacts"))
    batches = corpus(11, 6, 12)
    tables = dict(batches)
    read = []

    def load(batch):
        read.append(batch)
        return tables[batch], {"documents": len(tables[batch])}

    columns = ["doc_id", "text"]
    first = build_corpus(curator, store, "support", [(b, "v1") for b, _ in batches[:4]], load, columns)
    assert (first.resumed, first.applied, read) == (0, 4, [b for b, _ in batches[:4]])
    read.clear()
    second = build_corpus(curator, store, "support", [(b, "v1") for b, _ in batches], load, columns)
    assert (second.resumed, second.applied, read) == (4, 2, [b for b, _ in batches[4:]])  # only the new batches read
    reference = curator.deduplicate(batches)
    assert second.ledger.kept == len(reference.kept) and second.ledger.balanced()
    assert second.ledger.records_in == sum(len(d) for _, d in batches)
    out = tmp_path / "corpus"
    out.mkdir()
    link_segments(store, "support", second.chains, "kept.parquet", out, frame([], columns))
    link_segments(store, "support", second.chains, "dropped.parquet", out, frame([], DROPPED_COLUMNS))
    table = pd.read_parquet(out / "kept.parquet")  # a folder of parts, read as one table, in arrival order
    assert list(table["doc_id"]) == [d["doc_id"] for d in reference.kept]
    assert list(pd.read_parquet(out / "dropped.parquet")["doc_id"]) == [d["doc_id"] for d in reference.dropped]

    # batch 2 gets a new version (a forget, say): batches 0-1 are kept, 2-5 are applied again
    read.clear()
    tables[batches[2][0]] = tables[batches[2][0]][1:]
    third = build_corpus(curator, store, "support", [(b, "v2" if i == 2 else "v1") for i, (b, _) in enumerate(batches)],
                         load, columns)
    assert (third.resumed, third.applied) == (2, 4) and read == [b for b, _ in batches[2:]]
    changed = batches[:2] + [(batches[2][0], tables[batches[2][0]])] + batches[3:]
    assert third.ledger.kept == len(curator.deduplicate(changed).kept)


def test_a_later_version_of_a_document_supersedes_the_earlier_one(tmp_path):
    """Freshness: a later batch's record with the same id (or the same file) is a new version, kept even though its
    text nearly repeats the old one (a number changed), and the old one is recorded as superseded — by the
    persistent index and the reference de-duplication alike; an unchanged copy is still an exact duplicate, and
    a near-copy under another id still a near-duplicate."""
    from resources.curation.curator import TextCurator
    from resources.dedup import DedupIndex, identity_of

    old = "New workspaces get a 14-day trial of the Business plan, and no credit card is required to start it today."
    new = old.replace("14-day", "30-day")
    curator = TextCurator()

    def batch(name, docs):
        signed = curator.signatures([t for _, _, t in docs])
        return (name, [{"doc_id": d, "external_id": e, "text": t, "dedup_key": k, "minhash": m, "batch": name}
                       for (d, e, t), (k, m) in zip(docs, signed)])

    batches = [batch("kb", [("a1", "KB-2", old)]),
               batch("updates", [("a2", "KB-2", new), ("a3", "KB-2", old), ("b1", "KB-9", new.replace("today", "now"))])]
    reference = curator.deduplicate(batches)
    assert [d["doc_id"] for d in reference.kept] == ["a1", "a2"]
    assert reference.superseded == [{"doc_id": "a1", "by": "a2", "identity": "id:KB-2"}]
    assert {d["doc_id"]: d["reason"] for d in reference.dropped} == {"a3": "exact_duplicate", "b1": "near_duplicate"}
    index = DedupIndex(f"sqlite:///{tmp_path / 'dedup.db'}", curator.dedup_rules(), "support")
    outcomes = sync(index, batches)
    assert [d["doc_id"] for o in outcomes for d in o.kept] == ["a1", "a2"]
    assert outcomes[1].summary["superseded"] == [{"doc_id": "a1", "by": "a2", "identity": "id:KB-2"}]
    assert identity_of({"source_format": "docx", "source_path": "handbooks/handbook.docx", "batch": "handbooks"}) == \
        identity_of({"source_format": "docx", "source_path": "updates/handbook.docx", "batch": "updates"}) == "file:handbook.docx"
    assert identity_of({"source_format": "jsonl", "source_path": "tickets.jsonl", "batch": "tickets.jsonl"}) is None


def test_superseded_passages_are_never_retrieved_and_give_no_training_example(tmp_path):
    import numpy as np
    import pandas as pd

    from resources.datasets.builder import SplitRules, build_examples
    from resources.retrieval.index import HIDDEN, KnowledgeIndexer

    texts = {"old": "New workspaces get a 14-day trial of the Business plan.",
             "new": "New workspaces get a 30-day trial of the Business plan.",
             "other": "Invoices are emailed to the billing contact."}
    passages = pd.DataFrame([{"chunk_id": c, "doc_id": c, "external_id": "KB-2" if c != "other" else "KB-5", "title": "Trial",
                              "section": "", "start": 0, "end": len(t), "text": t, "source_path": "kb.jsonl",
                              "source_sha256": "0" * 64} for c, t in texts.items()])
    np.save(tmp_path / "vectors.npy", KnowledgeIndexer().embed(list(texts.values())))
    passages.to_parquet(tmp_path / "passages.parquet")
    (tmp_path / HIDDEN).write_text('{"superseded": ["old"], "unindexed": []}')
    found = KnowledgeIndexer().load(tmp_path).passages(["How long is the free trial?"], 3)[0]
    assert [p["chunk_id"] for p in found] == ["new", "other"]
    docs = [{"doc_id": d, "batch": "b", "kind": "text", "title": "Trial", "text": t} for d, t in texts.items()]
    built = build_examples(docs, SplitRules(0.0), "title_to_instruction", "{title}?", superseded={"old"})
    assert sorted(e["id"] for e in built.examples) == ["new", "other"]
    assert [(d["doc_id"], d["reason"]) for d in built.dropped] == [("old", "superseded")]
