"""N models on one host: throughput and latency for 1, 2, 4, 8 adapters x 1, 4, 16, 64 concurrent clients.

Every request goes through the guardrail gateway with retrieval on (each model's route grounds the question in a
knowledge index built from the sample knowledge base), requests spread round-robin over the models. Deployments:
- `lora`: one vLLM, every model a runtime-loaded LoRA on it, tuned for the count (max_loras = max_cpu_loras = N,
  max_lora_rank = the adapters' rank);
- `merged_routed`: every model merged into its own copy of the base weights, one vLLM per model (KV cache
  1 GiB each), the gateway routing by model name, every server on every core (vLLM's default binding);
- `merged_pinned`: the same, each server bound to cores of its own (`placement.core_slices`: disjoint slices
  while there are enough cores, else one core each in turn, one thread);
- `hybrid` (where not every model fits merged): as many models merged and pinned as the host holds
  (`placement.merged_capacity`), the rest runtime LoRAs on the base model's vLLM.
Baselines, same grounded prompts, same adapters: transformers + PEFT `generate` one request at a time (the
adapter switched per request), and batched `generate` (the requests grouped by adapter, one batch per group).
Target: >= 6x the sequential baseline's requests/s at 16 clients, for every adapter count.
Environment: SWEEP_ADAPTERS (1,2,4,8), SWEEP_CLIENTS (1,4,16,64), SWEEP_CONFIGS (lora,merged_routed,merged_pinned),
SWEEP_MAX_TOKENS (64), BENCH_VLLM_DTYPE (auto: as `serving_dtype` picks for the host), SWEEP_APPEND=1 (add these
configs to the last results of the same host, keeping its baselines; each run records when it was measured).
Results: benchmarks/results/serving_sweep.json (+ serving_sweep.png)
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.host import host as host_info  # noqa: E402
from benchmarks.serving_throughput import free_port, pct  # noqa: E402

ADAPTERS = [int(x) for x in os.environ.get("SWEEP_ADAPTERS", "1,2,4,8").split(",")]
CLIENTS = [int(x) for x in os.environ.get("SWEEP_CLIENTS", "1,4,16,64").split(",")]
CONFIGS = os.environ.get("SWEEP_CONFIGS", "lora,merged_routed,merged_pinned").split(",")
MAX_TOKENS = int(os.environ.get("SWEEP_MAX_TOKENS", "64"))
DTYPE = os.environ.get("BENCH_VLLM_DTYPE", "auto")
RANK = 16
BASELINE_REQUESTS = 16


def make_adapters(base: str, n: int, work: Path) -> list[str]:
    """n LoRA adapters of training's shape (rank 16 on every projection), each its own random weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    paths = []
    for i in range(n):
        torch.manual_seed(i)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
            r=RANK, lora_alpha=2 * RANK, init_lora_weights=False,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
        with torch.no_grad():  # small random weights: answers stay close to the base model's (realistic lengths)
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.mul_(0.05)
        path = work / f"adapter-{i}"
        model.save_pretrained(path)
        AutoTokenizer.from_pretrained(base).save_pretrained(path)
        paths.append(str(path))
    return paths


def knowledge_index(base: str, folder: Path) -> Path:
    """A knowledge index over the sample knowledge base, built the way the `knowledge_index` asset builds one."""
    import numpy as np
    import pandas as pd
    from transformers import AutoTokenizer

    from resources.ingestion.inbox import Inbox
    from resources.knowledge.chunking import Chunker
    from resources.retrieval.index import PASSAGE_COLUMNS, KnowledgeIndexer
    from resources.storage import write_json

    read = Inbox(path=str(ROOT / "data" / "sample" / "support" / "inbox")).read("kb_articles.jsonl")
    chunks, _ = Chunker(AutoTokenizer.from_pretrained(base).backend_tokenizer).chunk_all(read.documents)
    passages = pd.DataFrame([{c: ch.get(c) for c in PASSAGE_COLUMNS} for ch in chunks])
    indexer = KnowledgeIndexer()
    index = indexer.build(list(passages["chunk_id"]), list(passages["text"]))
    folder.mkdir(parents=True)
    np.save(folder / "vectors.npy", index.vectors)
    passages.to_parquet(folder / "passages.parquet")
    write_json(folder, "index.json", {"model": indexer.model, "dim": int(index.vectors.shape[1]), "passages": len(passages)})
    return folder


def baselines(base: str, adapters: list[str], grounded: list[list[dict]]) -> dict:
    """Sequential and batched transformers + PEFT generate over the same grounded prompts, requests round-robin
    over the adapters."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from resources.evaluation.generation import generate

    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = AutoTokenizer.from_pretrained(adapters[0])
    tokenizer.padding_side = "left"  # decoder-only batches are padded on the left
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32),
                                      adapters[0], adapter_name="a0")
    for i, path in enumerate(adapters[1:], 1):
        model.load_adapter(path, adapter_name=f"a{i}")
    model.eval()
    n = len(adapters)
    prompts = grounded[:BASELINE_REQUESTS]
    generate(tokenizer, model, prompts[:1], 4, 1)
    latencies, tokens, start = [], 0, time.perf_counter()
    for i, prompt in enumerate(prompts):
        model.set_adapter(f"a{i % n}")
        t = time.perf_counter()
        tokens += generate(tokenizer, model, [prompt], MAX_TOKENS, 1)[0].new_tokens
        latencies.append(time.perf_counter() - t)
    sequential = summary(latencies, time.perf_counter() - start, tokens)
    tokens, start = 0, time.perf_counter()
    for a in range(n):
        group = [p for i, p in enumerate(prompts) if i % n == a]
        if group:
            model.set_adapter(f"a{a}")
            tokens += sum(g.new_tokens for g in generate(tokenizer, model, group, MAX_TOKENS, len(group)))
    wall = time.perf_counter() - start
    batched = summary([wall] * len(prompts), wall, tokens)
    del model
    return {"sequential_generate": sequential, "batched_generate": batched}


def summary(latencies: list[float], wall: float, tokens: int) -> dict:
    return {"requests": len(latencies), "wall_s": round(wall, 2), "requests_per_s": round(len(latencies) / wall, 3),
            "completion_tokens_per_s": round(tokens / wall, 1), "p50_latency_s": round(sorted(latencies)[len(latencies) // 2], 3),
            "p95_latency_s": round(pct(latencies, 0.95), 3)}


async def load(url: str, key: str, models: list[str], questions: list[str], clients: int) -> dict:
    """`clients` closed-loop clients send max(16, clients) requests between them, request i to model i mod N."""
    import httpx

    total = max(16, clients)
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    latencies, tokens, cited = [], [0], [0]

    async with httpx.AsyncClient(timeout=900, headers={"Authorization": f"Bearer {key}"}) as client:
        async def worker():
            while not queue.empty():
                i = queue.get_nowait()
                t = time.perf_counter()
                r = await client.post(f"{url}/v1/chat/completions", json={
                    "model": models[i % len(models)], "temperature": 0, "max_tokens": MAX_TOKENS,
                    "messages": [{"role": "user", "content": questions[i % len(questions)]}]})
                r.raise_for_status()
                body = r.json()
                latencies.append(time.perf_counter() - t)
                tokens[0] += body["usage"]["completion_tokens"]
                cited[0] += bool((body.get("tuneforge") or {}).get("sources"))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - start
    return {**summary(latencies, wall, tokens[0]), "clients": clients, "grounded_answers": cited[0]}


def rss_mb(pids: list[int]) -> float:
    import psutil

    total = 0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            total += proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
        except psutil.Error:
            pass
    return round(total / 2**20, 1)


def run_config(config: str, n: int, base: str, adapters: list[str], merged: list[str], index_dir: Path,
               questions: list[str], work: Path) -> dict:
    from resources.redaction.redactor import PiiRedactor
    from resources.requestlog import RequestLogSource
    from resources.retrieval.index import KnowledgeIndexer
    from resources.serving.deploy import ServingStack, deploy
    from resources.serving.gateway.keys import KeyRing
    from resources.serving.gateway_server import GatewayServer
    from resources.serving.vllm_server import VllmServer

    from resources.serving.placement import HostResources, core_slices, merged_capacity

    state = work / f"serving-{config}-{n}"
    vllm = VllmServer(port=free_port(), state_dir=str(state), python=str(ROOT / ".venv-vllm" / "bin" / "python"),
                      dtype=DTYPE, max_loras=n, max_cpu_loras=n, max_lora_rank=RANK,
                      kv_cache_gib=1 if config != "lora" else 2)
    slices = core_slices(n, os.cpu_count() or 1) if config == "merged_pinned" else [(None, None)] * n
    as_merged = n if config.startswith("merged") else 0
    if config == "hybrid":
        as_merged = min(n, merged_capacity(HostResources.detect()))
        slices = core_slices(as_merged, os.cpu_count() or 1) + [(None, None)] * (n - as_merged)
        vllm = vllm.model_copy(update={"max_loras": max(1, n - as_merged), "max_cpu_loras": max(1, n - as_merged)})
    gateway = GatewayServer(port=free_port(), state_dir=str(state))
    stack = ServingStack(vllm, gateway, PiiRedactor(policy_path=str(ROOT / "policies" / "redaction.yaml")), KnowledgeIndexer(),
                         RequestLogSource(database_url=f"sqlite:///{state / 'requests.db'}"))
    route = {"knowledge_index_dir": str(index_dir), "retrieval": True}
    ports = [free_port() for _ in range(n)]
    models = [f"m{i}" for i in range(n)]
    out: dict = {"config": config, "adapters": n, "merged_models": as_merged}
    try:
        start = time.perf_counter()
        for i in range(n):
            deploy(stack, models[i], f"v{i:012d}", adapters[i], base, log=lambda _: None, route_extra=route,
                   **({"merged_path": merged[i], "merged_port": ports[i],
                       "merged_server": {"cpu_bind": slices[i][0], "threads": slices[i][1]}} if i < as_merged else {}))
        if config.startswith("merged"):
            vllm.stop()  # only the merged servers answer; the base one was needed for the template check
        out["deploy_s"] = round(time.perf_counter() - start, 1)
        ring = KeyRing.load(gateway.keys_file)
        key = ring.add("sweep", models, requests_per_minute=1_000_000, max_concurrent=256)  # one key for every client
        ring.save(gateway.keys_file)
        asyncio.run(load(gateway.url, key, models, questions, max(n, 2)))  # warm-up: every model once
        pids = [int(p.read_text()) for p in state.glob("*.pid") if p.read_text().strip().isdigit()]
        out["points"] = []
        for clients in CLIENTS:
            point = asyncio.run(load(gateway.url, key, models, questions, clients))
            out["points"].append(point)
            print(json.dumps({"config": config, "adapters": n, **point}), flush=True)
        out["server_rss_mb"] = rss_mb(pids)
    finally:
        gateway.stop()
        vllm.stop_all()
        for port in ports:
            vllm.model_copy(update={"port": port}).stop()
    return out


def main() -> int:
    from resources.knowledge.prompt import grounded_messages
    from resources.models.base_model import BaseModelSource
    from resources.retrieval.index import KnowledgeIndexer
    from resources.serving.placement import MERGED_SERVER_GIB, RESERVED_GIB, HostResources
    from resources.serving.vllm_server import VllmServer
    from resources.training.merge import merge_adapter

    base = BaseModelSource().resolve().path
    work = Path(tempfile.mkdtemp(prefix="tf-serving-sweep-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # models and servers' state: gigabytes, removed at exit
    questions = [json.loads(line)["question"] for line in (ROOT / "data" / "sample" / "support" / "golden.jsonl").read_text().splitlines()]
    adapters = make_adapters(base, max(ADAPTERS), work)
    index_dir = knowledge_index(base, work / "index")
    found = KnowledgeIndexer().passages(index_dir, questions, 4)
    grounded = [grounded_messages([{"role": "user", "content": q}], p) for q, p in zip(questions, found)]
    results = ROOT / "benchmarks" / "results"
    out: dict = {"benchmark": "serving_sweep", "max_tokens": MAX_TOKENS, "lora_rank": RANK, "retrieval": True,
                 "vllm_dtype": VllmServer(dtype=DTYPE).resolved_dtype(), "baseline_dtype": "float32",
                 "adapters": ADAPTERS, "clients": CLIENTS, "host": host_info(), "baselines": {}, "runs": []}
    previous = json.loads((results / "serving_sweep.json").read_text()) if (results / "serving_sweep.json").exists() else None
    if os.environ.get("SWEEP_APPEND") == "1" and previous and previous["host"] == out["host"]:
        out["baselines"] = previous["baselines"]
        out["runs"] = [r for r in previous["runs"] if r["config"] not in CONFIGS]
        out["adapters"] = sorted(set(previous["adapters"]) | set(ADAPTERS))
        out["clients"] = sorted(set(previous["clients"]) | set(CLIENTS))
    for n in ADAPTERS:
        if str(n) not in out["baselines"]:
            out["baselines"][str(n)] = {**baselines(base, adapters[:n], grounded),
                                        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            print(json.dumps({"baseline": n, **out["baselines"][str(n)]}), flush=True)
    merged = []
    if any(c.startswith("merged") or c == "hybrid" for c in CONFIGS):
        for i, adapter in enumerate(adapters):
            merge_adapter(base, adapter, work / f"merged-{i}")
            merged.append(str(work / f"merged-{i}"))
    for config in CONFIGS:
        for n in ADAPTERS:
            host = HostResources.detect()
            needed = (n + 1) * MERGED_SERVER_GIB
            if config.startswith("merged") and needed > host.memory_gib - RESERVED_GIB:
                run = {"config": config, "adapters": n, "points": [], "error": f"not run: {n} merged servers and the base "
                       f"one need ~{needed:.1f} GiB, the host has {host.memory_gib - RESERVED_GIB:.1f} to spare"}
                out["runs"].append(run)
                continue
            try:
                run = run_config(config, n, base, adapters, merged, index_dir, questions, work)
            except Exception as err:  # noqa: BLE001 - e.g. the servers do not fit in memory: recorded, the sweep goes on
                run = {"config": config, "adapters": n, "points": [], "error": f"{type(err).__name__}: {str(err)[-600:]}"}
                print(json.dumps({"config": config, "adapters": n, "error": run["error"][:300]}), flush=True)
            out["runs"].append({**run, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            (results / "serving_sweep.json").write_text(json.dumps(out, indent=2) + "\n")  # what is measured so far
    summarise(out)
    out["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out["plot"] = plot(out, results / "serving_sweep.png")
    (results / "serving_sweep.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["speedup_at_16_clients"], indent=2))
    return 0


def summarise(out: dict) -> None:
    """Speedups at 16 clients against the sequential baseline, per deployment and adapter count; the best per
    count; and what `choose_deployment` picks on this host with the speedup measured for that pick."""
    from resources.serving.placement import HostResources, choose_deployment

    out["speedup_at_16_clients"] = {}
    for run in out["runs"]:
        at16 = next((p for p in run["points"] if p["clients"] == 16), None)
        if at16:
            base_rps = out["baselines"][str(run["adapters"])]["sequential_generate"]["requests_per_s"]
            run["speedup_vs_sequential_at_16"] = round(at16["requests_per_s"] / base_rps, 2)
            out["speedup_at_16_clients"].setdefault(run["config"], {})[str(run["adapters"])] = run["speedup_vs_sequential_at_16"]
    counts = sorted({run["adapters"] for run in out["runs"]})
    best = {}
    for n in counts:
        options = {c: v[str(n)] for c, v in out["speedup_at_16_clients"].items() if str(n) in v}
        if options:
            config = max(options, key=options.get)
            best[str(n)] = {"config": config, "speedup": options[config]}
    out["best_at_16_clients"] = best
    host = HostResources.detect()
    picks = {}
    for n in counts:
        choice = choose_deployment(n, host)
        config = "lora" if choice.mode == "lora" else ("merged_routed" if n == 1 else "merged_pinned")
        picks[str(n)] = {"mode": choice.mode, "measured_as": config,
                         "speedup": out["speedup_at_16_clients"].get(config, {}).get(str(n)), "reason": choice.reason}
    out["chooser_picks"] = picks
    out["target"] = {"speedup_at_16_clients": 6.0}
    out["meets_target"] = {n: (p["speedup"] or 0) >= 6.0 for n, p in picks.items()}


def plot(out: dict, path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in (r for r in out["runs"] if r["points"]):
        xs = [p["clients"] for p in run["points"]]
        ax.plot(xs, [p["requests_per_s"] for p in run["points"]], marker="o",
                linestyle={"lora": "-", "merged_routed": "--"}.get(run["config"], ":"), label=f"{run['config']} x{run['adapters']}")
    for n, b in out["baselines"].items():
        ax.axhline(b["sequential_generate"]["requests_per_s"], color="grey", linewidth=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("requests/s (through the gateway, retrieval on)")
    ax.set_title("Serving N models on one host (grey: sequential generate)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path.relative_to(ROOT))


if __name__ == "__main__":
    sys.exit(main())
