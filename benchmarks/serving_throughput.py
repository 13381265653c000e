"""Serving throughput and latency: vLLM (multi-LoRA) behind the gateway vs. transformers `generate`.

One run, same 16 golden questions, same adapter, greedy, same max_tokens:
- baseline: transformers + PEFT `generate`, one request at a time (what serving without vLLM looks like);
- vLLM direct: the 16 requests concurrently against vLLM with the adapter (runtime-loaded LoRA);
- gateway: the same 16 concurrent requests through the guardrail gateway (keys, guards, request log);
- vLLM base model (what a LoRA request costs on CPU), and the adapter merged into the base weights on its
  own vLLM, straight and through the gateway (DeploymentConfig.serve_merged).
vLLM runs in the dtype `VllmServer(dtype="auto")` picks for this host (`serving_dtype`: bfloat16 with
AMX/AVX512-BF16 or a GPU, float32 otherwise; BENCH_VLLM_DTYPE=float32 or bfloat16 to force one; the baseline
stays float32, as evaluation generates). Answers are compared, gateway vs. vLLM direct.
Targets: gateway >= 6x the baseline's requests/s; gateway overhead <= 10% of vLLM's p50 latency.
Results: benchmarks/results/serving_throughput.json
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from host import save  # noqa: E402 (benchmarks/host.py)

N = int(os.environ.get("BENCH_REQUESTS", "16"))
MAX_TOKENS = int(os.environ.get("BENCH_MAX_TOKENS", "64"))
DTYPE = os.environ.get("BENCH_VLLM_DTYPE", "auto")  # auto: as VllmServer(dtype="auto") picks for this host (serving_dtype)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(latencies: list[float], wall: float, tokens: int, description: str) -> dict:
    return {"description": description, "requests": len(latencies), "wall_s": round(wall, 2),
            "requests_per_s": round(len(latencies) / wall, 3), "completion_tokens_per_s": round(tokens / wall, 1),
            "p50_latency_s": round(statistics.median(latencies), 3), "p95_latency_s": round(pct(latencies, 0.95), 3)}


async def concurrent(url: str, model: str, prompts: list[str], headers: dict) -> tuple[list[float], float, int, list[str]]:
    import httpx

    async with httpx.AsyncClient(timeout=600, headers=headers) as client:
        async def one(prompt: str):
            start = time.perf_counter()
            r = await client.post(f"{url}/v1/chat/completions", json={
                "model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS, "temperature": 0})
            r.raise_for_status()
            body = r.json()
            return time.perf_counter() - start, body["usage"]["completion_tokens"], body["choices"][0]["message"]["content"]

        start = time.perf_counter()
        results = await asyncio.gather(*(one(p) for p in prompts))
        wall = time.perf_counter() - start
    return [r[0] for r in results], wall, sum(r[1] for r in results), [r[2] for r in results]


def adapter_for_bench(base: str, work: Path) -> tuple[str, str]:
    """The support adapter `make demo` last trained, if there is one, else a random LoRA (same shapes as training's)."""
    from dagster import AssetKey, DagsterInstance

    home = ROOT / ".dagster"
    event = None
    if (home / "dagster.yaml").exists():
        instance = DagsterInstance.from_config(str(home))
        event = instance.get_latest_materialization_event(AssetKey(["support", "lora_adapter"]))
        instance.dispose()
    if event is not None:
        version = event.asset_materialization.tags["dagster/data_version"]
        return str(ROOT / ".tuneforge" / "artifacts" / "support" / "lora_adapter" / event.asset_materialization.metadata["artifact"].value), version
    else:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
            r=16, lora_alpha=32, init_lora_weights=False,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
        model.save_pretrained(work / "adapter")
        AutoTokenizer.from_pretrained(base).save_pretrained(work / "adapter")
        return str(work / "adapter"), "random-lora-r16"


def merged_copy(base: str, adapter: str, out: Path) -> str:
    from resources.training.merge import merge_adapter

    merge_adapter(base, adapter, out)
    return str(out)


def main() -> int:
    from resources.evaluation.generation import generate, load_for_generation
    from resources.models.base_model import BaseModelSource
    from resources.redaction.redactor import PiiRedactor
    from resources.requestlog import RequestLogSource
    from resources.retrieval.index import KnowledgeIndexer
    from resources.serving.deploy import ServingStack, deploy
    from resources.serving.gateway.keys import KeyRing
    from resources.serving.gateway_server import GatewayServer
    from resources.serving.vllm_server import VllmServer

    import torch

    prompts = [json.loads(line)["question"] for line in (ROOT / "data" / "sample" / "support" / "golden.jsonl").read_text().splitlines()][:N]
    base = BaseModelSource().resolve().path
    work = Path(tempfile.mkdtemp(prefix="tf-serving-bench-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # models and servers' state: gigabytes, removed at exit
    adapter, version = adapter_for_bench(base, work)
    out: dict = {"benchmark": "serving_throughput", "requests": len(prompts), "max_tokens": MAX_TOKENS,
                 "adapter": version, "cpu_threads": os.cpu_count(), "vllm_dtype": VllmServer(dtype=DTYPE).resolved_dtype(), "baseline_dtype": "float32"}

    # baseline: transformers + PEFT, one request at a time
    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer, model = load_for_generation(base, adapter)
    generate(tokenizer, model, prompts[:1], 4, 1)
    latencies, tokens, start = [], 0, time.perf_counter()
    for p in prompts:
        t = time.perf_counter()
        g = generate(tokenizer, model, [p], MAX_TOKENS, 1)[0]
        latencies.append(time.perf_counter() - t)
        tokens += g.new_tokens
    out["baseline"] = summary(latencies, time.perf_counter() - start, tokens, "transformers+PEFT generate, one at a time")
    del model

    state = work / "serving"
    python = str(ROOT / ".venv-vllm" / "bin" / "python")
    vllm = VllmServer(port=free_port(), state_dir=str(state), python=python, dtype=DTYPE)
    merged_port = free_port()
    gateway = GatewayServer(port=free_port(), state_dir=str(state))
    stack = ServingStack(vllm, gateway, PiiRedactor(policy_path=str(ROOT / "policies" / "redaction.yaml")), KnowledgeIndexer(),
                         RequestLogSource(database_url=f"sqlite:///{state / 'requests.db'}"))

    def measure(label: str, url: str, model_name: str, headers: dict, description: str) -> list[str]:
        asyncio.run(concurrent(url, model_name, prompts[:2], headers))  # warm-up
        lat, wall, toks, texts = asyncio.run(concurrent(url, model_name, prompts, headers))
        out[label] = summary(lat, wall, toks, description)
        return texts

    try:
        deployment = deploy(stack, "bench", version, adapter, base, log=lambda _: None)
        ring = KeyRing.load(gateway.keys_file)
        key = ring.add("bench", ["bench", "base"], requests_per_minute=100_000, max_concurrent=64)
        ring.save(gateway.keys_file)
        auth = {"Authorization": f"Bearer {key}"}
        direct = measure("vllm_direct", vllm.base_url, deployment.served_model, {},
                         f"{len(prompts)} concurrent requests straight to vLLM, the adapter as a runtime-loaded LoRA")
        through = measure("gateway", gateway.url, "bench", auth, "the same through the gateway (keys, guards, request log)")
        out["gateway_same_answers_as_vllm"] = sum(a == b for a, b in zip(through, direct))
        measure("vllm_base_model", vllm.base_url, "base", {}, "the base model without adapter, straight to vLLM")
        merged = merged_copy(base, adapter, work / "merged")
        deployment = deploy(stack, "bench", version, adapter, base, log=lambda _: None,
                            merged_path=merged, merged_port=merged_port)
        measure("vllm_merged_direct", f"http://127.0.0.1:{merged_port}", deployment.served_model, {},
                "the adapter merged into the base weights, served as a plain model by its own vLLM")
        measure("gateway_merged", gateway.url, "bench", auth,
                "the merged model through the gateway (a model's serving.serve_merged)")
    finally:
        gateway.stop()
        vllm.stop_all()
        vllm.model_copy(update={"port": merged_port}).stop()

    base_rps = out["baseline"]["requests_per_s"]
    out["speedup_gateway_lora_vs_sequential_generate"] = round(out["gateway"]["requests_per_s"] / base_rps, 2)
    out["speedup_gateway_merged_vs_sequential_generate"] = round(out["gateway_merged"]["requests_per_s"] / base_rps, 2)
    out["speedup_vllm_lora_vs_sequential_generate"] = round(out["vllm_direct"]["requests_per_s"] / base_rps, 2)
    p50 = out["vllm_direct"]["p50_latency_s"]
    out["gateway_overhead_p50"] = round((out["gateway"]["p50_latency_s"] - p50) / p50, 4)
    out["lora_cost_vs_base_tokens_per_s"] = round(out["vllm_base_model"]["completion_tokens_per_s"]
                                                  / out["vllm_direct"]["completion_tokens_per_s"], 2)
    out["merged_vs_lora_tokens_per_s"] = round(out["vllm_merged_direct"]["completion_tokens_per_s"]
                                               / out["vllm_direct"]["completion_tokens_per_s"], 2)
    out["target"] = {"speedup": 6.0, "gateway_overhead_p50": 0.10}
    best = max(out["speedup_gateway_lora_vs_sequential_generate"], out["speedup_gateway_merged_vs_sequential_generate"])
    out["meets_target"] = {"speedup_lora": out["speedup_gateway_lora_vs_sequential_generate"] >= 6.0,
                           "speedup_merged": out["speedup_gateway_merged_vs_sequential_generate"] >= 6.0,
                           "best_speedup": best, "gateway_overhead": out["gateway_overhead_p50"] <= 0.10}
    save("serving_throughput", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
