"""Which weights dtype vLLM-CPU should serve in on this host: the base model in bfloat16 and in float32, one run.

Each dtype gets its own fresh vLLM (the embedded SmolLM2-135M, the product's `VllmServer` settings otherwise),
a warm-up, then the same 16 golden questions sent at once (greedy, 64 tokens max). Measured: completion
tokens/s, requests/s and p50/p95 latency per dtype, beside the host's CPU flags and what
`resources.serving.vllm_server.serving_dtype()` picks for this host, so the choice is checked against a
measurement on each host kind it is run on.
Results: benchmarks/results/serving_dtype.json
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from host import host, save  # noqa: E402
from serving_throughput import concurrent, free_port, summary  # noqa: E402


def main() -> int:
    from resources.models.base_model import BaseModelSource
    from resources.serving.vllm_server import VllmServer, serving_dtype

    prompts = [json.loads(line)["question"] for line in
               (ROOT / "data" / "sample" / "support" / "golden.jsonl").read_text().splitlines()][:16]
    base = BaseModelSource().resolve().path
    out = {"benchmark": "serving_dtype", "requests": len(prompts), "host": host(), "chosen": serving_dtype()}
    for dtype in ("bfloat16", "float32"):
        with tempfile.TemporaryDirectory() as state:
            server = VllmServer(port=free_port(), state_dir=state, python=str(ROOT / ".venv-vllm" / "bin" / "python"),
                                dtype=dtype)
            try:
                start = time.perf_counter()
                server.ensure_running(base, "base")
                started = time.perf_counter() - start
                asyncio.run(concurrent(server.base_url, "base", prompts[:2], {}))
                latencies, wall, tokens, _ = asyncio.run(concurrent(server.base_url, "base", prompts, {}))
                out[dtype] = {**summary(latencies, wall, tokens, f"base model in {dtype}, {len(prompts)} at once"),
                              "startup_s": round(started, 1)}
            finally:
                server.stop()
        print(json.dumps(out[dtype]), flush=True)
    faster = max(("bfloat16", "float32"), key=lambda d: out[d]["completion_tokens_per_s"])
    out["faster"] = faster
    out["bf16_vs_fp32_tokens_per_s"] = round(out["bfloat16"]["completion_tokens_per_s"] / out["float32"]["completion_tokens_per_s"], 2)
    out["choice_matches_measurement"] = out["chosen"] == faster
    save("serving_dtype", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
