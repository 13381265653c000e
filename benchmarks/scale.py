"""How cost grows with the work: data stages, retrieval and training at sizes spanning 100x (`make bench-scale`).

Every point runs in a fresh spawned process, so its peak memory is its own: the maximum resident set size of
that process plus the largest of its children (an upper bound of the process tree's peak). Each curve reports
time, throughput (and MB/s for text), peak memory, the host's CPU flags, and the growth as a fitted log-log
exponent of time against size: linear work has exponent 1, so throughput is "flat" when |1 - exponent| <= 0.1;
memory is "bounded" when the largest size's peak is <= 1.5x the second-largest's.

- data: N generated documents (seeded; length log-normal, median ~1.5 kB, a tail to ~49 kB; ~3% near-copies of
  earlier ones; a person's name or an e-mail address in about a third), written as JSONL files of
  `--records-per-file` records, each file one batch through the plain-Python engines of the data stages:
  ingestion (`Inbox.read`), cleaning and de-duplication (`TextCurator.curate`, against the signatures of every
  earlier batch, as the `curated_documents` asset does), redaction (`PiiRedactor.redact_documents`, defaults);
- retrieval: embedding throughput of generated passages (~400 characters) with the shipped MiniLM at 1k..10k;
  exact search (`DenseIndex`) at 1k..100k vectors (above 10k, the 10k embedded vectors plus Gaussian noise,
  re-normalised): build time and single-question query p50/p95 over 200 queries; the baseline column sorts all
  scores (`np.argsort`), ours selects the top k first (`np.argpartition`);
- incremental: with 10, 100, 1,000 batches of 25 documents already in, one more batch's own data-stage cost
  against the cost of the model's `corpus` with it: incremental (the persistent de-duplication index, as the
  asset builds it) and, as the baseline, rebuilt from scratch (every stored batch read and de-duplicated again);
  then the stages after it, `document_chunks` and `knowledge_index`, as the assets build them: the new batch's
  corpus segment cut into passages and embedded once, every segment linked and the vectors stacked (what grows
  with history), against cutting and embedding every passage again (the baseline, up to 100 batches);
- training: LoRA on the embedded SmolLM2-135M over N real tokens (the sample's chat examples repeated), one
  epoch with tuneforge's trainer (TRL, packing, `precision="auto"`): tokens/s, packing efficiency, peak
  memory, and the cost of one checkpoint (saving the adapter).

Results: benchmarks/results/scale_<curve>.json and .png. `--full` adds the large sizes (their measured times go
in the JSON); `--sizes-<curve>` overrides a curve's sizes.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections import deque
from contextlib import contextmanager
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from host import host, save  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TIERS = {  # curve -> (default tier, added by --full)
    "data": ([100, 300, 1_000, 3_000, 10_000], [30_000, 100_000]),
    "retrieval": ([1_000, 3_000, 10_000, 30_000, 100_000], [300_000]),
    "training": ([3_000, 10_000, 30_000, 100_000, 300_000], [1_000_000]),
    "incremental": ([10, 100, 1_000], [3_000]),
}
NEAR_COPY_WINDOW = 1_000  # near-copies are of one of the last this-many documents
BATCH_DOCS = 25  # documents per batch in the incremental curve
DOWNSTREAM_REBUILD_UP_TO = 100  # history sizes at which the chunks-and-index rebuild baseline runs (it embeds all)


# ---------------------------------------------------------------------------------------------- documents
FIRST = ["Maria", "Kenji", "Aisha", "Lukas", "Priya", "Tomasz", "Chloe", "Diego", "Ngozi", "Henrik"]
LAST = ["Gonzalez", "Tanaka", "Okafor", "Schneider", "Raman", "Kowalski", "Martin", "Alvarez", "Eze", "Lund"]


def _words() -> tuple[list[str], list[float]]:
    from wordfreq import top_n_list, word_frequency

    words = [w for w in top_n_list("en", 3000) if w.isalpha()]
    return words, [word_frequency(w, "en") for w in words]


def generate_documents(n: int, seed: int = 7):
    """`n` documents, the same for the same seed: English words in their frequencies, sentences of 8-24 words,
    paragraphs of 3-6 sentences; length log-normal around 1.5 kB; 3% near-copies of a recent document (the
    generator's memory stays bounded, so it does not count in the data curve's peak)."""
    rng = random.Random(seed)
    words, weights = _words()
    made: deque[str] = deque(maxlen=NEAR_COPY_WINDOW)
    for i in range(n):
        if made and rng.random() < 0.03:  # a near-copy of one of the last NEAR_COPY_WINDOW documents
            base = made[rng.randrange(len(made))]
            text = base.replace(".", ";", 1) + " Updated."
        else:
            target = min(49_000, max(200, int(rng.lognormvariate(math.log(1500), 0.8))))
            paragraphs, size = [], 0
            while size < target:
                sentences = []
                for _ in range(rng.randint(3, 6)):
                    s = rng.choices(words, weights, k=rng.randint(8, 24))
                    sentences.append(" ".join(s).capitalize() + ".")
                paragraph = " ".join(sentences)
                paragraphs.append(paragraph)
                size += len(paragraph) + 2
            text = "\n\n".join(paragraphs)[:target].rsplit(" ", 1)[0] + "."
            if rng.random() < 0.33:
                who = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
                text += (f" Contact {who} at {who.split()[0].lower()}.{i}@example.com for details."
                         if rng.random() < 0.5 else f" {who} reviewed this page.")
        made.append(text)
        yield {"id": f"doc-{i}", "title": f"Page {i}", "text": text}


def write_inbox(folder: Path, n: int, per_file: int) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    total, handle, count = 0, None, 0
    for i, doc in enumerate(generate_documents(n)):
        if i % per_file == 0:
            if handle:
                handle.close()
            handle = (folder / f"batch-{i // per_file:05d}.jsonl").open("w", encoding="utf-8")
        line = json.dumps(doc)
        handle.write(line + "\n")
        total += len(doc["text"].encode())
        count += 1
    if handle:
        handle.close()
    return total


# ---------------------------------------------------------------------------------------------- points
def _peak_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round((own + children) / 1024, 1)  # kB on Linux


def data_point(n: int, per_file: int = 1_000) -> dict:
    """The data stages as the assets run them, one inbox file (batch) at a time: ingest, clean and de-duplicate
    within the batch (`cleaned_documents`), redact and sign (`redacted_documents`), then the model's corpus
    de-duplicates the new batch against the persistent index of every earlier one and links the segments
    (`corpus`). Nothing of an earlier batch is held in memory."""
    from resources.offline import apply_offline_defaults

    apply_offline_defaults()
    from resources.curation.corpus import build_corpus, link_segments
    from resources.curation.curator import TextCurator
    from resources.ingestion.inbox import Inbox
    from resources.records import DOCUMENT_COLUMNS, DROPPED_COLUMNS, frame
    from resources.redaction.redactor import PiiRedactor
    from resources.storage import ArtifactStore

    columns = [*DOCUMENT_COLUMNS, "pii_found"]
    with tempfile.TemporaryDirectory() as tmp:
        inbox_dir = Path(tmp) / "inbox"
        text_bytes = write_inbox(inbox_dir, n, per_file)
        inbox = Inbox(path=str(inbox_dir), max_record_chars=50_000)
        curator, redactor = TextCurator(), PiiRedactor(policy_path=str(ROOT / "policies" / "redaction.yaml"))
        store = ArtifactStore(root=str(Path(tmp) / "artifacts"))
        redactor.engine()  # model loading is not part of the cost
        seconds = {"ingest": 0.0, "curate": 0.0, "redact": 0.0, "corpus": 0.0}
        counts = {"records": 0, "kept": 0, "dropped": 0, "redacted": 0, "quarantined": 0, "corpus_kept": 0}
        order: list[tuple[str, str]] = []
        current: list[dict] = []
        for entry in sorted(inbox.batches(now=time.time() + 3600), key=lambda e: e.key):
            start = time.perf_counter()
            read = inbox.read(entry.key)
            seconds["ingest"] += time.perf_counter() - start
            start = time.perf_counter()
            curated = curator.curate(read.documents)
            seconds["curate"] += time.perf_counter() - start
            start = time.perf_counter()
            redacted = redactor.redact_documents(curated.kept)
            signatures = curator.signatures([d["text"] for d in redacted.documents])
            current = [{**{c: d.get(c) for c in columns}, "dedup_key": k, "minhash": m}
                       for d, (k, m) in zip(redacted.documents, signatures)]
            seconds["redact"] += time.perf_counter() - start
            start = time.perf_counter()
            order.append((entry.key, "v1"))
            build = build_corpus(curator, store, "bench", order, lambda _batch: (current, {"documents": len(current)}), columns)
            with tempfile.TemporaryDirectory(dir=tmp) as out:
                link_segments(store, "bench", build.chains, "kept.parquet", Path(out), frame([], columns))
                link_segments(store, "bench", build.chains, "dropped.parquet", Path(out), frame([], DROPPED_COLUMNS))
            seconds["corpus"] += time.perf_counter() - start
            counts["records"] += len(read.documents) + len(read.quarantine)
            counts["kept"] += len(curated.kept)
            counts["dropped"] += len(curated.dropped)
            counts["redacted"] += len(redacted.documents)
            counts["quarantined"] += len(read.quarantine) + len(redacted.quarantined)
            del read, curated, redacted, signatures
        counts["corpus_kept"] = build.ledger.kept
        counts["dropped"] += sum(build.ledger.dropped.values())
    total = sum(seconds.values())
    return {"size": n, "seconds": round(total, 3), "stages_s": {k: round(v, 3) for k, v in seconds.items()},
            "docs_per_s": round(n / total, 2), "mb_per_s": round(text_bytes / 1e6 / total, 4),
            "text_mb": round(text_bytes / 1e6, 2), **counts, "peak_rss_mb": _peak_mb()}


def _passages(n: int) -> list[str]:
    out = []
    for doc in generate_documents(max(1, n // 3), seed=11):
        for start in range(0, len(doc["text"]), 400):
            out.append(doc["text"][start : start + 400])
    while len(out) < n:
        out += out[: n - len(out)]
    return out[:n]


def embed_point(n: int) -> dict:
    import numpy as np

    from resources.retrieval.index import KnowledgeIndexer

    indexer = KnowledgeIndexer()
    texts = _passages(n)
    indexer.embed(texts[:32])  # the model load is not part of the cost
    start = time.perf_counter()
    vectors = indexer.embed(texts)
    seconds = time.perf_counter() - start
    np.save(RESULTS / ".scale_vectors.npy", vectors)  # the largest size, run last, seeds the search points
    return {"size": n, "seconds": round(seconds, 3), "passages_per_s": round(n / seconds, 1),
            "mb_per_s": round(sum(len(t.encode()) for t in texts) / 1e6 / seconds, 4), "peak_rss_mb": _peak_mb()}


def search_point(n: int, k: int = 5, queries: int = 200) -> dict:
    import numpy as np

    from resources.retrieval.index import DenseIndex

    rng = np.random.default_rng(3)
    seed = np.load(RESULTS / ".scale_vectors.npy")
    parts, have = [], 0
    while have < n:  # the embedded vectors, then noisy copies of them
        take = seed[: n - have]
        parts.append(take if not have else take + rng.normal(0, 0.05, take.shape).astype(np.float32))
        have += len(take)
    raw = np.concatenate(parts)
    start = time.perf_counter()
    index = DenseIndex([f"c{i}" for i in range(n)], raw / np.linalg.norm(raw, axis=1, keepdims=True))
    build = time.perf_counter() - start
    asked = seed[rng.integers(0, len(seed), queries)] + rng.normal(0, 0.05, (queries, seed.shape[1])).astype(np.float32)
    asked /= np.linalg.norm(asked, axis=1, keepdims=True)

    def sort_all(q, k):  # the baseline: every score sorted
        scores = q @ index.vectors.T
        top = np.argsort(-scores, axis=1)[:, :k]
        return [[(index.ids[j], float(scores[i, j])) for j in row] for i, row in enumerate(top)]

    times = {"baseline": [], "ours": []}
    for q in asked:
        for name, fn in (("baseline", sort_all), ("ours", index.search)):
            start = time.perf_counter()
            got = fn(q[None, :], k)
            times[name].append((time.perf_counter() - start) * 1000)
        assert [i for i, _ in got[0]] == [i for i, _ in sort_all(q[None, :], k)[0]]
    stat = lambda xs: {"p50_ms": round(statistics.median(xs), 3),  # noqa: E731
                       "p95_ms": round(sorted(xs)[int(0.95 * len(xs)) - 1], 3)}
    return {"size": n, "build_s": round(build, 4), "baseline": stat(times["baseline"]), "ours": stat(times["ours"]),
            "seconds": round(statistics.median(times["ours"]) / 1000, 6), "peak_rss_mb": _peak_mb()}


def training_point(tokens: int) -> dict:
    import torch
    from datasets import Dataset, DatasetDict

    from resources.models.base_model import BaseModelSource
    from resources.training.config import FineTuneConfig
    from resources.training.sft_main import _datasets, _load, _trainer
    from training_throughput import Counting, chat_examples

    torch.set_num_threads(os.cpu_count() or 1)
    model_path = BaseModelSource(cache_dir=str(ROOT / ".cache" / "tuneforge" / "models")).resolve().path
    config = FineTuneConfig(max_length=512, early_stopping_patience=0, logging_steps=10_000, eval_steps=10_000,
                            num_train_epochs=1)
    resolved, attention = config.resolved_precision(cuda=False), config.resolved_attention(cuda=False)
    tokenizer, model = _load(model_path, config, resolved, attention)
    pool = chat_examples()
    sizes = [len(tokenizer(tokenizer.apply_chat_template(m, tokenize=False))["input_ids"]) for m in pool]
    examples, have, i = [], 0, 0
    while have < tokens:
        examples.append(pool[i % len(pool)])
        have += sizes[i % len(pool)]
        i += 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "dataset"
        DatasetDict({"train": Dataset.from_dict({"messages": examples}),
                     "validation": Dataset.from_dict({"messages": pool[:4]})}).save_to_disk(str(folder))
        train_ds, eval_ds = _datasets(str(folder), config)
        trainer = _trainer(config, model, tokenizer, train_ds, eval_ds, Path(tmp) / "out", False, lambda *_: None, resolved)
        counter = Counting(trainer.data_collator)
        trainer.data_collator = counter
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        trainer.save_model(str(Path(tmp) / "checkpoint"))
        checkpoint = time.perf_counter() - start
        lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    return {"size": tokens, "real_tokens": counter.tokens, "examples": len(examples), "seconds": round(seconds, 2),
            "tokens_per_s": round(counter.tokens / seconds, 1), "packing_efficiency": round(sum(lengths) / (len(lengths) * 512), 4),
            "checkpoint_s": round(checkpoint, 3), "precision": resolved, "peak_rss_mb": _peak_mb()}


def incremental_point(history: int) -> dict:
    """With `history` batches already in, one more: its own data-stage cost (ingest, clean, redact its 25
    documents), the cost of the corpus with it as the `corpus` asset builds it (the persistent de-duplication
    index resumes after the batches it holds, applies the new one, and the corpus links every batch's segment),
    and, as the baseline, rebuilding the corpus from scratch (every stored batch table read and de-duplicated
    again in arrival order, as the asset did before the index). History is seeded by applying the earlier
    batches' stored tables (with their MinHash signatures) to the index, not by running every batch's stages."""
    import pandas as pd

    import numpy as np

    import resources.segments as segments
    from resources.artifacts import config_of
    from resources.curation.corpus import build_corpus, link_segments
    from resources.curation.curator import TextCurator
    from resources.ingestion.inbox import Inbox
    from resources.datasets.builder import build_examples
    from resources.datasets.policy import DatasetPolicy
    from resources.knowledge.chunking import ChunkRules, Chunker
    from resources.knowledge.examples import build_knowledge_examples
    from resources.knowledge.policy import KnowledgePolicy
    from resources.datasets.builder import EXAMPLE_COLUMNS
    from resources.datasets.card import CARD_COLUMNS, build_card
    from resources.datasets.export import save_splits
    from resources.datasets.segments import (HF_EXTRA, contamination_verdicts, instruction_segments, link_instruction_hf,
                                             link_instructions, segment_lengths, validate_parts)
    from resources.knowledge.segments import chunk_trace_verdicts
    from resources.quality import example_expectations
    from resources.knowledge.segments import chunk_segments, example_segments, link_chunks, link_examples
    from resources.models.base_model import BaseModelSource
    from resources.retrieval.index import KnowledgeIndexer, load_vectors
    from resources.retrieval.segments import vector_segments, write_index
    from resources.records import DOCUMENT_COLUMNS, DROPPED_COLUMNS, frame, rows
    from resources.redaction.redactor import PiiRedactor
    from resources.storage import ArtifactStore

    columns = [*DOCUMENT_COLUMNS, "pii_found"]
    tokenizer = BaseModelSource().tokenizer()
    chunker = Chunker(tokenizer.backend_tokenizer, ChunkRules())
    chunk_config = config_of(ChunkRules())
    indexer = KnowledgeIndexer()
    indexer.embed(["loaded before the clock starts"])
    dataset, knowledge = DatasetPolicy(), KnowledgePolicy(strategies=["headings"], golden_from="headings")
    split = dataset.split_rules()
    no_golden = pd.DataFrame({"messages": []})  # the card's golden split: not what grows here
    golden_prompts = [json.loads(line)["question"] for line in (ROOT / "data" / "sample" / "support" / "golden.jsonl").read_text().splitlines()
                      if line.strip()]

    def run_checks(store, chains, chunk_keys, instruction_keys, segments_from=None) -> dict:
        """The blocking checks of document_chunks and instruction_dataset over the linked tables, as the assets run
        them: each part verified once (by content, verdicts in `store`), every part's bytes hashed; unique ids over
        the id column. `segments_from`: where the segments are, when not in `store`."""
        held = segments_from or store
        with tempfile.TemporaryDirectory() as out:
            out = Path(out)
            link_segments(held, "bench", chains, "kept.parquet", out, frame([], columns), "documents.parquet")
            link_chunks(held, "bench", chunk_keys, out)
            (out / "i").mkdir()
            link_instructions(held, "bench", instruction_keys, out / "i")
            traced = chunk_trace_verdicts(store, "bench", out / "chunks.parquet", out / "documents.parquet", ChunkRules().max_tokens)
            clean = contamination_verdicts(store, "bench", out / "i" / "examples.parquet", golden_prompts)
            _, suite = validate_parts(store, "bench", out / "i" / "examples.parquet", "bench_suite",
                                      example_expectations(("train", "validation"), "rows"),
                                      example_expectations(("train", "validation"), "table"),
                                      ["id", "split", "prompt", "answer"], ["id"])
        return {"verified_now": traced.made + clean.made + suite.made, "reused": traced.reused + clean.reused + suite.reused}

    class SeedIndexer(KnowledgeIndexer):
        def embed(self, texts: list[str]):
            rng = np.random.default_rng(len(texts))
            vectors = rng.standard_normal((len(texts), 384)).astype(np.float32)
            return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    curator = TextCurator()
    redactor = PiiRedactor(policy_path=str(ROOT / "policies" / "redaction.yaml"))
    redactor.engine()
    docs = list(generate_documents((history + 1) * BATCH_DOCS, seed=5))
    with tempfile.TemporaryDirectory() as tmp:
        stored = Path(tmp) / "redacted"
        stored.mkdir()
        store = ArtifactStore(root=str(Path(tmp) / "artifacts"))
        tables: dict[str, list[dict]] = {}
        merging = {"s": 0.0, "runs": 0, "by_asset": {}}  # the runs of segments merged as the history grew (pieces)
        plain_writing = segments.writing_segment

        @contextmanager
        def timed_writing(store, asset, key):
            began = time.perf_counter()
            with plain_writing(store, asset, key) as out:
                yield out
            if not asset.endswith(segments.CHECK_VERDICTS):
                merging["s"] += time.perf_counter() - began
                merging["runs"] += 1
                merging["by_asset"].setdefault(asset.rsplit("/", 1)[-1], []).append(time.perf_counter() - began)

        segments.writing_segment = timed_writing  # only the runs are written through this module's name
        start = time.perf_counter()
        for b in range(history):
            part = docs[b * BATCH_DOCS : (b + 1) * BATCH_DOCS]
            signatures = curator.signatures([d["text"] for d in part])
            tables[f"batch-{b:05d}"] = [{"doc_id": d["id"], "text": d["text"], "title": d["title"], "batch": f"batch-{b:05d}", "kind": "text",
                                          "pii_found": 0, "dedup_key": k, "minhash": m} for d, (k, m) in zip(part, signatures)]
            pd.DataFrame(tables[f"batch-{b:05d}"]).to_parquet(stored / f"batch-{b:05d}.parquet")
        load = lambda batch: (tables[batch], {"documents": len(tables[batch])})  # noqa: E731
        order = [(b, "v1") for b in tables]
        seeded = build_corpus(curator, store, "bench", order, load, columns)
        # passages and examples of the earlier batches made for real; their vectors written as stored segments
        # (random unit vectors: embedding 1,000 batches' passages would take the default tier's hour by itself)
        seeded_chunks = chunk_segments(store, "bench", seeded.chains, chunker, chunk_config)
        seeded_vectors = vector_segments(store, "bench", seeded_chunks.keys, SeedIndexer())
        seeded_sections = example_segments(store, "bench", seeded_chunks.keys, knowledge, dataset.title_template, split)
        seeded_instructions = instruction_segments(store, "bench", seeded.chains, seeded_sections.keys, dataset, golden_prompts)
        segment_lengths(store, "bench", seeded_instructions.keys, tokenizer)
        with tempfile.TemporaryDirectory(dir=tmp) as out:  # the runs of the corpus, vectors and HF export merged too
            link_segments(store, "bench", seeded.chains, "kept.parquet", Path(out), frame([], columns))
            link_segments(store, "bench", seeded.chains, "dropped.parquet", Path(out), frame([], DROPPED_COLUMNS))
            write_index(store, "bench", seeded_vectors.keys, Path(out))
            link_instruction_hf(store, "bench", seeded_instructions.keys, Path(out))
        runs_made = {**merging, "by_asset": dict(merging["by_asset"])}
        began = time.perf_counter()
        run_checks(store, seeded.chains, seeded_chunks.keys, seeded_instructions.keys)  # their verdicts, as each batch left them
        seeded_checks = time.perf_counter() - began
        seeding = time.perf_counter() - start
        merging.update(s=0.0, runs=0, by_asset={})
        inbox_dir = Path(tmp) / "inbox"
        inbox_dir.mkdir()
        new = docs[history * BATCH_DOCS :]
        (inbox_dir / "new.jsonl").write_text("".join(json.dumps(d) + "\n" for d in new))
        inbox = Inbox(path=str(inbox_dir))
        start = time.perf_counter()
        read = inbox.read("new.jsonl")
        cleaned = curator.curate(read.documents)
        redacted = redactor.redact_documents(cleaned.kept)
        signatures = curator.signatures([d["text"] for d in redacted.documents])
        own = time.perf_counter() - start
        tables["batch-new"] = [{**{c: d.get(c) for c in columns}, "dedup_key": k, "minhash": m}
                               for d, (k, m) in zip(redacted.documents, signatures)]
        pd.DataFrame(tables["batch-new"]).to_parquet(stored / "batch-new.parquet")
        start = time.perf_counter()
        build = build_corpus(curator, store, "bench", order + [("batch-new", "v1")], load, columns)
        with tempfile.TemporaryDirectory(dir=tmp) as out:
            link_segments(store, "bench", build.chains, "kept.parquet", Path(out), frame([], columns))
            link_segments(store, "bench", build.chains, "dropped.parquet", Path(out), frame([], DROPPED_COLUMNS))
        incremental = time.perf_counter() - start
        start = time.perf_counter()  # the stages after the corpus: document_chunks and knowledge_index
        chunks = chunk_segments(store, "bench", build.chains, chunker, chunk_config)
        vectors = vector_segments(store, "bench", chunks.keys, indexer)
        sections = example_segments(store, "bench", chunks.keys, knowledge, dataset.title_template, split)
        instructions = instruction_segments(store, "bench", build.chains, sections.keys, dataset, golden_prompts)
        segment_lengths(store, "bench", instructions.keys, tokenizer)  # the dataset card's token lengths
        own_downstream = time.perf_counter() - start  # the new segment cut, embedded, made into examples (stores listed)
        start = time.perf_counter()
        checks = run_checks(store, build.chains, chunks.keys, instructions.keys)  # the new parts verified, the rest hashed
        checks_s = time.perf_counter() - start
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=tmp) as out:
            link_chunks(store, "bench", chunks.keys, Path(out))
        with tempfile.TemporaryDirectory(dir=tmp) as out:
            write_index(store, "bench", vectors.keys, Path(out))
            passages = len(load_vectors(out))  # the index asset stacks every vector to measure its recall
        with tempfile.TemporaryDirectory(dir=tmp) as out:
            link_examples(store, "bench", sections.keys, Path(out))
        with tempfile.TemporaryDirectory(dir=tmp) as out:
            link_instructions(store, "bench", instructions.keys, Path(out))
            link_instruction_hf(store, "bench", instructions.keys, Path(out))  # the HF export training loads
            card_examples = pd.read_parquet(Path(out) / "examples.parquet", columns=CARD_COLUMNS)  # the dataset card
            build_card(card_examples, no_golden, tokenizer, {}, 0, {}, {}, 1,
                       segment_lengths(store, "bench", instructions.keys, tokenizer).lengths)
        assemble = time.perf_counter() - start + checks_s  # every segment linked, the vectors stacked once, the checks
        downstream = own_downstream + assemble
        # the baseline for the datasets: rebuilt whole with the default policies (headings from each section; the
        # instruction dataset from the corpus and those examples, split and guarded against the golden prompts)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=tmp) as out:
            link_chunks(store, "bench", chunks.keys, Path(out))
            link_segments(store, "bench", build.chains, "kept.parquet", Path(out), frame([], columns))
            all_chunks = rows(pd.read_parquet(Path(out) / "chunks.parquet"))
            corpus_rows = rows(pd.read_parquet(Path(out) / "kept.parquet"))
        held = {c["doc_id"] for c in all_chunks if split.split_of(c["doc_id"]) == "golden"}
        whole_sections = build_knowledge_examples(all_chunks, knowledge, dataset.title_template, held_out_docs=held)
        knowledge_s = time.perf_counter() - start
        start = time.perf_counter()
        examples = build_examples(corpus_rows + whole_sections.examples, split, dataset.text_strategy, dataset.title_template,
                                  golden_prompts=golden_prompts)
        whole_table = frame(examples.examples, EXAMPLE_COLUMNS)
        with tempfile.TemporaryDirectory(dir=tmp) as out:  # and its HF export written whole, as the asset did
            save_splits(whole_table, ["train", "validation"], Path(out) / "hf", HF_EXTRA)
        build_card(whole_table, no_golden, tokenizer, {}, 0, {}, {}, 1)  # and the card tokenizing every example
        instruction_s = time.perf_counter() - start
        start = time.perf_counter()  # and the checks verifying every part, as they did before (no verdict kept)
        run_checks(ArtifactStore(root=str(Path(tmp) / "no-verdicts")), build.chains, chunks.keys, instructions.keys,
                   segments_from=store)
        checks_rebuild_s = time.perf_counter() - start
        start = time.perf_counter()
        batches = [(p.stem, pd.read_parquet(p).to_dict("records")) for p in sorted(stored.glob("*.parquet"))]
        result = curator.deduplicate(batches)
        rebuild = time.perf_counter() - start
        downstream_rebuild = None
        if history <= DOWNSTREAM_REBUILD_UP_TO:  # the baseline: every passage cut and embedded again
            start = time.perf_counter()
            whole, _ = chunker.chunk_all(result.kept)
            indexer.embed([c["text"] for c in whole])
            downstream_rebuild = time.perf_counter() - start
            assert len(whole) == passages, (len(whole), passages)  # the same passages either way
        assert instructions.ledger.kept == len(examples.examples)  # the same dataset either way
    segments.writing_segment = plain_writing
    assert build.ledger.kept == len(result.kept), (build.ledger.kept, len(result.kept))  # the same corpus either way
    # what merging runs costs, spread over the batches that made them: every run of the history was merged once
    # while seeding (as the batch completing it would have); a row is verified again by the checks once per level
    # of runs it is merged into, estimated from the seeded checks (which verified every row once)
    levels = 1 + sum(1 for size in (segments.RUN_FANOUT ** k for k in range(1, 6)) if size <= history)
    runs_per_batch = runs_made["s"] / max(history, 1)
    run_checks_per_batch = seeded_checks * (levels - 1) / max(history, 1)
    history_s = incremental + assemble + runs_per_batch + run_checks_per_batch
    # the batch that completes the history's largest run pays for it at once: each asset's largest merge, and the
    # checks verifying that run's rows again (estimated as that run's share of the seeded checks)
    largest = max((hi - lo for lo, hi in segments.runs(history)), default=1)
    largest_merges = sum(max(d) for d in runs_made["by_asset"].values()) if runs_made["by_asset"] else 0.0
    largest_checks = seeded_checks * largest / max(history, 1) if largest > 1 else 0.0
    return {"history_s": round(history_s, 3), "history_share_of_batch": round(history_s / (own + own_downstream), 3),
            "runs": {"merged_while_seeding": runs_made["runs"], "merge_s": round(runs_made["s"], 2),
                     "merge_per_batch_s": round(runs_per_batch, 4), "levels": levels,
                     "checks_per_batch_s_estimated": round(run_checks_per_batch, 4),
                     "merged_by_the_new_batch": merging["runs"], "parts_linked": len(segments.runs(history + 1)),
                     "largest_run": largest, "largest_merge_s_by_asset": {a: round(max(d), 3) for a, d in runs_made["by_asset"].items()},
                     "batch_completing_the_largest_run_extra_s": round(largest_merges + largest_checks, 3),
                     "of_which_checks_s_estimated": round(largest_checks, 3)},
            "size": history, "batch_docs": BATCH_DOCS, "seconds": round(incremental, 3), "batch_own_s": round(own, 3),
            "corpus_incremental_s": round(incremental, 3), "incremental_share_of_batch": round(incremental / own, 3),
            "batches_applied": build.applied, "batches_resumed": build.resumed,
            "corpus_rebuild_s": round(rebuild, 3), "rebuild_share_of_batch": round(rebuild / own, 3),
            "corpus_documents": len(result.kept), "seeding_s": round(seeding, 1), "peak_rss_mb": _peak_mb(),
            "downstream_incremental_s": round(downstream, 3), "downstream_new_segment_s": round(own_downstream, 3),
            "downstream_assemble_s": round(assemble, 3), "batch_with_knowledge_s": round(own + own_downstream, 3),
            "assemble_share_of_batch": round(assemble / (own + own_downstream), 3),
            "checks_s": round(checks_s, 3), "checks_parts": checks,
            "downstream_segments": {"chunks_cut": chunks.made, "chunks_reused": chunks.reused,
                                    "vectors_embedded": vectors.made, "vectors_reused": vectors.reused,
                                    "passages_embedded": vectors.passages_embedded, "passages": passages,
                                    "examples_made": sections.made, "instructions_made": instructions.made,
                                    "instructions_reused": instructions.reused},
            "datasets_rebuild": {"knowledge_examples_s": round(knowledge_s, 3), "instruction_dataset_s": round(instruction_s, 3),
                                 "examples": len(examples.examples), "section_examples": len(whole_sections.examples)},
            "checks_rebuild_s": round(checks_rebuild_s, 3),
            "datasets_rebuild_s": round(knowledge_s + instruction_s + checks_rebuild_s, 3),
            "datasets_rebuild_share_of_batch": round((knowledge_s + instruction_s + checks_rebuild_s) / (own + own_downstream), 3),
            "downstream_rebuild_s": None if downstream_rebuild is None else round(downstream_rebuild, 3),
            "downstream_rebuild_share_of_batch": None if downstream_rebuild is None else round(downstream_rebuild / own, 3)}


def isolated(fn, *args) -> dict:
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


# ---------------------------------------------------------------------------------------------- growth
def exponent(points: list[dict], key: str = "seconds") -> float | None:
    import numpy as np

    xs = [p["size"] for p in points if p.get(key)]
    ys = [p[key] for p in points if p.get(key)]
    if len(xs) < 2:
        return None
    return round(float(np.polyfit(np.log(xs), np.log(ys), 1)[0]), 3)


def growth(points: list[dict], linear: bool = True) -> dict:
    """Time's log-log exponent; for work that grows with the size (linear=True) throughput is flat when the
    exponent is within 0.1 of 1, for a lookup (linear=False) when it is within 0.1 of 0."""
    e = exponent(points)
    peaks = [p["peak_rss_mb"] for p in points]
    expected = 1.0 if linear else 0.0
    return {"time_exponent": e, "throughput_flat": None if e is None else abs(e - expected) <= 0.1,
            "memory_exponent": exponent(points, "peak_rss_mb"),
            "memory_bounded": len(peaks) > 1 and peaks[-1] <= 1.5 * peaks[-2],
            "span": round(points[-1]["size"] / points[0]["size"], 1) if points else None}


def plot(name: str, title: str, series: dict[str, list[tuple[float, float]]], ylabel: str, xlabel: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, xy in series.items():
        if xy:
            ax.loglog([x for x, _ in xy], [y for _, y in xy], marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = RESULTS / f"scale_{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path.relative_to(ROOT))


def measured(point, sizes: list[int]) -> list[dict]:
    """`point` at each size, each in a fresh process, printed as it comes."""
    points = []
    for n in sizes:
        points.append(isolated(point, n))
        print(json.dumps(points[-1]), flush=True)
    return points


MERGE = False  # --merge: the points measured now join those already in the curve's JSON (a later, larger tier)


def merged(name: str, points: list[dict]) -> list[dict]:
    """With --merge, the curve's stored points plus this run's (a size measured now replaces the stored one), each
    point keeping its own `measured_at`; otherwise this run's points."""
    for p in points:
        p.setdefault("measured_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    stored = RESULTS / f"scale_{name}.json"
    if not MERGE or not stored.exists():
        return points
    sizes = {p["size"] for p in points}
    doc = json.loads(stored.read_text())
    earlier = [{**p, "measured_at": p.get("measured_at", doc.get("measured_at"))} for p in doc.get("points", [])]
    return sorted([p for p in earlier if p["size"] not in sizes] + points, key=lambda p: p["size"])


def title(what: str) -> str:
    return f"{what} (host {host()['cpu']}, {host()['cpus']} cores)"


def write(name: str, result: dict) -> None:
    result.update({"benchmark": f"scale_{name}", "host": host()})
    print(f"wrote {save(f'scale_{name}', result, echo=False).relative_to(ROOT)}")


def run_data(sizes: list[int], per_file: int) -> None:
    points = merged("data", measured(functools.partial(data_point, per_file=per_file), sizes))
    stages = {s: [(p["size"], p["stages_s"][s]) for p in points] for s in ("ingest", "curate", "redact", "corpus")}
    result = {"curve": "data stages", "records_per_file": per_file, "points": points, "growth": growth(points),
              "growth_by_stage": {s: exponent([{"size": x, "seconds": y} for x, y in xy]) for s, xy in stages.items()}}
    result["plot"] = plot("data", title("Data stages"),
                          {f"{s} (s)": xy for s, xy in stages.items()} | {"peak memory (MB)": [(p["size"], p["peak_rss_mb"]) for p in points]},
                          "seconds / MB", "documents")
    write("data", result)


def run_retrieval(sizes: list[int]) -> None:
    embed_sizes = [n for n in sizes if n <= 10_000] or sizes[:1]  # embedding is measured up to 10k passages
    embeds = measured(embed_point, embed_sizes)
    searches = measured(search_point, sizes)
    (RESULTS / ".scale_vectors.npy").unlink(missing_ok=True)
    result = {"curve": "retrieval", "embedding": {"points": embeds, "growth": growth(embeds)},
              "search": {"points": searches, "growth": growth(searches, linear=False),
                         "baseline_time_exponent": exponent([{"size": p["size"], "seconds": p["baseline"]["p50_ms"]} for p in searches]),
                         "approximate_index_needed": any(p["ours"]["p95_ms"] > 20 for p in searches)}}
    result["plot"] = plot("retrieval", title("Retrieval"), {
        "embedding (s)": [(p["size"], p["seconds"]) for p in embeds],
        "search p95, top-k first (ms)": [(p["size"], p["ours"]["p95_ms"]) for p in searches],
        "search p95, sort all (ms)": [(p["size"], p["baseline"]["p95_ms"]) for p in searches],
    }, "seconds / milliseconds", "passages")
    write("retrieval", result)


def run_training(sizes: list[int]) -> None:
    points = merged("training", measured(training_point, sizes))
    result = {"curve": "training", "points": points, "growth": growth(points)}
    result["plot"] = plot("training", title("LoRA training"), {
        "wall time (s)": [(p["size"], p["seconds"]) for p in points],
        "tokens/s": [(p["size"], p["tokens_per_s"]) for p in points],
        "peak memory (MB)": [(p["size"], p["peak_rss_mb"]) for p in points],
    }, "seconds, tokens/s, MB", "training tokens")
    write("training", result)


def run_incremental(sizes: list[int]) -> None:
    write("incremental", incremental_result(measured(incremental_point, sizes)))


def incremental_result(points: list[dict]) -> dict:
    result = {"curve": "incremental cost", "points": points,
              "history": "what a batch pays because of the batches before it: the corpus through the index, every "
                         "stage's linking (of runs of segments: resources.segments.pieces), the card, the checks over "
                         "every part, and the runs' merges and their checks spread over the batches that made them",
              "history_exponent": exponent([{"size": p["size"], "seconds": p["history_s"]} for p in points]),
              "history_within_20_percent": all(p["history_share_of_batch"] <= 0.2 for p in points),
              "batch_own_s_exponent": exponent([{"size": p["size"], "seconds": p["batch_own_s"]} for p in points]),
              "corpus_incremental_exponent": exponent(points),
              "corpus_rebuild_exponent": exponent([{"size": p["size"], "seconds": p["corpus_rebuild_s"]} for p in points]),
              "target": "the new batch's cost flat; the corpus's cost for it <= 20% of the batch's own up to 1,000 batches",
              "incremental_within_20_percent": all(p["incremental_share_of_batch"] <= 0.2 for p in points),
              "rebuild_within_20_percent": all(p["rebuild_share_of_batch"] <= 0.2 for p in points),
              "downstream": "document_chunks, knowledge_index, knowledge_examples, instruction_dataset (with its HF export), "
                            "dataset_card and the blocking checks of the chunks and the dataset for the new batch: its corpus "
                            "segment cut, embedded, made into examples, tokenized for the card and checked once, every segment "
                            "linked, the index's vectors stacked once (its recall), every part hashed by the checks; the "
                            "baselines cut and embed every passage again (run "
                            f"up to {DOWNSTREAM_REBUILD_UP_TO} batches: beyond, it takes longer than the tier) and rebuild "
                            "the examples, the instruction dataset, its HF export and card whole and check every part",
              "downstream_incremental_exponent": exponent([{"size": p["size"], "seconds": p["downstream_incremental_s"]} for p in points]),
              "downstream_assemble_exponent": exponent([{"size": p["size"], "seconds": p["downstream_assemble_s"]} for p in points]),
              "downstream_history_cost_within_20_percent": all(p["assemble_share_of_batch"] <= 0.2 for p in points),
              "datasets_rebuild_exponent": exponent([{"size": p["size"], "seconds": p["datasets_rebuild_s"]} for p in points]),
              "datasets_rebuild_within_20_percent": all(p["datasets_rebuild_share_of_batch"] <= 0.2 for p in points),
              "downstream_target": "the new batch's own passages are cut and embedded once (its cost with its data stages: "
                                   "batch_with_knowledge_s); what grows with history (linking segments, stacking vectors) "
                                   "<= 20% of that"}
    result["plot"] = plot("incremental", title("One more batch"), {
        "the batch's own data stages (s)": [(p["size"], p["batch_own_s"]) for p in points],
        "corpus, incremental (s)": [(p["size"], p["corpus_incremental_s"]) for p in points],
        "corpus rebuilt from scratch, baseline (s)": [(p["size"], p["corpus_rebuild_s"]) for p in points],
        "chunks, index, examples: the new batch's segment (s)": [(p["size"], p["downstream_new_segment_s"]) for p in points],
        "chunks, index, examples, card, checks: what every segment costs (s)": [(p["size"], p["downstream_assemble_s"]) for p in points],
        "examples, dataset, HF export, card, checks whole, baseline (s)": [(p["size"], p["datasets_rebuild_s"]) for p in points],
        "chunks + index rebuilt, baseline (s)": [(p["size"], p["downstream_rebuild_s"]) for p in points
                                                 if p["downstream_rebuild_s"] is not None],
        "what history adds, all told (s)": [(p["size"], p["history_s"]) for p in points],
        "the batch completing the largest run: its extra (s)": [(p["size"], p["runs"].get("batch_completing_the_largest_run_extra_s", 0))
                                                                for p in points],
    }, "seconds", "batches already processed")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="add the large sizes")
    parser.add_argument("--merge", action="store_true", help="add this run's points to the stored curve (data, "
                        "training) instead of replacing it: run the default tier, then e.g. --sizes-data 100000 --merge")
    parser.add_argument("--curves", default="data,retrieval,training,incremental")
    parser.add_argument("--records-per-file", type=int, default=1_000, help="records per inbox file (one batch each)")
    for curve in TIERS:
        parser.add_argument(f"--sizes-{curve}", type=lambda s: [int(x) for x in s.split(",")], default=None)
    args = parser.parse_args()
    global MERGE
    MERGE = args.merge
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for curve in args.curves.split(","):
        sizes = getattr(args, f"sizes_{curve}") or TIERS[curve][0] + (TIERS[curve][1] if args.full else [])
        start = time.perf_counter()
        {"data": lambda: run_data(sizes, args.records_per_file), "retrieval": lambda: run_retrieval(sizes),
         "training": lambda: run_training(sizes), "incremental": lambda: run_incremental(sizes)}[curve]()
        print(f"{curve}: {time.perf_counter() - start:.0f} s", flush=True)
    print(f"all curves: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
