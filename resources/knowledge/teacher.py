"""`TeacherModel`: a large model behind any OpenAI-compatible endpoint that writes training data from passages.

vLLM serving a large model on a GPU node, an Azure OpenAI deployment or a hosted API: `base_url`, `model` and
a key (an `EnvVar`). Calls run with bounded concurrency; the `openai` client retries transient failures
(connection errors, timeouts, 429 and 5xx) with exponential backoff; every response is cached on disk keyed by
the request (a re-run does not pay twice); calls and tokens are counted, and a cap per run stops generation
with a clear message. The teacher only ever receives redacted passages (it is called on `document_chunks`).
With no `base_url` the offline strategies run instead.
"""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from resources.atomic import replace_file
from resources.preflight import CheckedResource, check_http_url, problem

NOT_CONFIGURED = "no teacher configured (set TeacherModel.base_url and model)"


@dataclass
class Reply:
    """One call's outcome: the text, or the reason it has none."""

    text: str | None
    error: str | None = None  # timeout | connection | http_<status> | refused | budget_exhausted | empty
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Usage:
    calls: int = 0
    cached: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stopped: str | None = None  # why generation stopped early (a cap), if it did
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "lock"}


class TeacherModel(CheckedResource):
    """The teacher LLM the `qa` strategy asks for question/answer pairs and, as judge, to filter them."""

    base_url: str | None = Field(default=None, description="OpenAI-compatible API root, e.g. http://teacher:8000/v1. "
                                 "Unset: no teacher; the offline strategies (headings, raft) run.")
    model: str | None = Field(default=None, description="Model name the endpoint serves.")
    api_key: str | None = Field(default=None, description="Bearer key; pass EnvVar('TUNEFORGE_TEACHER_API_KEY'), never a literal.")
    max_concurrency: int = Field(default=8, ge=1, le=256, description="Requests in flight at once.")
    max_retries: int = Field(default=3, ge=0, le=10, description="Retries of a transient failure (exponential backoff).")
    timeout_s: float = Field(default=120.0, gt=0, description="Per-request timeout.")
    temperature: float = Field(default=0.0, ge=0, le=2, description="Sampling temperature (0: greedy, reproducible).")
    max_tokens: int = Field(default=1024, ge=16, description="Completion tokens per call.")
    max_calls_per_run: int = Field(default=5000, ge=1, description="Calls (cache misses) one materialization may make.")
    max_tokens_per_run: int = Field(default=5_000_000, ge=1, description="Prompt + completion tokens one materialization "
                                    "may spend; at either cap generation stops, saying so, and what was made is kept.")
    cache_dir: str = Field(default=".tuneforge/teacher_cache", description="Responses, keyed by the sha256 of the request.")

    @field_validator("base_url", mode="before")
    @classmethod
    def _url(cls, value):
        return check_http_url("TeacherModel", "base_url", value)

    @property
    def configured(self) -> bool:
        return bool(self.base_url and self.model)

    def problems(self) -> list[str]:
        if bool(self.base_url) != bool(self.model):
            return [problem(self, "model" if self.base_url else "base_url", self.model if self.base_url else self.base_url,
                            "set both base_url and model to use a teacher, or neither")]
        return []

    def identity(self) -> dict[str, Any]:
        """What shapes the teacher's answers (for data versions): never the key."""
        return {"base_url": self.base_url, "model": self.model, "temperature": self.temperature, "max_tokens": self.max_tokens}

    def session(self) -> "TeacherSession":
        if not self.configured:
            raise RuntimeError(NOT_CONFIGURED)
        return TeacherSession(self)


class TeacherSession:
    """One materialization's calls: a client, the cache, the counters and the caps."""

    def __init__(self, teacher: TeacherModel):
        import openai

        self.teacher = teacher
        self.usage = Usage()
        self.cache = Path(teacher.cache_dir)
        self.cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.client = openai.OpenAI(base_url=teacher.base_url, api_key=teacher.api_key or "none",
                                    max_retries=teacher.max_retries, timeout=teacher.timeout_s)

    def _request(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        t = self.teacher
        return {"model": t.model, "messages": messages, "temperature": t.temperature, "max_tokens": t.max_tokens}

    def _key(self, request: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps([self.teacher.base_url, request], sort_keys=True).encode()).hexdigest()
        return self.cache / digest[:2] / f"{digest}.json"

    def _over_cap(self) -> str | None:
        u, t = self.usage, self.teacher
        if u.calls >= t.max_calls_per_run:
            return f"the teacher's cap of {t.max_calls_per_run} calls per run was reached (TeacherModel.max_calls_per_run)"
        if u.prompt_tokens + u.completion_tokens >= t.max_tokens_per_run:
            return f"the teacher's cap of {t.max_tokens_per_run} tokens per run was reached (TeacherModel.max_tokens_per_run)"
        return None

    def ask(self, messages: list[dict[str, str]], documents: tuple[str, ...] = ()) -> Reply:
        """One conversation answered (from the cache when it was asked before); `documents`, the ids of the
        documents whose passages the messages carry, are kept with the cached reply, so forget finds it."""
        import openai

        request = self._request(messages)
        path = self._key(request)
        if path.is_file():
            data = json.loads(path.read_text())
            with self.usage.lock:
                self.usage.cached += 1
            return Reply(data["text"], cached=True)
        with self.usage.lock:
            stop = self._over_cap()
            if stop:
                self.usage.stopped = stop
                return Reply(None, "budget_exhausted")
            self.usage.calls += 1
        try:
            response = self.client.chat.completions.create(**request)
        except openai.APITimeoutError:
            return self._failed("timeout")
        except openai.APIConnectionError:
            return self._failed("connection")
        except openai.APIStatusError as err:
            return self._failed(f"http_{err.status_code}")
        choice = response.choices[0] if response.choices else None
        text = (choice.message.content or "") if choice is not None else ""
        usage = response.usage
        prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        with self.usage.lock:
            self.usage.prompt_tokens += prompt
            self.usage.completion_tokens += completion
        if choice is not None and choice.finish_reason == "content_filter":
            return self._failed("refused")
        if not text.strip():
            return self._failed("empty")
        path.parent.mkdir(exist_ok=True, mode=0o700)
        replace_file(path, json.dumps({"text": text, "documents": sorted(set(documents))}), mode=0o600)
        return Reply(text, prompt_tokens=prompt, completion_tokens=completion)

    def _failed(self, reason: str) -> Reply:
        with self.usage.lock:
            self.usage.failed += 1
        return Reply(None, reason)

    def ask_many(self, conversations: list[list[dict[str, str]]], documents: list[tuple[str, ...]] | None = None) -> list[Reply]:
        """Every conversation answered, `max_concurrency` at a time, in order (`documents`: each one's sources)."""
        with ThreadPoolExecutor(max_workers=self.teacher.max_concurrency) as pool:
            return list(pool.map(self.ask, conversations, documents or [()] * len(conversations)))


def cached_replies_of(cache_dir: str | Path, doc_ids: set[str]) -> list[Path]:
    """The cached replies whose requests carried a passage of one of `doc_ids` (what forget deletes). Replies cached
    before the cache recorded its documents cannot be traced."""
    found = []
    for path in sorted(Path(cache_dir).glob("*/*.json")):
        try:
            documents = json.loads(path.read_text()).get("documents") or []
        except (OSError, ValueError):
            continue
        if set(documents) & doc_ids:
            found.append(path)
    return found
