"""The answer path's cost and its guard's precision, side by side in one run.

1. Latency. The gateway runs as deployed (its own process: real guards, Presidio with the shipped policy, a SQLite
   request log) over a knowledge index of the sample's knowledge-base articles (MiniLM), in front of a scripted
   upstream that answers each grounded question at once with a cited answer (right, or with a wrong number), so
   the figures are the gateway's own time. Two routes of the same model are asked the same questions in
   alternating rounds: `baseline` — retrieval on, the grounding check and the retrieval threshold off (the
   gateway before them) — and `ours` — the threshold and the grounding check on. p50/p95 per route, and the
   ratio of p50s (target: <= 1.10).
2. Guard precision. The output guard (real Presidio, the shipped policy) over correct answers — every sample
   golden reference answer to an answerable question — given, as the gateway gives it, the question and the
   passages retrieved for it: how many it would withhold as personal data (target: <= 2%), beside the same guard
   without the passages (what it did before).

Results: benchmarks/results/grounded_answer_overhead.json (with the host's CPU flags).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]
os.environ.setdefault("OMP_NUM_THREADS", "1")

from resources.offline import apply_offline_defaults  # noqa: E402

apply_offline_defaults()

import httpx  # noqa: E402
from gateway_process import start_gateway_process  # noqa: E402
from host import host, save  # noqa: E402
from servers.openai_server import Served, build_app, free_port  # noqa: E402

from resources.serving.gateway.app import GatewaySettings  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "6"))
ABSTAIN = "The passages do not answer this question."


def golden(model: str) -> list[dict]:
    rows = [json.loads(line) for line in (ROOT / "data" / "sample" / model / "golden.jsonl").read_text().splitlines()]
    return [r for r in rows if "unanswerable" not in r.get("tags", [])]


def knowledge_index(folder: Path) -> str:
    """A knowledge_index folder over the sample's KB articles (one passage each)."""
    import numpy as np
    import pandas as pd

    from resources.retrieval.index import PASSAGE_COLUMNS, KnowledgeIndexer

    articles = [json.loads(line) for line in (ROOT / "data" / "sample" / "support" / "inbox" / "kb_articles.jsonl")
                .read_text().splitlines()]
    passages = pd.DataFrame([{"chunk_id": a["id"], "doc_id": a["id"], "external_id": a["id"], "title": a["title"],
                              "section": "", "start": 0, "end": len(a["text"]), "text": a["text"],
                              "source_path": "kb_articles.jsonl", "source_sha256": "0" * 64} for a in articles])[PASSAGE_COLUMNS]
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "vectors.npy", KnowledgeIndexer().embed(list(passages["text"])))
    passages.to_parquet(folder / "passages.parquet")
    return str(folder)


def start_gateway(tmp: Path, upstream_port: int) -> tuple[subprocess.Popen, str]:
    settings = GatewaySettings(upstream_url=f"http://127.0.0.1:{upstream_port}", routes_file=str(tmp / "routes.json"),
                               keys_file=str(tmp / "keys.yaml"), database_url=f"sqlite:///{tmp / 'requests.db'}",
                               redaction_policy=str(ROOT / "policies" / "redaction.yaml"), upstream_timeout_s=60)
    return start_gateway_process(tmp, settings, free_port())


def latency_phase() -> dict:
    from resources.serving.gateway.keys import KeyRing

    questions = golden("support")
    # the upstream answers each question with its reference, cited; every fourth with a number changed
    book = {g["question"]: (g["reference_answer"] if i % 4 else g["reference_answer"].replace(g["must_include"][0], "42 units"))
            + " [1]" for i, g in enumerate(questions)}
    upstream = Served(build_app(answer_book=book), free_port()).start()
    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-") as folder:
        tmp = Path(folder)
        index = knowledge_index(tmp / "index")
        keys = KeyRing()
        key = keys.add("bench", ["baseline", "ours"], requests_per_minute=10_000_000, max_concurrent=1_000)
        keys.save(tmp / "keys.yaml")
        common = {"upstream": "answer-book", "adapter_version": "v1", "knowledge_index_dir": index, "retrieval": True,
                  "retrieval_passages": 3, "abstention": ABSTAIN}
        (tmp / "routes.json").write_text(json.dumps({"models": {
            "baseline": {**common, "grounding": "off", "min_retrieval_score": None},
            "ours": {**common, "grounding": "abstain", "min_retrieval_score": 0.35}}}))
        gateway, url = start_gateway(tmp, upstream.port)
        seconds = {"baseline": [], "ours": []}
        verdicts: dict[str, int] = {}
        try:
            with httpx.Client(timeout=60) as client:
                def ask(model: str, question: str) -> float:
                    started = time.perf_counter()
                    response = client.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                           json={"model": model, "messages": [{"role": "user", "content": question}]})
                    response.raise_for_status()
                    if model == "ours":
                        verdict = response.json()["tuneforge"].get("grounding")
                        verdicts[verdict] = verdicts.get(verdict, 0) + 1
                    return time.perf_counter() - started

                for g in questions[:5]:  # warm-up: the guards' and the embedder's models load on the first requests
                    ask("baseline", g["question"]), ask("ours", g["question"])
                for r in range(ROUNDS):  # alternate, so drift in the machine's speed hits both alike
                    for model in (("baseline", "ours") if r % 2 == 0 else ("ours", "baseline")):
                        seconds[model] += [ask(model, g["question"]) for g in questions]
        finally:
            gateway.terminate()
            gateway.wait(timeout=30)
            upstream.stop()

    def stats(values: list[float]) -> dict:
        ordered = sorted(values)
        return {"requests": len(values), "p50_s": round(statistics.median(values), 4),
                "p95_s": round(ordered[int(0.95 * (len(ordered) - 1))], 4)}

    baseline, ours = stats(seconds["baseline"]), stats(seconds["ours"])
    return {"baseline": baseline, "ours": ours, "ours_verdicts": verdicts, "p50_ratio": round(ours["p50_s"] / baseline["p50_s"], 3),
            "p95_ratio": round(ours["p95_s"] / baseline["p95_s"], 3)}


def guard_phase() -> dict:
    from resources.knowledge.grounding import retrieval_query
    from resources.redaction.redactor import PiiRedactor
    from resources.retrieval.index import KnowledgeIndexer
    from resources.safety.guards import Guards

    guards = Guards(PiiRedactor(policy_path=str(ROOT / "policies" / "redaction.yaml")).engine(), [], [])
    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-") as folder:
        index = KnowledgeIndexer().load(knowledge_index(Path(folder) / "index"))
        rows = golden("support") + golden("policy")
        found = index.passages([retrieval_query(g["question"]) for g in rows], 3)
    withheld_ours, withheld_before, examples = 0, 0, []
    for g, passages in zip(rows, found):
        context = "\n".join([g["question"], *(p["text"] for p in passages)])
        ours = not guards.check_output(g["reference_answer"], context=context).allowed
        before = not guards.check_output(g["reference_answer"]).allowed
        withheld_ours += ours
        withheld_before += before
        if ours or before:
            examples.append({"id": g["id"], "withheld_with_passages": ours, "withheld_without": before})
    return {"correct_answers": len(rows), "false_blocks_with_passages": withheld_ours,
            "false_block_rate_with_passages": round(withheld_ours / len(rows), 4),
            "false_blocks_without_passages": withheld_before,
            "false_block_rate_without_passages": round(withheld_before / len(rows), 4), "cases": examples}


def main() -> int:
    result = {"benchmark": "grounded_answer_overhead", "host": host(), "rounds": ROUNDS,
              "latency": latency_phase(), "guard": guard_phase(),
              "setup": "gateway in its own process (real guards, SQLite log) -> scripted upstream answering at once; "
                       "the same questions to a route without and with the threshold and grounding check, alternating"}
    result["targets"] = {"p50_overhead_at_most_10_percent": result["latency"]["p50_ratio"] <= 1.10,
                         "guard_false_blocks_at_most_2_percent": result["guard"]["false_block_rate_with_passages"] <= 0.02}
    save("grounded_answer_overhead", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
