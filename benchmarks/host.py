"""The machine a benchmark ran on, quoted beside every figure: CPU model and the vector/matrix flags that decide
which kernels run (AVX2, AVX-512, AVX512-BF16, AMX), cores, Python."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def host() -> dict:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    model = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), platform.processor())
    flags = next((x.split(":", 1)[1].split() for x in lines if x.startswith("flags")), [])
    return {"cpu": model, "cpus": os.cpu_count(), "python": platform.python_version(),
            "cpu_flags": sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))}
