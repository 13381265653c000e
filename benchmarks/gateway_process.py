"""The gateway as deployed, for the benchmarks: its own process (`python -m resources.serving.gateway.app`) with the
settings given, on a free port of 127.0.0.1, waited for until /healthz answers."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def start_gateway_process(tmp: Path, settings, port: int) -> tuple[subprocess.Popen, str]:
    """(the process, its base URL); `settings` (a GatewaySettings) is written to `tmp/gateway.json`, the log to
    `tmp/gateway.log`."""
    (tmp / "gateway.json").write_text(settings.model_dump_json())
    process = subprocess.Popen([sys.executable, "-m", "resources.serving.gateway.app", "--settings", str(tmp / "gateway.json"),
                                "--port", str(port)], cwd=ROOT, stdout=open(tmp / "gateway.log", "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.time() > deadline:
            raise SystemExit(f"the gateway did not start; see {tmp / 'gateway.log'}")
        time.sleep(0.2)
