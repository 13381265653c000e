"""Evaluation throughput: batched greedy generation on the golden set vs. one prompt at a time.

Same model (the embedded SmolLM2-135M-Instruct, fp32 on CPU), same 30 golden questions, same
max_new_tokens, greedy decoding, one run; answers must be identical. Target: >= 4x examples/s.
Results: benchmarks/results/generation_throughput.json
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MAX_NEW_TOKENS = int(os.environ.get("BENCH_MAX_NEW_TOKENS", "64"))
BATCH = int(os.environ.get("BENCH_BATCH", "16"))


def main() -> int:
    import torch

    from resources.evaluation.generation import generate, load_for_generation
    from resources.models.base_model import BaseModelSource

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", str(os.cpu_count() or 1))))
    prompts = [json.loads(line)["question"] for line in (ROOT / "data" / "sample" / "golden.jsonl").read_text().splitlines()]
    path = BaseModelSource(cache_dir=str(ROOT / ".cache" / "tuneforge" / "models")).resolve().path
    tokenizer, model = load_for_generation(path)
    generate(tokenizer, model, prompts[:2], max_new_tokens=4, batch_size=2)  # warm-up

    start = time.perf_counter()
    single = [generate(tokenizer, model, [p], MAX_NEW_TOKENS, 1)[0] for p in prompts]
    single_s = time.perf_counter() - start
    start = time.perf_counter()
    batched = generate(tokenizer, model, prompts, MAX_NEW_TOKENS, BATCH)
    batched_s = time.perf_counter() - start

    same = sum(a.text == b.text for a, b in zip(single, batched))
    out = {
        "benchmark": "generation_throughput",
        "examples": len(prompts), "max_new_tokens": MAX_NEW_TOKENS, "batch_size": BATCH,
        "baseline": {"examples_per_s": round(len(prompts) / single_s, 3), "wall_s": round(single_s, 2),
                     "description": "one prompt at a time"},
        "ours": {"examples_per_s": round(len(prompts) / batched_s, 3), "wall_s": round(batched_s, 2),
                 "description": f"left-padded batches of {BATCH}"},
        "speedup": round(single_s / batched_s, 2),
        "identical_answers": same,
        "target": {"speedup": 4.0},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out["meets_target"] = out["speedup"] >= 4.0
    (ROOT / "benchmarks" / "results" / "generation_throughput.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
