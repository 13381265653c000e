"""The machine a benchmark ran on, quoted beside every figure: CPU model and the vector/matrix flags that decide
which kernels run (AVX2, AVX-512, AVX512-BF16, AMX), cores, Python."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def host() -> dict:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    model = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), platform.processor())
    flags = next((x.split(":", 1)[1].split() for x in lines if x.startswith("flags")), [])
    return {"cpu": model, "cpus": os.cpu_count(), "python": platform.python_version(),
            "cpu_flags": sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))}


def save(name: str, result: dict, echo: bool = True) -> Path:
    """`benchmarks/results/<name>.json`, stamped with `measured_at` (UTC); printed too unless `echo` is off."""
    result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    if echo:
        print(json.dumps(result, indent=2))
    return path
