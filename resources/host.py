"""What the machine offers, read once where training and serving both need it (their dtype choices)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them in /proc/cpuinfo; empty elsewhere (no claim)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            return frozenset(next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), []))
    except OSError:
        return frozenset()


def cpu_has_native_bf16() -> bool:
    """The CPU multiplies bfloat16 natively (Intel AMX-BF16 or AVX512-BF16); without them bfloat16 matmuls are
    emulated and slower than fp32."""
    flags = cpu_flags()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()
