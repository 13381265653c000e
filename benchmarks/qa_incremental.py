"""The `qa` strategy as history grows: one more batch with 10, 100 and 300 batches already in (`make bench`).

A model whose sections train by `qa` asks a teacher for question/answer pairs about every passage, has the teacher
judge them and drops questions that repeat an earlier one. The teacher here is the scripted OpenAI-compatible
teacher of the tests on 127.0.0.1 (a large teacher LLM cannot run here; it answers every passage in a few
milliseconds, so what is measured is tuneforge's own work around the calls). With H batches of 25 generated
documents in (`scale.generate_documents`), one more batch costs:

- ours, as `knowledge_examples` runs now (`example_segments`): the new batch's passages asked about, its
  questions compared with the signatures the earlier segments kept (table joins; a repeat is not judged), the
  others judged, the other segments read;
- the baseline, as it ran before: the whole corpus's passages asked about again — every earlier reply read from
  the teacher's on-disk cache, every judge verdict too — and every question de-duplicated again, one by one.

Both make the same examples (asserted) and call the teacher for the new batch only (ours not for its repeats). Results:
benchmarks/results/qa_incremental.json, with the host's CPU flags.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))  # the scripted teacher

from history import generated_batches, run_histories  # noqa: E402

HISTORIES = (10, 100, 300)
BATCH_DOCS = 25


def point(history: int, url: str) -> dict:
    import pandas as pd

    from resources.curation.corpus import build_corpus
    from resources.curation.curator import TextCurator
    from resources.datasets.policy import DatasetPolicy
    from resources.knowledge.chunking import ChunkRules, Chunker
    from resources.knowledge.examples import HeldOut, build_knowledge_examples, qa_examples
    from resources.knowledge.policy import KnowledgePolicy
    from resources.knowledge.segments import example_segments, chunk_segments
    from resources.knowledge.teacher import TeacherModel
    from resources.models.base_model import BaseModelSource
    from resources.records import DOCUMENT_COLUMNS, rows
    from resources.segments import CHUNK_SEGMENTS, EXAMPLE_SEGMENTS, segment_dir
    from resources.storage import ArtifactStore

    curator, chunker = TextCurator(), Chunker(BaseModelSource().tokenizer().backend_tokenizer, ChunkRules())
    policy, knowledge = DatasetPolicy(), KnowledgePolicy(strategies=["qa"])
    split = policy.split_rules()
    columns = [*DOCUMENT_COLUMNS, "pii_found"]
    tables, load = generated_batches(curator, history + 1, BATCH_DOCS, seed=13, openings=True)
    names = list(tables)

    with tempfile.TemporaryDirectory() as tmp:
        store = ArtifactStore(root=str(Path(tmp) / "artifacts"))
        caps = {"max_calls_per_run": 10**7, "max_tokens_per_run": 10**10}  # the history is asked in one run here
        teacher = TeacherModel(base_url=url, model="teacher", max_concurrency=8, cache_dir=str(Path(tmp) / "cache"), **caps)

        def ours(batches):
            corpus = build_corpus(curator, store, "bench", [(b, "v1") for b in batches], load, columns)
            chunks = chunk_segments(store, "bench", corpus.chains, chunker, {"rules": "default"})
            session = teacher.session()
            start = time.perf_counter()
            made = example_segments(store, "bench", chunks.keys, knowledge, policy.title_template, split,
                                    session=session, teacher_identity=teacher.identity())
            return chunks, made, session, time.perf_counter() - start

        ours(names[:-1])  # the history, as the earlier batches left it (its replies in the cache)
        chunks, made, session, ours_s = ours(names)
        ours_calls = session.usage.calls
        assert made.partial == 0 and session.usage.failed == 0

        passages = [c for k in chunks.keys
                    for c in rows(pd.read_parquet(segment_dir(store, f"bench/{CHUNK_SEGMENTS}", k) / "chunks.parquet"))]
        (Path(tmp) / "cache").rename(Path(tmp) / "cache-ours")  # the baseline's cache: the history's replies only
        seeded = TeacherModel(base_url=url, model="teacher", max_concurrency=8, cache_dir=str(Path(tmp) / "cache"), **caps)
        history_passages = [c for c in passages if c["batch"] != names[-1]]
        qa_examples(history_passages, knowledge, seeded.session(), HeldOut(split))
        session = seeded.session()
        start = time.perf_counter()  # the baseline: every passage asked (cached but the new batch's), judged, de-duplicated
        whole = build_knowledge_examples(passages, knowledge, policy.title_template, held_out_docs=HeldOut(split))
        qa_examples(passages, knowledge, session, HeldOut(split), out=whole)
        baseline_s = time.perf_counter() - start

        own = lambda e: (e["doc_id"], e["messages"])  # noqa: E731
        linked = [e for k in made.keys for e in rows(pd.read_parquet(segment_dir(store, f"bench/{EXAMPLE_SEGMENTS}", k)
                                                                    / "examples.parquet"))]
        assert sorted(map(own, linked)) == sorted(map(own, whole.examples))  # the same examples
        assert session.usage.calls >= ours_calls  # both call the teacher for the new batch only (ours does not judge
        # a question that repeats one kept before)
        return {"history_batches": history, "passages": len(passages), "examples": len(linked),
                "duplicates_dropped": made.counts.get("qa_dropped_duplicate_question", 0),
                "teacher_calls": ours_calls, "baseline_teacher_calls": session.usage.calls, "ours_s": round(ours_s, 3),
                "ours_made": {"segments_made": made.made, "segments_reused": made.reused},
                "baseline_s": round(baseline_s, 3), "baseline_cached_replies": session.usage.cached,
                "speedup": round(baseline_s / ours_s, 1)}


def main() -> int:
    from servers.openai_server import serve
    from servers.scripted_teacher import build_teacher

    with serve(build_teacher(latency_s=0.0)) as url:
        return run_histories(__doc__.splitlines()[0], "qa_incremental", HISTORIES, lambda h: point(h, url),
                             batch_documents=BATCH_DOCS, teacher="scripted, 127.0.0.1")


if __name__ == "__main__":
    sys.exit(main())
