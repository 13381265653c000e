"""The answer targets on a real corpus no one on the project wrote: the READMEs of installed Python packages, with
hand-written questions (`benchmarks/data/real_corpus/`).

The 60 package READMEs named in `documents.json` (Markdown and reStructuredText, 1,000-12,000 characters) are
written to an inbox,
except the eight kept out of the index (their questions are unanswerable for the served system). One model is
run over them through tuneforge's own graph (`workflows.run_project`, what `tuneforge run` calls) to
`eval_report`, once per training seed, with the model's defaults for documents (grounded cloze, raft and
raft_pairs examples; the abstention share; the grounding check; the retrieval threshold calibrated on the dev
split). The golden file's answerable questions name their source README: those 26 documents are held out of
training whole and stay in the knowledge index. Reported on the sealed test split only: the four rows, mean and
95% t-interval over seeds, each seed's exact McNemar test of fact_correct, and the questions lost.

Targets (issue "Answers you can trust"): >= 60 hand-written answerable questions with facts and >= 15
unanswerable over held-out documents (the whole set; the test split reports what it holds); the served system
beats base + retrieval on fact recall with p < 0.05; abstention recall >= 0.7.
Results: benchmarks/results/knowledge_real_corpus.json (with the host's CPU flags).
"""

from __future__ import annotations

import argparse
import email
import json
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from host import host  # noqa: E402 (benchmarks/host.py)

os.environ.setdefault("OMP_NUM_THREADS", "1")

from resources.offline import apply_offline_defaults  # noqa: E402

apply_offline_defaults()

from served_answers import clean, dump, run_seed, summarise, table_lines, write_project  # noqa: E402

DATA = ROOT / "benchmarks" / "data" / "real_corpus"


def write_readmes(folder: Path, names: list[str], max_chars: int, skip: set[str] = frozenset()) -> list[str]:
    """The READMEs of the installed packages `names` (the corpus the golden questions were written on:
    `documents.json`), as .md / .rst files (those in `skip` are counted but not written). Which packages are
    installed differs between environments, so the corpus is named, never "the first N"; a named package that is
    missing or whose README no longer qualifies stops the benchmark, naming it."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted, found = set(names), []
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name not in wanted or name in found:
            continue
        meta = email.message_from_string(dist.read_text("METADATA") or "")
        body, kind = meta.get_payload() or "", (meta.get("Description-Content-Type") or "").lower()
        fmt = "md" if "markdown" in kind else "rst" if "rst" in kind else None
        if fmt is None or not 1000 <= len(body) <= max_chars:
            continue
        if name not in skip:
            (folder / f"{name}.{fmt}").write_text(body, encoding="utf-8")
        found.append(name)
    missing = sorted(wanted - set(found))
    if missing:
        raise SystemExit(f"knowledge_real_corpus: the packages {missing} (benchmarks/data/real_corpus/documents.json) "
                         "are not installed here, or their README is not Markdown/reStructuredText of 1,000-"
                         f"{max_chars} characters: the golden questions were written on them")
    return sorted(found)


def golden_for(inbox: Path, target: Path) -> dict:
    """The hand-written golden file with each source named by its file (how the corpus knows the document)."""
    files = {p.stem: p.name for p in inbox.iterdir()}
    rows = [json.loads(line) for line in (DATA / "golden.jsonl").read_text().splitlines() if line.strip()]
    with target.open("w") as out:
        for row in rows:
            if row.get("source_doc_id") and "unanswerable" not in row["tags"]:
                row["source_doc_id"] = files[row["source_doc_id"]]
            elif "unanswerable" in row["tags"]:
                row["source_doc_id"] = None  # its document is not in the corpus: nothing to hold out
            out.write(json.dumps(row) + "\n")
    return {"answerable": sum("unanswerable" not in r["tags"] for r in rows),
            "unanswerable": sum("unanswerable" in r["tags"] for r in rows)}


def attributes(inbox: Path, golden: Path, seed: int) -> dict:
    return {"name": "readmes", "description": "Answers questions about installed Python packages from their READMEs.",
            "inbox": str(inbox), "batch_by": "entry", "golden": [str(golden)],
            "redaction_policy": str(ROOT / "policies" / "redaction.yaml"),
            "training": {"method": "lora", "lora_r": 16, "lora_alpha": 32, "max_steps": 40, "learning_rate": 1e-3,
                         "seed": seed},
            "dataset": {"validation_fraction": 0.05, "min_train_examples": 50},
            "knowledge": {"chunk_tokens": 64, "chunk_overlap_tokens": 8},  # as the sample models (chosen on their dev split)
            "serving": {"retrieval_passages": 3}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="42,43,44", help="training seeds, one full run each")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder, removed after")
    args = parser.parse_args()
    documents = json.loads((DATA / "documents.json").read_text())
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tuneforge-readmes-"))
    seeds = [int(s) for s in args.seeds.split(",")]
    runs, counts = [], {}
    for seed in seeds:
        work = workdir / f"seed-{seed}"
        inbox = work / "inbox"
        names = write_readmes(inbox / "readmes", documents["all"], 12_000, set(documents["kept_out_of_index"]))
        if names != documents["all"]:
            raise SystemExit("the installed packages' READMEs are not the ones the golden set was written against "
                             f"(benchmarks/data/real_corpus/documents.json): {sorted(set(names) ^ set(documents['all']))}")
        counts = golden_for(inbox / "readmes", work / "golden.jsonl")
        root = write_project(work / "project", attributes(inbox, work / "golden.jsonl", seed))
        runs.append({"seed": seed, **run_seed(root, work, "readmes")})
        clean(work / ".tuneforge")
    summary = summarise(runs)
    served = {m: v["mean"] for m, v in summary["rows"].get("candidate+retrieval", {}).items()}
    targets = {"at_least_60_answerable_and_15_unanswerable": counts["answerable"] >= 60 and counts["unanswerable"] >= 15,
               "served_beats_base_retrieval_p_below_0.05_in_every_seed": summary["significant_in_every_seed"],
               "abstention_recall_at_least_0.7": served.get("abstention_recall", 0) >= 0.7}
    out = {"benchmark": "knowledge_real_corpus", "host": host(), "seeds": seeds, "split_reported": "test (sealed)",
           "corpus": {"what": "READMEs (Markdown, reStructuredText) in installed packages' metadata",
                      "documents_indexed": len(documents["all"]) - len(documents["kept_out_of_index"]),
                      "held_out_of_training": len(documents["held_out"]),
                      "kept_out_of_index": len(documents["kept_out_of_index"])},
           "golden": {"file": "benchmarks/data/real_corpus/golden.jsonl", **counts,
                      "test_split": runs[0]["evidence"] if runs else None},
           "summary": summary, "targets": targets, "runs": runs}
    dump(ROOT / "benchmarks" / "results" / "knowledge_real_corpus.json", out)
    print("\n".join(table_lines(summary)))
    print("paired fact_correct per seed:", summary["paired_fact_correct_per_seed"])
    print("targets:", targets)
    print(f"host flags: {' '.join(out['host']['cpu_flags'])}\nwrote benchmarks/results/knowledge_real_corpus.json")
    if args.workdir is None:
        clean(workdir)


if __name__ == "__main__":
    main()
