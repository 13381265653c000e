"""`GatewayServer`: starts the guardrail gateway as its own long-lived process (like vLLM, it outlives
the Dagster run that deploys through it) and writes the routes it serves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import httpx
from pydantic import Field, field_validator

from resources.preflight import CheckedResource, check_port, problem
from resources.serving.gateway.app import GatewaySettings
from resources.serving.vllm_server import ServingError


class GatewayServer(CheckedResource):
    """Where the gateway listens and what it enforces (see GatewaySettings for each policy)."""

    host: str = Field(default="127.0.0.1", description="Interface the gateway listens on.")
    port: int = Field(default=8080, description="Port clients call.")
    state_dir: str = Field(default=".tuneforge/serving", description="Settings, routes, keys, request log, pid and log.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the request log (Postgres in production); unset: SQLite in state_dir."
    )
    pii_in_prompt: Literal["redact", "refuse", "allow"] = Field(default="redact", description="redact | refuse | allow personal data in prompts.")
    canaries_path: str | None = Field(default="data/sample/canaries.json", description="Canary secrets the output guard blocks.")
    knowledge_index_dir: str | None = Field(default=None, description="knowledge_index folder for grounded requests.")
    startup_timeout_s: float = Field(default=90.0, description="How long start-up may take.")

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value):
        return check_port("GatewayServer", "port", value)

    def problems(self) -> list[str]:
        if self.canaries_path and not Path(self.canaries_path).is_file():
            return [problem(self, "canaries_path", self.canaries_path, "no such file")]
        return []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _path(self, name: str) -> Path:
        return Path(self.state_dir) / name

    @property
    def routes_file(self) -> Path:
        return self._path("routes.json")

    @property
    def keys_file(self) -> Path:
        return self._path("api_keys.yaml")

    def settings(self, upstream_url: str) -> GatewaySettings:
        state = Path(self.state_dir).resolve()
        return GatewaySettings(
            upstream_url=upstream_url, routes_file=str(state / "routes.json"), keys_file=str(state / "api_keys.yaml"),
            database_url=self.database_url or f"sqlite:///{state / 'requests.db'}", pii_in_prompt=self.pii_in_prompt,
            canaries_path=self.canaries_path, knowledge_index_dir=self.knowledge_index_dir)

    def routes(self) -> dict[str, dict]:
        return json.loads(self.routes_file.read_text()).get("models", {}) if self.routes_file.exists() else {}

    def write_routes(self, models: dict[str, dict]) -> None:
        """Atomically replace the routes; the running gateway picks them up on its next request."""
        self.routes_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.routes_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"models": models}, indent=2))
        os.replace(tmp, self.routes_file)

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def ensure_running(self, upstream_url: str) -> str:
        settings_file = self._path("gateway.json")
        settings = self.settings(upstream_url)
        fresh = settings.model_dump_json(indent=2)
        if self.healthy() and settings_file.exists() and settings_file.read_text() == fresh:
            return self.url
        self.stop()
        Path(self.state_dir).mkdir(parents=True, exist_ok=True)
        settings_file.write_text(fresh)
        log = open(self._path(f"gateway-{self.port}.log"), "ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "resources.serving.gateway.app", "--settings", str(settings_file),
             "--host", self.host, "--port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._path(f"gateway-{self.port}.pid").write_text(str(process.pid))
        deadline = time.time() + self.startup_timeout_s
        while time.time() < deadline:
            if process.poll() is not None:
                raise ServingError(f"the gateway exited with code {process.returncode}; see {self._path(f'gateway-{self.port}.log')}")
            if self.healthy():
                return self.url
            time.sleep(0.5)
        raise ServingError(f"the gateway did not answer /healthz within {self.startup_timeout_s:.0f}s")

    def stop(self) -> bool:
        pid_file = self._path(f"gateway-{self.port}.pid")
        if not pid_file.exists():
            return False
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
            time.sleep(0.5)
        except ProcessLookupError:
            pass
        pid_file.unlink(missing_ok=True)
        return True
