"""The golden hold-out as history grows: one more batch with 10, 100 and 300 batches already in (`make bench`).

A model with `golden_holdout_fraction: 0.1` (text_strategy `sections`, the default) hashes a tenth of its
documents out of training and asks about them; every batch adds held-out questions. With H batches of 25
generated documents in (`scale.generate_documents`: a third carry a name or an e-mail address), one more batch
costs, for the golden set, the instruction dataset and its contamination check:

- ours, as the assets run now: `golden_segments` (the new batch's held-out documents asked about and redacted
  once, the other segments read), `instruction_segments` (curated golden prompts in the keys; the held-out ones
  compared with each segment's stored signature table, only a segment that may duplicate one made again) and
  the blocking `golden_train_disjoint` check (each part's signatures made once, every part compared again);
- the baseline, as they ran before: every held-out document asked about and redacted again, every instruction
  segment made again (keyed by the whole golden set, which the batch changed) and every prompt of every part
  MinHashed again by the check.

Both build the same golden set and the same instruction dataset (asserted). Results:
benchmarks/results/holdout_incremental.json, with the host's CPU flags.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from history import generated_batches, run_histories  # noqa: E402

HISTORIES = (10, 100, 300)
BATCH_DOCS = 25


def point(history: int) -> dict:
    import pandas as pd

    from resources.curation.corpus import build_corpus
    from resources.curation.curator import TextCurator
    from resources.datasets.builder import contamination, golden_guard, held_out_golden
    from resources.datasets.policy import DatasetPolicy
    from resources.datasets.segments import (contamination_verdicts, golden_segments, instruction_segments,
                                             link_instructions)
    from resources.knowledge.chunking import ChunkRules, Chunker
    from resources.knowledge.examples import held_out_sections
    from resources.knowledge.policy import KnowledgePolicy
    from resources.knowledge.segments import chunk_segments, example_segments
    from resources.models.base_model import BaseModelSource
    from resources.records import DOCUMENT_COLUMNS, rows
    from resources.redaction.redactor import PiiRedactor
    from resources.segments import CHUNK_SEGMENTS, segment_dir
    from resources.storage import ArtifactStore

    curator, chunker = TextCurator(), Chunker(BaseModelSource().tokenizer().backend_tokenizer, ChunkRules())
    redactor = PiiRedactor(policy_path=str(ROOT / "policies" / "redaction.yaml"))
    redactor.engine()
    policy, knowledge = DatasetPolicy(golden_holdout_fraction=0.1), KnowledgePolicy(strategies=["headings"], golden_from="headings")
    split = policy.split_rules()
    curated = [json.loads(line)["question"] for line in (ROOT / "data" / "sample" / "support" / "golden.jsonl").read_text().splitlines()
               if line.strip()]
    columns = [*DOCUMENT_COLUMNS, "pii_found"]
    tables, load = generated_batches(curator, history + 1, BATCH_DOCS, seed=11)
    names = list(tables)

    with tempfile.TemporaryDirectory() as tmp:
        store = ArtifactStore(root=str(Path(tmp) / "artifacts"))

        def stages(batches):
            corpus = build_corpus(curator, store, "bench", [(b, "v1") for b in batches], load, columns)
            chunks = chunk_segments(store, "bench", corpus.chains, chunker, {"rules": "default"})
            examples = example_segments(store, "bench", chunks.keys, knowledge, policy.title_template, split)
            return corpus, chunks, examples

        def ours(corpus, chunks, examples, out: Path):
            golden = golden_segments(store, "bench", corpus.chains, chunks.keys, policy, knowledge, redactor)
            held_out = list(golden.examples["prompt"])
            made = instruction_segments(store, "bench", corpus.chains, examples.keys, policy, curated, held_out)
            out.mkdir()
            link_instructions(store, "bench", made.keys, out)
            checked = contamination_verdicts(store, "bench", out / "examples.parquet", curated + held_out)
            return golden, made, checked

        corpus, chunks, examples = stages(names[:-1])  # the history, as the earlier batches left it
        ours(corpus, chunks, examples, Path(tmp) / "seed")
        corpus, chunks, examples = stages(names)  # the new batch's own corpus, chunk and section segments
        start = time.perf_counter()
        golden, made, checked = ours(corpus, chunks, examples, Path(tmp) / "ours")
        ours_s = time.perf_counter() - start

        start = time.perf_counter()  # the baseline: the whole hold-out asked about and redacted again
        documents = [d for b in names for d in tables[b]]
        all_chunks = [c for k in chunks.keys
                      for c in rows(pd.read_parquet(segment_dir(store, f"bench/{CHUNK_SEGMENTS}", k) / "chunks.parquet"))]
        whole = list(held_out_golden(documents, split, policy.text_strategy, policy.title_template))
        whole += held_out_sections(all_chunks, split, knowledge, policy.title_template)
        redactor.redact_fields(whole, ("prompt", "answer"))
        golden_s = time.perf_counter() - start
        prompts = curated + [e["prompt"] for e in whole]
        start = time.perf_counter()  # every instruction segment made again, keyed and guarded by the whole golden set
        rebuilt = instruction_segments(store, "bench", corpus.chains, examples.keys, policy, prompts)
        instruction_s = time.perf_counter() - start
        start = time.perf_counter()  # and every prompt of every part MinHashed again by the check
        guard = golden_guard(prompts)
        table = pd.read_parquet(Path(tmp) / "ours" / "examples.parquet", columns=["prompt"])
        hits = sum(1 for prompt in table["prompt"] if contamination(guard, prompt))
        check_s = time.perf_counter() - start

        assert sorted(golden.examples["prompt"]) == sorted(e["prompt"] for e in whole)  # the same golden set
        assert made.ledger.to_dict() == rebuilt.ledger.to_dict()  # the same instruction dataset
        assert hits == 0 == sum(v["contaminated"] for v in checked.verdicts)
        baseline_s = golden_s + instruction_s + check_s
        return {"history_batches": history, "documents": len(documents), "held_out_questions": len(whole),
                "examples": int(made.ledger.kept), "ours_s": round(ours_s, 3),
                "ours_made": {"golden_segments": golden.made, "instruction_segments": made.made,
                              "instruction_segments_guarded": made.guarded, "check_parts_verified": checked.made},
                "baseline_s": round(baseline_s, 3),
                "baseline_parts_s": {"golden": round(golden_s, 3), "instruction_segments": round(instruction_s, 3),
                                     "check": round(check_s, 3)},
                "speedup": round(baseline_s / ours_s, 1)}


def main() -> int:
    return run_histories(__doc__.splitlines()[0], "holdout_incremental", HISTORIES, point, batch_documents=BATCH_DOCS,
                         golden_holdout_fraction=0.1)


if __name__ == "__main__":
    sys.exit(main())
