"""What the knowledge benchmarks share: one model run through tuneforge's own graph (`workflows.run_project`, the
code `tuneforge run` calls), in a fresh project with its own Dagster instance, from raw files to `eval_report`, once
per training seed; its sealed test split's rows (the served candidate against the base model with the same
retrieval, threshold and grounding check, and both bare) collected per seed, with each seed's exact paired test
and the spread across seeds. The dev split is answered too (`Evaluator.answer_dev`): it is what settings were
chosen on; the test split is only reported.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

ROWS = ("base", "base+retrieval", "candidate", "candidate+retrieval")
METRICS = ("fact_recall", "fact_correct", "abstention_recall", "false_abstention", "hallucination", "citation_precision",
           "stale_fact", "rouge_l", "verbosity", "runaway_rate")


def write_project(root: Path, attributes: dict[str, Any], links: dict[str, Path] | None = None) -> Path:
    """A project folder holding one model (its `defs.yaml` from `attributes`) and links to what it names."""
    (root / "models" / attributes["name"]).mkdir(parents=True, exist_ok=True)
    for name, target in (links or {}).items():
        if not (root / name).exists():
            (root / name).symlink_to(target)
    (root / "models" / attributes["name"] / "defs.yaml").write_text(yaml.safe_dump(
        {"type": "orchestration.model.TuneforgeModel", "attributes": attributes}, sort_keys=False))
    return root


def run_seed(root: Path, work: Path, model: str, seed_sample: Path | None = None, log=print) -> dict:
    """One run to evaluation; the eval report's scores (test and dev), the paired tests and the per-question table."""
    from orchestration import workflows
    from orchestration.project import load_project
    from resources.evaluation.evaluator import Evaluator

    os.environ["DAGSTER_HOME"] = str(work / ".dagster")
    (work / ".dagster").mkdir(parents=True, exist_ok=True)
    project = load_project(root, work, evaluator=Evaluator(answer_dev=True))
    if seed_sample is not None:
        workflows.seed_sample(project, seed_sample, log)
    started = time.perf_counter()
    result = workflows.run_project(project, "evaluation", -1, [model], log=log)
    run = result.models[0]
    if run.error or run.evaluation is None:
        raise SystemExit(f"the run failed: {run.error or 'no evaluation'}")
    store = project.definitions.resources["store"]
    key = run.evaluation.artifacts[f"{model}/eval_report"]
    scores = store.read_json(f"{model}/eval_report", key, "scores.json")
    table = store.read_table(f"{model}/eval_report", key, "examples.parquet")
    made = {k: v for o in [*run.batches.values(), run.datasets, run.training] if o is not None for k, v in o.artifacts.items()}
    examples = store.read_json(f"{model}/knowledge_examples", made[f"{model}/knowledge_examples"], "counts.json") \
        if f"{model}/knowledge_examples" in made else {}
    adapter = store.read_json(f"{model}/lora_adapter", made[f"{model}/lora_adapter"], "tuneforge_manifest.json")["stats"] \
        if f"{model}/lora_adapter" in made else {}
    return {"wall_s": round(time.perf_counter() - started, 1), "scores": scores["scores"], "dev_scores": scores["dev_scores"],
            "paired": scores["paired"], "intervals": scores["intervals"], "evidence": scores["evidence"],
            "contamination": {k: scores["contamination"][k] for k in ("checked", "contaminated", "rate")},
            "serving": scores["serving"], "decision": run.decision.verdict if run.decision else None,
            "decision_reasons": run.decision.reasons if run.decision else [], "knowledge_examples": examples,
            "training": {k: adapter.get(k) for k in ("steps", "tokens_per_s", "base_eval_loss", "final_eval_loss")},
            "lost": lost_and_won(table),
            "retrieval": retrieval_comparison(project, model, made) if f"{model}/knowledge_index" in made else None}


RETRIEVAL_K = (1, 3, 5)


def retrieval_comparison(project, model: str, made: dict[str, str]) -> dict:
    """Does hybrid retrieval find the right document more often? Per golden split, the share of answerable questions
    naming a source document whose document is among the first k passages: the index's dense retrieval (what
    tuneforge serves: all-MiniLM-L6-v2 cosine), BM25 alone (bm25s, English stop words) and both fused by reciprocal
    rank (k=60, the usual constant), over the same passages (superseded and kept-out documents hidden from all)."""
    import bm25s
    import numpy as np

    from resources.knowledge.grounding import retrieval_query

    store = project.definitions.resources["store"]
    indexer = project.definitions.resources["indexer"]
    folder = store.local(f"{model}/knowledge_index", made[f"{model}/knowledge_index"])
    index = indexer.load(folder)
    golden = store.read_table(f"{model}/golden_dataset", made[f"{model}/golden_dataset"], "examples.parquet")
    ids = index.index.ids
    rows = [index.passages_by_id[i] for i in ids]
    visible = np.ones(len(ids), dtype=bool) if index.index.hidden is None else ~index.index.hidden
    names = [{str(n) for n in (r.get("external_id"), r.get("doc_id"), r.get("source_path"),
                               str(r.get("source_path") or "").rsplit("/", 1)[-1]) if n} for r in rows]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([r["text"] for r in rows], stopwords="en", show_progress=False), show_progress=False)
    depth = 50
    position = {chunk: j for j, chunk in enumerate(ids)}

    def ranked(query: str, vector) -> dict[str, list[int]]:
        dense_order = [position[c] for c, _ in index.index.search(vector[None, :], depth)[0]]
        words = [w for w in bm25s.tokenize(query, stopwords="en", return_ids=False, show_progress=False)[0]
                 if w in retriever.vocab_dict]
        scores = retriever.get_scores(words) if words else np.zeros(len(ids))
        scores = np.where(visible, np.asarray(scores, dtype=float), -np.inf)
        sparse_order = [int(j) for j in np.argsort(-scores)[:depth] if np.isfinite(scores[j])]
        fused: dict[int, float] = {}
        for order in (dense_order, sparse_order):
            for rank, j in enumerate(order):
                fused[j] = fused.get(j, 0.0) + 1.0 / (60 + rank + 1)
        return {"dense": dense_order, "bm25": sparse_order, "hybrid": sorted(fused, key=lambda j: -fused[j])}

    out: dict[str, Any] = {"k": list(RETRIEVAL_K)}
    split = golden["eval_split"] if "eval_split" in golden else None
    for part in ("dev", "test"):
        mask = (split == part) if split is not None else golden.index >= 0
        asked = golden[mask & golden["source_doc_id"].notna() &
                       ~golden["tags"].map(lambda t: "unanswerable" in list(t))]
        hits = {m: {k: 0 for k in RETRIEVAL_K} for m in ("dense", "bm25", "hybrid")}
        queries = [retrieval_query(q) for q in asked["prompt"]]
        vectors = indexer.embed(queries) if queries else []  # one batch per split
        for query, vector, source in zip(queries, vectors, asked["source_doc_id"]):
            for method, order in ranked(query, vector).items():
                for k in RETRIEVAL_K:
                    hits[method][k] += any(str(source) in names[j] for j in order[:k])
        out[part] = {"questions": len(asked), **{m: {f"recall@{k}": round(h[k] / max(len(asked), 1), 3)
                                                      for k in RETRIEVAL_K} for m, h in hits.items()}}
    return out


def lost_and_won(table) -> dict:
    """Per test question, the served candidate against the served base model on fact_correct: which it won and lost."""
    test = table[table["eval_split"] == "test"] if "eval_split" in table else table
    if "fact_correct" not in test:
        return {"won": [], "lost": []}
    cand = test[test["model"] == "candidate+retrieval"].set_index("id")["fact_correct"].dropna()
    base = test[test["model"] == "base+retrieval"].set_index("id")["fact_correct"].dropna()
    both = cand.index.intersection(base.index)
    return {"won": sorted(i for i in both if cand[i] > base[i]), "lost": sorted(i for i in both if cand[i] < base[i])}


def summarise(seeds: list[dict]) -> dict:
    """Per row and metric, the mean over seeds and a 95% t-interval of it; each seed's exact sign test on
    fact_correct (served candidate against served base)."""
    from scipy.stats import t as student

    out: dict[str, Any] = {"rows": {}, "seeds": len(seeds)}
    for row in ROWS:
        for metric in METRICS:
            values = [s["scores"].get(row, {}).get(metric) for s in seeds]
            values = [v for v in values if v is not None and not math.isnan(v)]
            if not values:
                continue
            mean = statistics.fmean(values)
            half = (student.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
                    if len(values) > 1 else float("nan"))
            out["rows"].setdefault(row, {})[metric] = {"mean": round(mean, 4), "ci95": [round(mean - half, 4), round(mean + half, 4)],
                                                       "per_seed": [round(v, 4) for v in values]}
    tests = [s["paired"].get("candidate+retrieval", {}).get("fact_correct") for s in seeds]
    out["paired_fact_correct_per_seed"] = tests
    out["significant_in_every_seed"] = all(t and t["wins"] > t["losses"] and t["p_value"] < 0.05 for t in tests)
    gains = [s["scores"]["candidate+retrieval"].get("fact_recall", 0) - s["scores"]["base+retrieval"].get("fact_recall", 0)
             for s in seeds]
    out["fact_recall_gain"] = {"mean": round(statistics.fmean(gains), 4), "per_seed": [round(g, 4) for g in gains]}
    lost = [q for s in seeds for q in s["lost"]["lost"]]
    out["questions_lost"] = {q: lost.count(q) for q in sorted(set(lost))}  # question -> seeds it was lost in
    return out


def table_lines(summary: dict) -> list[str]:
    shown = [m for m in METRICS if any(m in r for r in summary["rows"].values())]
    lines = ["| row | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
    for row, metrics in summary["rows"].items():
        lines.append(f"| {row} | " + " | ".join(
            f"{metrics[m]['mean']:.3f} [{metrics[m]['ci95'][0]:.3f}, {metrics[m]['ci95'][1]:.3f}]" if m in metrics else "—"
            for m in shown) + " |")
    return lines


def clean(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def dump(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
