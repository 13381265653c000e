"""The knowledge engine on a real corpus no one on the project wrote: the READMEs of installed Python packages.

The long descriptions (Markdown and reStructuredText) in the metadata of the packages tuneforge installs are
written to a folder, one file each, and one model is run over it through tuneforge's own graph
(`workflows.run_project`, what `tuneforge run` calls, in a fresh project with its own Dagster instance): raw
files -> chunks -> `headings` and `raft` examples -> a LoRA adapter -> `eval_report`. No golden file is given:
a share of the documents is hashed out and asked about section by section (`headings`), and those documents
never train. Reported side by side from the one evaluation: base, base + retrieval, candidate, candidate +
retrieval (the served configuration), with ROUGE-L and the MiniLM semantic similarity and the paired-bootstrap
95% interval of served minus base + retrieval; and per document: chunks and examples made.

Targets (issue: knowledge engine): >= 100 golden questions; every document yields >= 1 chunk and >= 1
example; no batch blocked by duplicates or length; the served configuration beats base + retrieval with the
interval above zero. Results: benchmarks/results/knowledge_real_corpus.json (with the host's CPU flags).
"""

from __future__ import annotations

import argparse
import email
import json
import os
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from host import host  # noqa: E402 (benchmarks/host.py)

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))

from resources.offline import apply_offline_defaults  # noqa: E402

apply_offline_defaults()

METRICS = ("rouge_l", "semantic_similarity", "token_f1", "context_support")
ROWS = ("base", "base+retrieval", "candidate", "candidate+retrieval")


def write_readmes(folder: Path, count: int, max_chars: int) -> list[str]:
    """The first `count` package READMEs (by name) of 1-`max_chars` characters, as .md / .rst files."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for dist in sorted(metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        meta = email.message_from_string(dist.read_text("METADATA") or "")
        body, kind = meta.get_payload() or "", (meta.get("Description-Content-Type") or "").lower()
        fmt = "md" if "markdown" in kind else "rst" if "rst" in kind else None
        name = (dist.metadata["Name"] or "").lower()
        if fmt is None or not 1000 <= len(body) <= max_chars or name in names:
            continue
        (folder / f"{name}.{fmt}").write_text(body, encoding="utf-8")
        names.append(name)
        if len(names) == count:
            break
    return names


def model_yaml(inbox: Path, holdout: float) -> str:
    import yaml

    attributes = {
        "name": "readmes", "description": "Answers questions about the installed Python packages from their READMEs.",
        "inbox": str(inbox), "batch_by": "entry",
        "redaction_policy": str(ROOT / "policies" / "redaction.yaml"),
        "training": {"method": "lora", "lora_r": 16, "lora_alpha": 32, "num_train_epochs": 1, "learning_rate": 5e-4},
        "dataset": {"text_strategy": "sections", "validation_fraction": 0.05, "golden_holdout_fraction": holdout,
                    "min_train_examples": 50},
        "knowledge": {"chunk_tokens": 128, "chunk_overlap_tokens": 16, "strategies": ["headings", "raft"],
                      "raft_distractors": 1},
        "serving": {"retrieval_passages": 2},
        "promotion": {"main_metric": "rouge_l", "max_runaway_rate": 1.0},
    }
    return yaml.safe_dump({"type": "orchestration.model.TuneforgeModel", "attributes": attributes}, sort_keys=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=int(os.environ.get("BENCH_REAL_DOCUMENTS", "40")))
    parser.add_argument("--max-chars", type=int, default=12_000, help="longest README taken (characters)")
    parser.add_argument("--holdout", type=float, default=0.3, help="dataset.golden_holdout_fraction")
    parser.add_argument("--max-steps", type=int, default=int(os.environ.get("BENCH_REAL_STEPS", "40")))
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder, removed after")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tuneforge-readmes-"))
    inbox = workdir / "inbox"
    names = write_readmes(inbox / "readmes", args.documents, args.max_chars)
    corpus_bytes = sum(p.stat().st_size for p in (inbox / "readmes").iterdir())
    (workdir / "models" / "readmes").mkdir(parents=True, exist_ok=True)
    (workdir / "models" / "readmes" / "defs.yaml").write_text(model_yaml(inbox, args.holdout))
    os.environ["DAGSTER_HOME"] = str(workdir / ".dagster")

    from orchestration import workflows
    from orchestration.project import load_project
    from resources.records import rows

    project = load_project(workdir)
    started = time.perf_counter()
    result = workflows.run_project(project, until="evaluation", max_steps=args.max_steps, log=print)
    wall = time.perf_counter() - started
    run = result.models[0]
    if run.error or run.evaluation is None:
        raise SystemExit(f"the run failed: {run.error or 'no evaluation'}")
    store = project.definitions.resources["store"]
    outcomes = [*run.batches.values(), run.datasets, run.training, run.evaluation]
    made = {k: v for o in outcomes if o is not None for k, v in o.artifacts.items()}
    report = store.read_json("readmes/eval_report", made["readmes/eval_report"], "scores.json")
    chunks = rows(store.read_table("readmes/document_chunks", made["readmes/document_chunks"], "chunks.parquet"))
    examples = rows(store.read_table("readmes/knowledge_examples", made["readmes/knowledge_examples"], "examples.parquet"))
    golden = rows(store.read_table("readmes/golden_dataset", made["readmes/golden_dataset"], "examples.parquet"))
    corpus_docs = {c["doc_id"] for c in chunks}
    with_examples = {e["source_doc_id"] for e in examples}
    blocked = [b for b, o in run.batches.items() if not o.success]
    scores, intervals = report["scores"], report["intervals"]
    served, base = scores["candidate+retrieval"], scores["base+retrieval"]
    gain = {m: round(served.get(m, 0) - base.get(m, 0), 4) for m in METRICS if m in served}
    interval = intervals.get("candidate+retrieval", {})
    main_metric = "rouge_l"
    targets = {
        "golden_at_least_100": len(golden) >= 100,
        "every_document_a_chunk": len(corpus_docs) == len(names),
        "every_document_an_example": corpus_docs <= with_examples,
        "no_batch_blocked": not blocked,
        "served_beats_base_retrieval_interval_above_zero": bool(interval.get(main_metric)) and interval[main_metric][0] > 0,
    }
    out = {
        "benchmark": "knowledge_real_corpus", "host": host(), "wall_s": round(wall, 1),
        "corpus": {"what": "READMEs (Markdown, reStructuredText) in installed packages' metadata",
                   "documents": len(names), "bytes": corpus_bytes, "max_chars": args.max_chars},
        "per_document": {"documents_with_chunks": len(corpus_docs), "documents_with_examples": len(corpus_docs & with_examples),
                         "chunks": len(chunks), "examples": len(examples)},
        "golden": {"questions": len(golden), "from": "headings of the documents hashed into the hold-out",
                   "golden_holdout_fraction": args.holdout},
        "training": {"strategies": ["headings", "raft"], "max_steps": args.max_steps},
        "rows": {row: {m: round(scores[row][m], 4) for m in METRICS if m in scores.get(row, {})} for row in ROWS},
        "served_minus_base_retrieval": gain,
        "interval_95_served_minus_base_retrieval": {m: interval[m] for m in METRICS if m in interval},
        "blocked_batches": blocked, "targets": targets, "meets_targets": all(targets.values()),
    }
    path = ROOT / "benchmarks" / "results" / "knowledge_real_corpus.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print("| row | " + " | ".join(METRICS) + " |")
    for row in ROWS:
        print(f"| {row} | " + " | ".join(f"{out['rows'][row].get(m, float('nan')):.3f}" for m in METRICS) + " |")
    print(json.dumps({"per_document": out["per_document"], "golden": len(golden), "gain": gain,
                      "interval": out["interval_95_served_minus_base_retrieval"], "targets": targets}))
    print(f"wall {wall:.0f} s; host flags: {' '.join(out['host']['cpu_flags'])}\nwrote {path}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
