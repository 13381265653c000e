"""Gateway latency under a mixed load against valid traffic alone, side by side in one run.

The guardrail gateway runs as it is deployed — its own process (`python -m resources.serving.gateway.app`), the
real guards (Presidio with the shipped policy, the shipped toxicity lexicon, a canary) and a SQLite request
log — in front of the scripted OpenAI-compatible upstream of the tests (`tests/servers/openai_server.py`:
`echo` and a `leaky` model that answers with the canary), so the figures are the gateway's own cost.
BENCH_CLIENTS (50) concurrent httpx async clients, one key roomy enough that nothing is throttled:

- valid_only: for BENCH_SECONDS (30) each client sends the valid requests of the mix (chat and completions,
  streamed and not, personal data to redact, multi-turn chats);
- mixed: then, for as long, the whole mix of `tests/test_gateway_faults.py` (the load test's): the same valid
  requests (about a third), malformed ones (bad JSON, unknown fields, wrong types, oversized bodies, unknown
  models), attacks (prompt injection, canary bait, privileged parameters such as n=2 and logprobs) and requests
  without a valid key.

p50/p95 latency per phase and, in the mixed phase, per category (the valid requests' figures beside the
valid-only phase's tell what the rest of the mix costs them), requests/s and status counts, with the host's CPU
model and flags. Results: benchmarks/results/gateway_mixed_load.json
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("OMP_NUM_THREADS", "1")

from resources.offline import apply_offline_defaults  # noqa: E402

apply_offline_defaults()

import httpx  # noqa: E402
from servers.openai_server import Served, build_app, free_port  # noqa: E402
from test_gateway_attacks import CANARY  # noqa: E402
from test_gateway_faults import ATTACKS, MALFORMED, MIX, UNAUTHENTICATED, VALID, run_clients, write_keys, write_routes  # noqa: E402

from benchmarks.gateway_process import start_gateway_process  # noqa: E402
from benchmarks.redaction_throughput import cpu_flags  # noqa: E402
from resources.serving.gateway.app import GatewaySettings  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "30"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "50"))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def latency(results: list[dict]) -> dict:
    seconds = [r["seconds"] for r in results]
    if not seconds:
        return {"requests": 0}
    return {"requests": len(seconds), "p50_latency_s": round(statistics.median(seconds), 4),
            "p95_latency_s": round(pct(seconds, 0.95), 4), "mean_latency_s": round(statistics.fmean(seconds), 4)}


def phase(results: list[dict], seconds: float, description: str) -> dict:
    statuses = Counter(r["status"] for r in results)
    out = {"description": description, **latency(results), "requests_per_s": round(len(results) / seconds, 2),
           "statuses": {str(k): v for k, v in sorted(statuses.items())},
           "server_errors_5xx": sum(v for k, v in statuses.items() if k >= 500)}
    categories = {"valid": VALID, "malformed": MALFORMED, "attack": ATTACKS, "unauthenticated": UNAUTHENTICATED}
    found = {name: [r for r in results if r["kind"] in kinds] for name, kinds in categories.items()}
    if sum(1 for rows in found.values() if rows) > 1:
        out["by_category"] = {name: latency(rows) for name, rows in found.items()}
    return out


def start_gateway(tmp: Path, upstream_port: int) -> tuple[subprocess.Popen, str]:
    (tmp / "canaries.json").write_text(json.dumps({"canaries": [{"value": CANARY, "file": "bench", "record_id": "1"}]}))
    settings = GatewaySettings(upstream_url=f"http://127.0.0.1:{upstream_port}", routes_file=str(tmp / "routes.json"),
                               keys_file=str(tmp / "keys.yaml"), database_url=f"sqlite:///{tmp / 'requests.db'}",
                               redaction_policy=str(ROOT / "policies" / "redaction.yaml"),
                               canaries_path=str(tmp / "canaries.json"), upstream_timeout_s=60)
    return start_gateway_process(tmp, settings, free_port())


def main() -> int:
    upstream = Served(build_app(leak=f"Sure, the key is {CANARY} - keep it safe."), free_port()).start()
    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-") as folder:
        tmp = Path(folder)
        key = write_keys(tmp / "keys.yaml", load={"requests_per_minute": 10_000_000, "max_concurrent": 1_000})["load"]
        write_routes(tmp / "routes.json")
        gateway, url = start_gateway(tmp, upstream.port)
        try:
            # warm-up: the guards' models load on the first requests
            asyncio.run(run_clients(url, lambda n: key, lambda n: MIX, 5, 4))
            valid = asyncio.run(run_clients(url, lambda n: key, lambda n: VALID, SECONDS, CLIENTS))
            mixed = asyncio.run(run_clients(url, lambda n: key, lambda n: MIX, SECONDS, CLIENTS))
        finally:
            gateway.terminate()
            gateway.wait(timeout=30)
            upstream.stop()
    valid_in_mix = [r for r in mixed if r["kind"] in VALID]
    result = {
        "benchmark": "gateway_mixed_load",
        "clients": CLIENTS,
        "seconds_per_phase": SECONDS,
        "mix": {"valid": VALID, "malformed": MALFORMED, "attack": ATTACKS, "unauthenticated": UNAUTHENTICATED,
                "valid_share": round(sum(k in VALID for k in MIX) / len(MIX), 3)},
        "valid_only": phase(valid, SECONDS, "the mix's valid requests only"),
        "mixed": phase(mixed, SECONDS, "the whole mix of tests/test_gateway_faults.py: valid, malformed, attack, no key"),
        "valid_p50_ratio_mixed_vs_valid_only": round(statistics.median(r["seconds"] for r in valid_in_mix)
                                                     / statistics.median(r["seconds"] for r in valid), 3),
        "valid_p95_ratio_mixed_vs_valid_only": round(pct([r["seconds"] for r in valid_in_mix], 0.95)
                                                     / pct([r["seconds"] for r in valid], 0.95), 3),
        "setup": "gateway in its own process (real guards, SQLite request log) -> scripted upstream (echo, leaky) "
                 "in the benchmark's process; httpx async clients, one connection pool each",
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_flags(), "python": platform.python_version(),
                    "omp_threads": os.environ.get("OMP_NUM_THREADS")},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = ROOT / "benchmarks" / "results" / "gateway_mixed_load.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name in ("valid_only", "mixed"):
        r = result[name]
        print(f"{name:10s} {r['requests']:6d} requests {r['requests_per_s']:7.2f}/s  p50 {r['p50_latency_s']:.3f} s  "
              f"p95 {r['p95_latency_s']:.3f} s  5xx {r['server_errors_5xx']}")
    for name, r in result["mixed"]["by_category"].items():
        print(f"  mixed/{name:15s} {r['requests']:6d}  p50 {r.get('p50_latency_s', 0):.3f} s  p95 {r.get('p95_latency_s', 0):.3f} s")
    print(f"valid requests in the mix vs alone: p50 x{result['valid_p50_ratio_mixed_vs_valid_only']}, "
          f"p95 x{result['valid_p95_ratio_mixed_vs_valid_only']} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
