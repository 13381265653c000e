"""`GatewayServer`: starts the guardrail gateway as its own long-lived process (like vLLM, it outlives
the Dagster run that deploys through it) and writes the routes it serves.

`launch_settings` is the one place the gateway's settings are derived from the resources configured in
`Definitions` — vLLM (URL and key), the redactor (policy, spaCy model, pseudonym key), the embedding model
of the knowledge index and the request log. Secrets travel to the child process in its environment, never
in the settings file or on its command line.
"""

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

from resources.atomic import replace_file
from resources.preflight import CheckedResource, check_port
from resources.redaction.redactor import PiiRedactor
from resources.requestlog import RequestLogSource
from resources.retrieval.index import KnowledgeIndexer
from resources.serving.gateway.app import SECRET_ENV, GatewaySettings
from resources.serving.vllm_server import ServingError, VllmServer, open_server_log


class GatewayServer(CheckedResource):
    """Where the gateway listens and what it enforces (see GatewaySettings for each policy)."""

    host: str = Field(default="127.0.0.1", description="Interface the gateway listens on.")
    port: int = Field(default=8080, description="Port clients call.")
    state_dir: str = Field(default=".tuneforge/serving", description="Settings, routes, keys, pid and log.")
    pii_in_prompt: Literal["redact", "refuse", "allow"] = Field(default="redact", description="redact | refuse | allow personal data in prompts.")
    startup_timeout_s: float = Field(default=90.0, description="How long start-up may take.")
    log_prune_interval_s: float = Field(default=3600.0, description="How often the gateway applies the request log's "
                                        "retention (RequestLogSource.retention_days, max_rows), besides at start-up.")
    log_prune_every_requests: int = Field(default=1000, description="The retention is also applied after this many "
                                          "logged requests.")

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value):
        return check_port("GatewayServer", "port", value)

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

    def launch_settings(self, vllm: VllmServer, redactor: PiiRedactor, indexer: KnowledgeIndexer,
                        request_log: RequestLogSource) -> tuple[GatewaySettings, dict[str, str]]:
        """The gateway process's settings (no secrets) and the secrets for its environment."""
        state = Path(self.state_dir).resolve()
        settings = GatewaySettings(
            upstream_url=vllm.base_url, routes_file=str(state / "routes.json"), keys_file=str(state / "api_keys.yaml"),
            database_url=request_log.database_url, log_retention_days=request_log.retention_days,
            log_max_rows=request_log.max_rows, log_prune_interval_s=self.log_prune_interval_s,
            log_prune_every_requests=self.log_prune_every_requests, pii_in_prompt=self.pii_in_prompt,
            redaction_policy=str(Path(redactor.policy_path).resolve()), spacy_model=redactor.spacy_model,
            spacy_exclude=list(redactor.spacy_exclude), embedding_model=indexer.model, embedding_max_chars=indexer.max_chars)
        secrets = {SECRET_ENV["upstream_api_key"]: vllm.api_key, SECRET_ENV["pseudonym_key"]: redactor.pseudonym_key}
        return settings, {k: v for k, v in secrets.items() if v}

    def routes(self) -> dict[str, dict]:
        return json.loads(self.routes_file.read_text()).get("models", {}) if self.routes_file.exists() else {}

    def write_routes(self, models: dict[str, dict]) -> None:
        """Atomically replace the routes; the running gateway picks them up on its next request."""
        replace_file(self.routes_file, json.dumps({"models": models}, indent=2))

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def ensure_running(self, vllm: VllmServer, redactor: PiiRedactor, indexer: KnowledgeIndexer,
                       request_log: RequestLogSource) -> str:
        """Start the gateway unless one with these exact settings already answers; returns its URL."""
        settings, secrets = self.launch_settings(vllm, redactor, indexer, request_log)
        settings_file = self._path("gateway.json")
        fresh = settings.model_dump_json(indent=2)
        fingerprint = self._path("gateway.secrets")
        if self.healthy() and settings_file.exists() and settings_file.read_text() == fresh and \
                _same_secrets(fingerprint, secrets):
            return self.url
        self.stop()
        Path(self.state_dir).mkdir(parents=True, exist_ok=True)
        settings_file.write_text(fresh)
        _remember_secrets(fingerprint, secrets)
        log_path = self._path(f"gateway-{self.port}.log")
        with open_server_log(log_path) as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "resources.serving.gateway.app", "--settings", str(settings_file),
                 "--host", self.host, "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **secrets})
        self._path(f"gateway-{self.port}.pid").write_text(str(process.pid))
        deadline = time.time() + self.startup_timeout_s
        while time.time() < deadline:
            if process.poll() is not None:
                raise ServingError(f"the gateway exited with code {process.returncode}; see {log_path}")
            if self.healthy():
                return self.url
            time.sleep(0.5)
        raise ServingError(f"the gateway did not answer /healthz within {self.startup_timeout_s:.0f}s")

    def stop(self) -> bool:
        pid_file = self._path(f"gateway-{self.port}.pid")
        if not pid_file.exists():
            return False
        pid = int(pid_file.read_text())
        try:
            os.killpg(pid, signal.SIGTERM)
            for _ in range(50):  # until it is gone (the port is free again)
                os.kill(pid, 0)
                time.sleep(0.1)
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        pid_file.unlink(missing_ok=True)
        return True


def _digest(salt: str, secrets: dict[str, str]) -> str:
    import hmac

    return hmac.new(salt.encode(), json.dumps(secrets, sort_keys=True).encode(), "sha256").hexdigest()


def _remember_secrets(path: Path, secrets: dict[str, str]) -> None:
    """A salted fingerprint of the secrets the gateway was started with (owner-only): a rotated key restarts it."""
    import secrets as tokens

    salt = tokens.token_hex(16)
    path.write_text(f"{salt}:{_digest(salt, secrets)}")
    path.chmod(0o600)


def _same_secrets(path: Path, secrets: dict[str, str]) -> bool:
    if not path.exists():
        return False
    salt, _, digest = path.read_text().partition(":")
    return _digest(salt, secrets) == digest
