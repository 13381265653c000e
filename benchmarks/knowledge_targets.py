"""The answer targets on the sample corpus: do the served sample models state the documents' facts, cite them,
decline what the documents do not answer, and beat the base model with the same retrieval?

Each sample model (`models/support`, `models/policy`), exactly as declared in its YAML (the settings were chosen on
the golden sets' dev split: `--dev` prints the dev rows they were chosen on), runs through tuneforge's own graph
from the sample's raw files to `eval_report`, once per training seed (default three), each in a fresh project.
The golden sets hold out whole documents (every document a golden question names never trains; it stays in the
knowledge index), include unanswerable questions and a changed fact, and are checked for contamination against
every training target. Reported on the sealed test split only: per row — base, base + retrieval, candidate,
candidate + retrieval (the served configuration: same index, k, threshold and grounding check) — the mean over
seeds with a 95% t-interval, each seed's exact McNemar test of fact_correct (served candidate against served
base), and the questions lost as well as won.

Targets (issue "Answers you can trust"): served fact recall >= 0.85; >= +0.15 over base + retrieval with the
paired test p < 0.05; abstention recall >= 0.8 with false abstentions <= 0.10; hallucination <= 0.10; inline
citation precision >= 0.9; contamination 0. Results: benchmarks/results/knowledge_targets.json (host flags).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from host import host  # noqa: E402 (benchmarks/host.py)

os.environ.setdefault("OMP_NUM_THREADS", "1")

from resources.offline import apply_offline_defaults  # noqa: E402

apply_offline_defaults()

from served_answers import clean, dump, run_seed, summarise, table_lines, write_project  # noqa: E402


def attributes_of(model: str, inbox: Path, seed: int) -> dict:
    import yaml

    attributes = yaml.safe_load((ROOT / "models" / model / "defs.yaml").read_text())["attributes"]
    attributes["inbox"] = str(inbox)
    attributes["training"] = {**attributes.get("training", {}), "seed": seed}
    return attributes


def targets_of(summary: dict) -> dict:
    rows = summary["rows"]
    served = {m: v["mean"] for m, v in rows.get("candidate+retrieval", {}).items()}
    return {
        "served_fact_recall_at_least_0.85": served.get("fact_recall", 0) >= 0.85,
        "fact_recall_gain_at_least_0.15": summary["fact_recall_gain"]["mean"] >= 0.15,
        "paired_test_p_below_0.05_in_every_seed": summary["significant_in_every_seed"],
        "abstention_recall_at_least_0.8": served.get("abstention_recall", 0) >= 0.8,
        "false_abstention_at_most_0.10": served.get("false_abstention", 1) <= 0.10,
        "hallucination_at_most_0.10": served.get("hallucination", 1) <= 0.10,
        "citation_precision_at_least_0.9": served.get("citation_precision", 0) >= 0.9,
        "contamination_0": all(s == 0 for s in summary.get("contamination", [0])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="support,policy")
    parser.add_argument("--seeds", default="42,43,44", help="training seeds, one full run each")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder, removed after")
    parser.add_argument("--out", default="knowledge_targets", help="results file name under benchmarks/results/ "
                        "(another name keeps the full run's file when re-measuring one model)")
    args = parser.parse_args()
    target = ROOT / "benchmarks" / "results" / f"{args.out}.json"
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tuneforge-knowledge-"))
    seeds = [int(s) for s in args.seeds.split(",")]
    out = {"benchmark": "knowledge_targets", "host": host(), "seeds": seeds, "split_reported": "test (sealed)",
           "settings": "each model's YAML as committed (models/<name>/defs.yaml), chosen on the dev split", "models": {}}
    for model in args.models.split(","):
        runs = []
        for seed in seeds:
            work = workdir / f"{model}-{seed}"
            inbox = work / "inbox"
            shutil.copytree(ROOT / "data" / "sample" / model / "inbox", inbox)
            root = write_project(work / "project", attributes_of(model, inbox, seed),
                                 {"data": ROOT / "data", "policies": ROOT / "policies"})
            runs.append({"seed": seed, **run_seed(root, work, model)})
            clean(work / ".tuneforge")
            dump(target, {**out, "complete": False, "partial": {model: runs}})  # a long run keeps what it measured
        summary = summarise(runs)
        summary["contamination"] = [r["contamination"]["rate"] for r in runs]
        out["models"][model] = {"summary": summary, "targets": targets_of(summary), "runs": runs}
        print(f"\n{model} (test split, mean [95% CI] over {len(seeds)} seeds)")
        print("\n".join(table_lines(summary)))
        print("dev split (what the settings were chosen on), per seed:",
              [{r: round(s["dev_scores"][r].get("fact_recall", float("nan")), 3) for r in ("base+retrieval", "candidate+retrieval")}
               for s in runs if s.get("dev_scores")])
        print("paired fact_correct per seed:", summary["paired_fact_correct_per_seed"])
        print("targets:", out["models"][model]["targets"])
    dump(target, {**out, "complete": True})
    print(f"host flags: {' '.join(out['host']['cpu_flags'])}\nwrote {target.relative_to(ROOT)}")
    if args.workdir is None:
        clean(workdir)


if __name__ == "__main__":
    main()
