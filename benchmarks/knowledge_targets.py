"""The knowledge targets on the sample's documents: does the served model state the documents' facts?

One model is declared over the policy model's documents only — `handbooks/` (a DOCX handbook, a PDF services
agreement, a 52 kB Markdown manual) and `policies/` (four Markdown policies): no question/answer shape at all.
It is run through tuneforge's own graph (`workflows.run_project`, the code `tuneforge run` calls, in a fresh
project with its own Dagster instance) from raw files to `eval_report`, with the offline `cloze` strategy
(no teacher) and the grounded prompt the gateway builds. The golden set (`data/sample/policy/golden_documents
.jsonl`) asks, in people's words, about every fact the documents state, each with the facts an answer must
include, plus questions the documents do not answer.

Reported side by side, from the one evaluation: base, base + retrieval, candidate, candidate + retrieval (the
served configuration: same index version, same k, same template), with fact recall (an answer longer than 3x
its reference counts as a miss), citation support, abstention on the unanswerable questions, ROUGE-L and the
MiniLM semantic similarity, and the paired-bootstrap 95% interval of served minus base + retrieval.

Targets (issue: knowledge engine): served fact recall >= 0.80 and >= base + retrieval + 0.15 with the interval
above zero; ROUGE-L or semantic similarity >= base + retrieval + 0.10.
Results: benchmarks/results/knowledge_targets.json (with the host's CPU flags).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from host import host  # noqa: E402 (benchmarks/host.py)

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))

from resources.offline import apply_offline_defaults  # noqa: E402

apply_offline_defaults()

SAMPLE = ROOT / "data" / "sample" / "policy"
METRICS = ("fact_recall", "citation_support", "abstention", "rouge_l", "semantic_similarity")
ROWS = ("base", "base+retrieval", "candidate", "candidate+retrieval")


def model_yaml(inbox: Path, epochs: float, learning_rate: float, variants: int, oracle_fraction: float,
               chunk_tokens: int = 128) -> str:
    import yaml

    attributes = {
        "name": "documents",
        "description": "Answers staff questions from the sample's handbooks and policies (documents only).",
        "inbox": str(inbox), "batch_by": "entry",
        "golden": [str(SAMPLE / "golden_documents.jsonl")],
        "public_entities": ["Quillstack"],
        "redaction_policy": str(ROOT / "policies" / "redaction.yaml"),
        "training": {"method": "lora", "lora_r": 16, "lora_alpha": 32, "num_train_epochs": epochs,
                     "learning_rate": learning_rate},
        "dataset": {"text_strategy": "sections", "validation_fraction": 0.1, "min_train_examples": 20},
        "knowledge": {"chunk_tokens": chunk_tokens, "chunk_overlap_tokens": 16, "strategies": ["cloze"], "raft_distractors": 1,
                      "raft_oracle_fraction": oracle_fraction, "grounded_variants": variants},
        "serving": {"retrieval_passages": 2},
        "promotion": {"main_metric": "fact_recall", "max_runaway_rate": 0.5},
    }
    return yaml.safe_dump({"type": "orchestration.model.TuneforgeModel", "attributes": attributes}, sort_keys=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=float(os.environ.get("BENCH_KNOWLEDGE_EPOCHS", "4")))
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--variants", type=int, default=3, help="knowledge.grounded_variants")
    parser.add_argument("--oracle-fraction", type=float, default=1.0, help="knowledge.raft_oracle_fraction")
    parser.add_argument("--chunk-tokens", type=int, default=64, help="knowledge.chunk_tokens (64: about one or two "
                        "sentences a passage)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder, removed after")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tuneforge-knowledge-"))
    inbox = workdir / "inbox"
    for batch in ("handbooks", "policies"):
        shutil.copytree(SAMPLE / "inbox" / batch, inbox / batch, dirs_exist_ok=True)
    (workdir / "models" / "documents").mkdir(parents=True, exist_ok=True)
    (workdir / "models" / "documents" / "defs.yaml").write_text(model_yaml(inbox, args.epochs, args.learning_rate, args.variants, args.oracle_fraction,
                                                                           args.chunk_tokens))
    os.environ["DAGSTER_HOME"] = str(workdir / ".dagster")

    from orchestration import workflows
    from orchestration.project import load_project

    project = load_project(workdir)
    started = time.perf_counter()
    result = workflows.run_project(project, until="evaluation", log=print)
    wall = time.perf_counter() - started
    run = result.models[0]
    if run.error or run.evaluation is None:
        raise SystemExit(f"the run failed: {run.error or 'no evaluation'}")
    store = project.definitions.resources["store"]
    report = store.read_json("documents/eval_report", run.evaluation.artifacts["documents/eval_report"], "scores.json")
    outcomes = [*run.batches.values(), run.datasets, run.training]
    made = next((o.artifacts["documents/knowledge_examples"] for o in outcomes
                 if o is not None and "documents/knowledge_examples" in o.artifacts), None)
    examples = store.read_json("documents/knowledge_examples", made, "counts.json") if made else {}
    scores, intervals = report["scores"], report["intervals"]
    served, base = scores["candidate+retrieval"], scores["base+retrieval"]
    gain = {m: round(served.get(m, 0) - base.get(m, 0), 4) for m in METRICS if m in served}
    interval = intervals.get("candidate+retrieval", {})
    targets = {
        "served_fact_recall_at_least_0.80": served.get("fact_recall", 0) >= 0.80,
        "fact_recall_gain_at_least_0.15": gain.get("fact_recall", 0) >= 0.15,
        "fact_recall_interval_above_zero": bool(interval.get("fact_recall")) and interval["fact_recall"][0] > 0,
        "rouge_l_or_semantic_gain_at_least_0.10": max(gain.get("rouge_l", 0), gain.get("semantic_similarity", 0)) >= 0.10,
    }
    out = {
        "benchmark": "knowledge_targets", "host": host(), "wall_s": round(wall, 1),
        "corpus": "data/sample/policy/inbox/{handbooks,policies} (documents only)",
        "golden": {"file": "data/sample/policy/golden_documents.jsonl",
                   "questions": sum(1 for _ in open(SAMPLE / "golden_documents.jsonl"))},
        "training": {"strategy": "cloze", "grounded_variants": args.variants, "chunk_tokens": args.chunk_tokens,
                     "raft_oracle_fraction": args.oracle_fraction, "epochs": args.epochs, "learning_rate": args.learning_rate,
                     "knowledge_examples": examples},
        "rows": {row: {m: round(scores[row][m], 4) for m in METRICS if m in scores.get(row, {})} for row in ROWS},
        "served_minus_base_retrieval": gain,
        "interval_95_served_minus_base_retrieval": {m: interval[m] for m in METRICS if m in interval},
        "targets": targets, "meets_targets": all(targets.values()),
    }
    path = ROOT / "benchmarks" / "results" / "knowledge_targets.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print("| row | " + " | ".join(METRICS) + " |")
    for row in ROWS:
        print(f"| {row} | " + " | ".join(f"{out['rows'][row].get(m, float('nan')):.3f}" for m in METRICS) + " |")
    print(json.dumps({"gain": gain, "interval": out["interval_95_served_minus_base_retrieval"], "targets": targets}))
    print(f"wall {wall:.0f} s; host flags: {' '.join(out['host']['cpu_flags'])}\nwrote {path}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
