"""The guardrail gateway: an OpenAI-compatible API in front of vLLM (FastAPI).

Per request: API key (hashed at rest) -> size and rate limits -> allowed model -> input guard (PII
redacted or refused, prompt injection refused) -> optional grounding in the knowledge index -> vLLM ->
output guard (canary, toxicity, PII) -> request log (redacted) -> response with a response id that
`/v1/feedback` accepts. `/healthz` and Prometheus `/metrics` are open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from contextlib import asynccontextmanager, suppress
from functools import lru_cache
import uuid
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field

from resources.knowledge.prompt import ABSTAIN, source_of
from resources.safety.probes import SHIPPED_LEXICON
from resources.safety.guards import Guards
from resources.serving.gateway.keys import Client, KeyRing
from resources.serving.gateway.schema import (
    FeedbackRequest,
    RequestError,
    ReviewRequest,
    Usage,
    parse_model,
    parse_request,
    parse_response,
    upstream_body,
)
from resources.knowledge.grounding import check_answer, retrieval_query
from resources.serving.gateway.steps import (BLOCKED, StreamGuard, check_grounding, describe_checked, ground,
                                            grounding_context, guard_choices, guard_input)
from resources.requestlog import REVIEW_STATUSES, RequestLog

# Secrets reach the gateway process in its environment (GatewayServer.launch_settings), never in the settings file.
SECRET_ENV = {"upstream_api_key": "TUNEFORGE_UPSTREAM_API_KEY", "pseudonym_key": "TUNEFORGE_PSEUDONYM_KEY"}


class GatewaySettings(BaseModel):
    """Everything the gateway process needs but its secrets; the gateway reads it from a JSON file that
    `GatewayServer.launch_settings` derives from the resources."""

    upstream_url: str = Field(default="http://127.0.0.1:8000", description="vLLM API root.")
    upstream_timeout_s: float = Field(default=300.0, description="Total deadline of one request to the model server "
                                      "(connect, wait and every streamed chunk together): past it the client gets 504 "
                                      "(a stream ends with an error event).")
    routes_file: str = Field(default=".tuneforge/serving/routes.json", description="Served models -> vLLM model names, "
                             "adapter versions, knowledge indexes and canaries (written by each model's deployed_endpoint).")
    keys_file: str = Field(default=".tuneforge/serving/api_keys.yaml", description="Clients and their hashed API keys.")
    database_url: str = Field(default="sqlite:///.tuneforge/serving/requests.db", description="SQLAlchemy URL of the request log.")
    redaction_policy: str = Field(default="policies/redaction.yaml", description="Redaction policy of the guards "
                                  "(a route's own `redaction_policy` wins for that model).")
    spacy_model: str | None = Field(default=None, description="spaCy model of the redactor (None: the redactor's default).")
    spacy_exclude: list[str] | None = Field(default=None, description="spaCy components not run (None: the redactor's default).")
    canaries_path: str | None = Field(default=None, description="Extra canary secrets that must never leave (each "
                                      "route adds its model's canaries).")
    toxicity_lexicon_path: str = Field(default=SHIPPED_LEXICON, description="Toxicity terms blocked in "
                                       "responses (a route's own `toxicity_lexicon_path` wins for that model).")
    pii_in_prompt: str = Field(default="redact", description="redact | refuse | allow personal data in prompts.")
    block_injection: bool = Field(default=True, description="Refuse prompts matching prompt-injection patterns.")
    injection_detector: bool = Field(default=True, description=(
        "Beside the patterns, refuse what the embedding detector (MiniLM probe + nearest known attacks, "
        "resources.safety.injection) reads as an attack; a few milliseconds per text on a CPU."))
    embedding_model: str | None = Field(default=None, description="Embedding model of the knowledge indexes (None: the default).")
    embedding_max_chars: int | None = Field(default=None, description="Characters of each question embedded (None: the default).")
    feedback_per_hour: int = Field(default=100, description="Feedbacks one client may send an hour (over: 429).")
    grounding_passages: int = Field(default=3, description="Passages put into context for a grounded request, where the "
                                    "model's route does not set its own (serving.retrieval_passages).")
    stream_holdback_chars: int = Field(default=64, description="Streamed characters held back until the whole output "
                                       "guard has passed them (at least the longest canary is held back, whatever this says); "
                                       "at least the longest personal-data value to catch.")
    log_retention_days: float | None = Field(default=None, description="Request-log rows older than this many days are "
                                             "deleted, with the pending and rejected feedback on them (None: kept; "
                                             "GatewayServer passes RequestLogSource.retention_days).")
    log_max_rows: int | None = Field(default=None, description="Request-log rows kept at most, the oldest deleted first "
                                     "(None: no cap; GatewayServer passes RequestLogSource.max_rows).")
    log_prune_interval_s: float = Field(default=3600.0, description="The retention is applied at start-up and then at "
                                        "least this often, in a worker thread (never on the event loop).")
    log_prune_every_requests: int = Field(default=1000, description="... and also after this many logged requests, so a "
                                          "burst of traffic does not outgrow max_rows until the next interval.")


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def _error_event(status: int, message: str, kind: str) -> str:
    """How a stream that has already begun (status 200 sent) reports a failure: one SSE event with the same error
    object a refused request gets, then `data: [DONE]`."""
    return f"data: {json.dumps({'error': {'message': message, 'type': kind, 'code': status}})}\n\ndata: [DONE]\n\n"


class UpstreamStreamError(Exception):
    """The model server reported an error inside a stream it had begun (vLLM sends `data: {"error": ...}`)."""


logger = logging.getLogger("tuneforge.gateway")


class Routes:
    """Aliases clients call -> what vLLM serves; re-read when the file changes (deploy, rollback)."""

    def __init__(self, path: str):
        self.path, self._mtime, self._models = Path(path), None, {}

    def models(self) -> dict[str, dict]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        if mtime != self._mtime:
            self._models, self._mtime = json.loads(self.path.read_text()).get("models", {}), mtime
        return self._models


class RateLimiter:
    def __init__(self):
        self.calls: dict[str, deque] = defaultdict(deque)

    def allow(self, client: Client) -> bool:
        now, window = time.monotonic(), self.calls[client.name]
        while window and now - window[0] > 60:
            window.popleft()
        if len(window) >= client.requests_per_minute:
            return False
        window.append(now)
        return True


def create_app(settings: GatewaySettings, guards: Guards | None = None, secrets: dict[str, str] | None = None) -> FastAPI:
    """The gateway app. `guards` replaces the guards built from the settings (tests); `secrets` holds the
    upstream API key and the pseudonym key (from the process environment, see SECRET_ENV)."""
    secrets = secrets or {}
    retention = (settings.log_retention_days, settings.log_max_rows)
    prune_due = asyncio.Event()
    logged_since_prune = [0]

    async def pruner():
        """Applies the request log's retention at start-up, every `log_prune_interval_s` and after every
        `log_prune_every_requests` logged requests, in a worker thread; a failed prune is logged and retried."""
        while True:
            try:
                pruned = await run_in_threadpool(log.prune, *retention)
                for table, n in pruned.items():
                    m_pruned.labels(table).inc(n)
            except Exception as err:  # noqa: BLE001 - the gateway goes on serving; the next round retries
                logger.warning("request-log retention failed (%s: %s); retrying at the next round", type(err).__name__, err)
            with suppress(TimeoutError):
                await asyncio.wait_for(prune_due.wait(), settings.log_prune_interval_s)
            prune_due.clear()

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        task = asyncio.create_task(pruner()) if retention != (None, None) else None
        yield
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        await upstream.aclose()

    app = FastAPI(title="tuneforge gateway", lifespan=lifespan)
    keys = KeyRing.load(settings.keys_file)
    routes = Routes(settings.routes_file)
    log = RequestLog(settings.database_url)
    limiter = RateLimiter()
    in_flight: dict[str, int] = defaultdict(int)  # client -> requests being answered now
    fixed_guards = guards
    built: dict[tuple, Guards] = {}
    indexes: dict[str, Any] = {}
    upstream_key = secrets.get("upstream_api_key")
    # The model server (uvicorn, as vLLM's) closes a connection idle for 5 s; a request sent on it at that moment
    # fails before any answer ("Server disconnected without sending a response"). Idle connections are let go
    # sooner than that, and a request whose connection dropped so is sent once more (`send_upstream`).
    upstream = httpx.AsyncClient(base_url=settings.upstream_url, timeout=settings.upstream_timeout_s,
                                 limits=httpx.Limits(max_connections=256, max_keepalive_connections=64,
                                                     keepalive_expiry=2.0),
                                 headers={"Authorization": f"Bearer {upstream_key}"} if upstream_key else {})

    async def send_upstream(request: httpx.Request, stream: bool = False) -> httpx.Response:
        """`request` sent to the model server, once more on a new connection when the first one dropped before
        the answer was read (a kept-alive connection closed as it was reused, or a server restarting): within
        the caller's deadline; a server that is down still fails the second time, and the caller answers 503."""
        try:
            return await upstream.send(request, stream=stream)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            return await upstream.send(request, stream=stream)

    detector: list = []  # built once, on first use: its reference corpus is embedded then
    detector_lock, indexes_lock = threading.Lock(), threading.Lock()

    def injection_detector():
        if not (settings.injection_detector and settings.block_injection):
            return None
        with detector_lock:
            if not detector:
                from resources.safety.injection import InjectionDetector

                detector.append(InjectionDetector(embedder().embed))
        return detector[0]

    def embedder():
        from resources.retrieval.index import KnowledgeIndexer

        return KnowledgeIndexer(**{k: v for k, v in (("model", settings.embedding_model),
                                                     ("max_chars", settings.embedding_max_chars)) if v is not None})

    def guards_for(route: dict) -> Guards:
        """The guards of a route: its model's redaction policy; every served model's canaries."""
        if fixed_guards is not None:
            return fixed_guards
        canaries = tuple(sorted({c for r in routes.models().values() for c in _canaries(r.get("canaries_path"))}
                                | set(_canaries(settings.canaries_path))))
        policy = route.get("redaction_policy") or settings.redaction_policy
        lexicon = route.get("toxicity_lexicon_path") or settings.toxicity_lexicon_path
        public = tuple(route.get("public_entities") or ())
        if (policy, public, lexicon, canaries) not in built:
            built[(policy, public, lexicon, canaries)] = _guards(settings, policy, lexicon, list(canaries),
                                                                 secrets.get("pseudonym_key"), injection_detector(), public)
        return built[(policy, public, lexicon, canaries)]

    def retrieve(index_dir: str, question: str, k: int) -> list[dict]:
        """Passages of a model's knowledge index: each served model's index is loaded once and kept; an index no
        route names any more (a new version was deployed) is dropped."""
        with indexes_lock:  # requests retrieve in worker threads
            if index_dir not in indexes:
                routed = {r.get("knowledge_index_dir") for r in routes.models().values()}
                for stale in [d for d in indexes if d not in routed]:
                    del indexes[stale]
                indexes[index_dir] = embedder().load(index_dir)
            index = indexes[index_dir]
        return index.passages([question], k)[0]
    registry = CollectorRegistry()
    m_requests = Counter("tuneforge_gateway_requests", "Requests by model and status", ["model", "status"], registry=registry)
    m_latency = Histogram("tuneforge_gateway_latency_seconds", "End-to-end latency", ["model"], registry=registry,
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120))
    m_guard = Counter("tuneforge_gateway_guard_triggers", "Guard decisions that changed a request", ["guard", "kind"], registry=registry)
    m_tokens = Counter("tuneforge_gateway_tokens", "Tokens processed", ["model", "kind"], registry=registry)
    m_up = Gauge("tuneforge_gateway_upstream_up", "1 if the last upstream call succeeded", registry=registry)
    m_pruned = Counter("tuneforge_gateway_log_pruned_rows", "Request-log rows deleted by the retention", ["table"],
                       registry=registry)
    app.state.log, app.state.keys, app.state.settings = log, keys, settings

    keys_seen: list = [None]

    def keys_stamp():
        try:
            stat = Path(settings.keys_file).stat()
            return stat.st_mtime_ns, stat.st_size, stat.st_ino
        except FileNotFoundError:
            return None

    def current_keys() -> KeyRing:
        """The key file as it is now: re-read whenever it changed, so an added key works at once and a revoked or
        rotated one stops working at once (not at the next bad-key request)."""
        stamp = keys_stamp()
        if stamp != keys_seen[0]:
            keys.clients, keys_seen[0] = KeyRing.load(settings.keys_file).clients, stamp
        return keys

    async def authenticate(request: Request) -> Client | JSONResponse:
        header = request.headers.get("authorization", "")
        key = header[7:] if header.lower().startswith("bearer ") else None
        client = (await run_in_threadpool(current_keys)).authenticate(key)
        return client or _error(401, "missing or invalid API key (Authorization: Bearer <key>)", "authentication_error")

    async def finish(row: dict, response: Response, started: float) -> Response:
        row["latency_ms"] = (time.perf_counter() - started) * 1000
        m_requests.labels(row.get("model") or "-", str(row["status"])).inc()
        m_latency.labels(row.get("model") or "-").observe(row["latency_ms"] / 1000)
        await run_in_threadpool(log.record, row)
        if retention != (None, None):
            logged_since_prune[0] += 1
            if logged_since_prune[0] >= settings.log_prune_every_requests:
                logged_since_prune[0] = 0
                prune_due.set()
        return response

    async def read_body(request: Request, limit: int) -> bytes | None:
        """The body, or None once it exceeds `limit` — judged from Content-Length and while reading, so an
        oversized body is never buffered whole."""
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return None
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > limit:
                return None
        return bytes(body)

    async def guarded(request: Request, endpoint: str) -> Response:
        started = time.perf_counter()
        rid = f"tf-{uuid.uuid4().hex}"
        client = await authenticate(request)
        if isinstance(client, JSONResponse):
            return client  # unauthenticated requests are not logged against a client
        row: dict[str, Any] = {"id": rid, "client": client.name, "endpoint": endpoint, "status": 200}

        async def fail(status: int, message: str, kind: str, detail: str | None = None, logged: str | None = None) -> Response:
            """`detail` goes to the request log only (the owner-only database), never to the client; `logged`
            is what the log keeps instead of `message` (a redacted copy). The log's error starts with the kind."""
            row.update(status=status, error=f"{kind}: {logged or message}" + (f"; upstream said: {detail}" if detail else ""))
            return await finish(row, _error(status, message, kind), started)

        if not limiter.allow(client):  # every request counts, the refused and malformed ones too
            return await fail(429, f"rate limit of {client.requests_per_minute} requests/minute exceeded", "rate_limit_exceeded")
        if in_flight[client.name] >= client.max_concurrent:
            return await fail(429, f"this client already has {client.max_concurrent} requests in flight", "rate_limit_exceeded")
        in_flight[client.name] += 1
        handed_over = False
        try:
            response = await handle(request, endpoint, client, row, fail, started)
            handed_over = isinstance(response, StreamingResponse)  # the stream releases its slot when it ends
            return response
        finally:
            if not handed_over:
                in_flight[client.name] -= 1

    async def handle(request: Request, endpoint: str, client: Client, row: dict, fail, started: float) -> Response:
        rid = row["id"]
        body_bytes = await read_body(request, client.max_request_bytes)
        if body_bytes is None:
            return await fail(413, f"request body exceeds this client's limit of {client.max_request_bytes} bytes", "request_too_large")
        try:
            raw = json.loads(body_bytes)
        except ValueError:
            return await fail(400, "request body must be a JSON object", "invalid_request_error")
        alias = raw.get("model") if isinstance(raw, dict) else None
        if not isinstance(alias, str):
            return await fail(400, "request body must be a JSON object with a 'model' field", "invalid_request_error")
        route = routes.models().get(alias)
        if route is None or (alias not in client.models and "*" not in client.models):
            # a model outside the key's scope is answered as one that is not served: no probing for names
            return await fail(404, "model is not served here (GET /v1/models lists yours)", "model_not_found")
        row["model"] = alias
        try:
            req = parse_request(raw, endpoint, client.allowed_parameters, client.max_messages, client.max_tokens)
        except RequestError as err:
            # the message names what the client sent (a field's name is the client's text): redacted in the log
            guards = await run_in_threadpool(guards_for, route)
            logged = (await run_in_threadpool(guards.redact, [str(err)]))[0][0][:500]
            return await fail(400, str(err), "invalid_request_error", logged=logged)
        row.update(upstream_model=route["upstream"], adapter_version=route.get("adapter_version"))

        guards = await run_in_threadpool(guards_for, route)
        checked = await run_in_threadpool(guard_input, guards, req, endpoint, route.get("allow_client_system"))
        for kind, n in checked.findings.items():
            m_guard.labels("input", kind).inc(n)
        findings = row["input_guard"] = checked.findings
        row["prompt_redacted"] = checked.prompt_redacted
        if checked.refused:
            return await fail(400, checked.refused, "guardrail_refusal")
        messages, question = checked.messages, checked.question

        sources, retrieved = [], False
        grounding = req.tuneforge.grounding if req.tuneforge and req.tuneforge.grounding is not None \
            else route.get("retrieval", False)  # the model's default; a request may opt out
        action = route.get("grounding") or "off"  # the grounding check (the model's serving.grounding)
        abstention = route.get("abstention") or ABSTAIN
        if grounding and route.get("knowledge_index_dir") and endpoint == "chat" and question:
            retrieved = True
            k = int(route.get("retrieval_passages") or settings.grounding_passages)
            found = await run_in_threadpool(retrieve, route["knowledge_index_dir"], retrieval_query(question), k)
            grounded = await run_in_threadpool(ground, messages, found, route.get("min_retrieval_score"), abstention)
            messages, sources = grounded.messages, grounded.sources
            if grounded.flagged:
                findings["retrieved_injection"] = grounded.flagged
                m_guard.labels("input", "retrieved_injection").inc(grounded.flagged)
            if sources:
                row["source_documents"] = sorted({str(p["doc_id"]) for p in sources if p.get("doc_id")})
            if not grounded.confident:  # retrieval found nothing close enough: abstain without asking the model
                m_guard.labels("output", "low_retrieval").inc()
                return await abstain(row, started, rid, alias, req, route, findings, abstention, client)
        body = upstream_body(req, route["upstream"], client.max_tokens, messages=messages, prompt=checked.prompt)
        # a route may name its own server (a merged champion on its own vLLM); else the shared upstream
        path = route.get("url", "") + ("/v1/chat/completions" if endpoint == "chat" else "/v1/completions")
        extra = {"id": rid, "adapter_version": route.get("adapter_version"), "input_guard": findings,
                 "sources": [source_of(s) for s in sources]}
        check = (action, abstention) if retrieved and sources and action != "off" else None
        if req.stream:
            return await stream(body, path, row, started, extra, endpoint, guards, question, client, sources, check)

        upstream_started = time.perf_counter()
        try:
            response = await asyncio.wait_for(send_upstream(upstream.build_request("POST", path, json=body)),
                                              settings.upstream_timeout_s)
        except TimeoutError:
            return await fail(504, f"the model server did not answer within {settings.upstream_timeout_s:g} s", "upstream_timeout")
        except httpx.HTTPError as err:
            m_up.set(0)
            return await fail(503, f"model server unavailable ({type(err).__name__}): retry shortly", "upstream_unavailable")
        m_up.set(1)
        row["upstream_ms"] = (time.perf_counter() - upstream_started) * 1000
        if response.status_code >= 400:
            status = 503 if response.status_code >= 500 else 400  # its text is logged, never echoed: it names internals
            # vLLM's error text can quote the prompt: what the log keeps of it is redacted like the prompt itself
            detail = (await run_in_threadpool(guards.redact, [response.text[:300]]))[0][0]
            return await fail(status, f"the model server refused the request (status {response.status_code})", "upstream_error",
                              detail=detail)
        try:
            data = parse_response(response.json(), endpoint)
        except ValueError:
            return await fail(502, "the model server sent a response the gateway cannot read", "upstream_error")
        usage = data.usage or Usage()
        row.update(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
        m_tokens.labels(alias, "prompt").inc(usage.prompt_tokens)
        m_tokens.labels(alias, "completion").inc(usage.completion_tokens)
        grounding_report = None
        if check is not None:  # before the output guard, which then judges the text that is served
            checked = await run_in_threadpool(check_grounding, data, sources, question, *check)
            grounding_report = [describe_checked(c, sources) for c in checked]
            row["grounding"] = {c.verdict: sum(x.verdict == c.verdict for x in checked) for c in checked}
            for c in checked:
                m_guard.labels("output", f"grounding_{c.verdict}").inc()
        context = grounding_context(question, sources) if sources else ""
        outputs, output_findings = await run_in_threadpool(guard_choices, guards, data, endpoint, question, context)
        for kind, n in output_findings.items():
            m_guard.labels("output", kind).inc(n)
        row["output_guard"] = output_findings
        row["response_redacted"] = "\n".join(o or "" for o in outputs)
        data.id, data.model = rid, alias
        told = {**extra, "output_guard": output_findings}
        if grounding_report is not None:
            withheld = {c.index for c in data.choices if c.finish_reason == "content_filter"}
            told["choices"] = [{"index": c.index, **(g if c.index not in withheld else {**g, "citations": []})}
                               for c, g in zip(data.choices, grounding_report)]
            told["grounding"], told["citations"] = told["choices"][0]["verdict"], told["choices"][0]["citations"]
        return await finish(row, JSONResponse({**data.model_dump(exclude_none=True), "tuneforge": told}), started)

    async def abstain(row: dict, started: float, rid: str, alias: str, req, route: dict, findings: dict, abstention: str,
                      client: Client) -> Response:
        """The answer to a grounded request whose best passage scores below the route's retrieval threshold: the
        model's abstention sentence, without generating (streamed as one chunk when the client asked to stream)."""
        row.update(grounding={"low_retrieval": 1}, response_redacted=abstention, prompt_tokens=0, completion_tokens=0,
                   output_guard={})
        told = {"id": rid, "adapter_version": route.get("adapter_version"), "input_guard": findings, "sources": [],
                "grounding": "low_retrieval", "citations": [],
                "choices": [{"index": 0, "verdict": "low_retrieval", "action": "abstain", "unsupported_claims": 0,
                             "invalid_citations": 0, "citations": []}]}
        if not req.stream:
            body = {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": alias,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": abstention}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}, "tuneforge": told}
            return await finish(row, JSONResponse(body), started)

        async def events():
            try:
                for text, reason in ((abstention, None), ("", "stop")):
                    yield "data: " + json.dumps({"id": rid, "object": "chat.completion.chunk", "created": int(time.time()),
                                                 "model": alias, "choices": [{"index": 0, "delta": {"content": text},
                                                                              "finish_reason": reason}]}) + "\n\n"
                yield "data: [DONE]\n\n"
            finally:
                in_flight[client.name] -= 1
                await finish(row, Response(), started)

        return StreamingResponse(events(), media_type="text/event-stream")

    async def stream(body: dict, path: str, row: dict, started: float, extra: dict, endpoint: str, guards: Guards,
                     question: str, client: Client, sources: list[dict] = (), check: tuple[str, str] | None = None) -> Response:
        """Stream through, releasing text only once the whole output guard (canaries, toxicity and Presidio's
        personal data) has passed it, and holding back at least the longest canary or entity; a blocked stream
        ends with finish_reason content_filter and never carries the offending text. The upstream's
        finish_reason is passed on. With the grounding check (`check`: the route's action and abstention
        sentence), nothing is released before the whole answer has arrived and passed it — one unsupported claim at
        its end changes the whole answer — and the last chunk carries the check's report (`tuneforge`)."""
        deadline = time.monotonic() + settings.upstream_timeout_s
        request = upstream.build_request("POST", path, json=body)
        try:
            response = await asyncio.wait_for(send_upstream(request, stream=True), settings.upstream_timeout_s)
        except TimeoutError:
            message = f"the model server did not answer within {settings.upstream_timeout_s:g} s"
            row.update(status=504, error=f"upstream_timeout: {message}")
            return await finish(row, _error(504, message, "upstream_timeout"), started)
        except httpx.HTTPError as err:
            m_up.set(0)
            message = f"model server unavailable ({type(err).__name__})"
            row.update(status=503, error=f"upstream_unavailable: {message}")
            return await finish(row, _error(503, message + ": retry shortly", "upstream_unavailable"), started)
        m_up.set(1)
        if response.status_code >= 400:
            text = (await response.aread()).decode(errors="replace")
            await response.aclose()
            row.update(status=503 if response.status_code >= 500 else 400,
                       error=f"upstream_error: the model server refused the request (status {response.status_code}); "
                             f"upstream said: {text[:300]}")
            return await finish(row, _error(row["status"], f"the model server refused the request (status {response.status_code})",
                                            "upstream_error"), started)

        def chunk(text: str, finish_reason: str | None = None) -> str:
            choice = {"index": 0, "delta": {"content": text}} if endpoint == "chat" else {"index": 0, "text": text}
            payload = {"id": extra["id"], "object": "chat.completion.chunk" if endpoint == "chat" else "text_completion",
                       "created": int(time.time()), "model": row["model"], "choices": [{**choice, "finish_reason": finish_reason}]}
            return f"data: {json.dumps(payload)}\n\n"

        def failed(status: int, kind: str, message: str, detail: str, full: str, sent: int) -> str:
            """A stream that has begun and cannot finish: the log row says why, the client gets the error event."""
            row.update(status=status, error=f"{kind}: stream failed after {len(full)} characters from the model server "
                                            f"({sent} released){detail}: {message}")
            return _error_event(status, message, kind)

        async def events():
            """The guarded stream. If the model server fails once the stream has begun — the deadline passes, the
            connection drops (vLLM killed), or it sends an error event — the client gets one error event (504
            upstream_timeout, 503 upstream_unavailable) and `[DONE]`; nothing the whole guard has not passed is
            released, and the log row keeps the status and why the stream failed."""
            context = grounding_context(question, list(sources)) if sources else ""
            window = StreamGuard(guards, question, settings.stream_holdback_chars, context)
            usage, blocked, finish_reason, served = {}, None, None, None
            upstream_started = time.perf_counter()
            lines = response.aiter_lines()
            try:
                while True:
                    try:
                        line = await asyncio.wait_for(anext(lines), max(0.0, deadline - time.monotonic()))
                    except StopAsyncIteration:
                        break
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    try:
                        data = json.loads(line[6:])
                    except ValueError:
                        continue
                    if not isinstance(data, dict):
                        continue
                    if data.get("error") is not None or data.get("object") == "error":
                        raise UpstreamStreamError(json.dumps(data.get("error") or data.get("message"))[:300])
                    usage = data.get("usage") or usage
                    pieces = []
                    for c in data.get("choices") or []:
                        piece = (c.get("delta") or {}).get("content") if endpoint == "chat" else c.get("text")
                        pieces.append(piece if isinstance(piece, str) else "")
                        finish_reason = c.get("finish_reason") or finish_reason
                    blocked = window.add("".join(pieces))  # canaries and toxicity, every chunk
                    if blocked:
                        break
                    if check is not None:  # the grounding check needs the whole answer: nothing released before it
                        continue
                    span = window.window()
                    if span:  # the whole guard over the window, off the event loop
                        verdict = await run_in_threadpool(window.check, span)
                        if not verdict.allowed:
                            blocked = verdict
                            break
                        yield chunk(window.release(span))
                if check is not None and blocked is None:
                    checked = await run_in_threadpool(check_answer, window.full, list(sources), question, *check)
                    verdict = await run_in_threadpool(guards.check_output, checked.text, True, question, context)
                    blocked = None if verdict.allowed else verdict
                    served = checked.text
                    row["grounding"] = {checked.verdict: 1}
                    m_guard.labels("output", f"grounding_{checked.verdict}").inc()
                    if blocked is None:
                        report = describe_checked(checked, list(sources))
                        yield chunk(served)
                        done = json.loads(chunk("", finish_reason or "stop")[6:])
                        yield "data: " + json.dumps({**done, "tuneforge": {**extra, "grounding": report["verdict"],
                                                                           "citations": report["citations"],
                                                                           "choices": [{"index": 0, **report}]}}) + "\n\n"
                    else:
                        yield chunk(BLOCKED.format(reason=blocked.reason), "content_filter")
                    yield "data: [DONE]\n\n"
                    return
                span = None if blocked else window.window(final=True)
                if span:
                    verdict = await run_in_threadpool(window.check, span)
                    blocked = None if verdict.allowed else verdict
                if blocked is None:
                    if rest := window.rest():
                        yield chunk(rest)
                    yield chunk("", finish_reason or "stop")
                else:
                    yield chunk(BLOCKED.format(reason=blocked.reason), "content_filter")
                yield "data: [DONE]\n\n"
            except TimeoutError:
                yield failed(504, "upstream_timeout", f"the model server did not finish within {settings.upstream_timeout_s:g} s",
                             "", window.full, window.sent)
            except (httpx.HTTPError, UpstreamStreamError) as err:
                m_up.set(0)
                yield failed(503, "upstream_unavailable", "the model server's stream failed before it finished: retry shortly",
                             f" ({type(err).__name__}{': ' + str(err) if isinstance(err, UpstreamStreamError) else ''})", window.full, window.sent)
            except Exception as err:  # noqa: BLE001 - a fault in the gateway still ends the stream with an error, never a hang
                logger.exception("stream %s failed in the gateway", row["id"])
                yield failed(500, "gateway_error", "the gateway failed while streaming", f" ({type(err).__name__})", window.full, window.sent)
            finally:
                in_flight[client.name] -= 1
                await response.aclose()
                row.update(upstream_ms=(time.perf_counter() - upstream_started) * 1000,
                           prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"),
                           output_guard=blocked.findings if blocked else {},
                           response_redacted=BLOCKED.format(reason=blocked.reason) if blocked else
                           (await run_in_threadpool(guards.redact, [served if served is not None else window.full]))[0][0])
                await finish(row, Response(), started)

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await guarded(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await guarded(request, "completion")

    @app.get("/v1/models")
    async def models(request: Request):
        client = await authenticate(request)
        if isinstance(client, JSONResponse):
            return client
        served = routes.models()
        return {"object": "list", "data": [
            {"id": alias, "object": "model", "owned_by": "tuneforge", "adapter_version": route.get("adapter_version")}
            for alias, route in served.items() if alias in client.models or "*" in client.models]}

    @app.post("/v1/feedback")
    async def post_feedback(request: Request):
        """A client's rating or correction of one of its own responses: guarded, redacted, capped, rate-limited,
        and *pending* until a reviewer approves it — only approved feedback reaches a golden or training set."""
        client = await authenticate(request)
        if isinstance(client, JSONResponse):
            return client
        if not limiter.allow(client):
            return _error(429, f"rate limit of {client.requests_per_minute} requests/minute exceeded", "rate_limit_exceeded")
        body_bytes = await read_body(request, client.max_request_bytes)
        if body_bytes is None:
            return _error(413, f"request body exceeds this client's limit of {client.max_request_bytes} bytes", "request_too_large")
        try:
            fb = parse_model(FeedbackRequest, json.loads(body_bytes))
        except (ValueError, RequestError) as err:
            message = str(err) if isinstance(err, RequestError) else "feedback must be a JSON object"
            return _error(400, f"{message} (send response_id and rating up|down and/or corrected_answer)", "invalid_request_error")
        if fb.rating is None and fb.corrected_answer is None:
            return _error(400, "give a rating (up|down) or a corrected_answer", "invalid_request_error")
        if await run_in_threadpool(log.feedback_since, client.name, 3600) >= settings.feedback_per_hour:
            return _error(429, f"at most {settings.feedback_per_hour} feedbacks an hour per client", "rate_limit_exceeded")
        logged = await run_in_threadpool(log.get, fb.response_id)
        if logged is None or logged["client"] != client.name:
            return _error(404, "no such response for this client", "not_found")
        guards = guards_for(routes.models().get(logged["model"]) or {})
        corrected = comment = None
        if fb.corrected_answer:
            verdict = await run_in_threadpool(guards.check_input, fb.corrected_answer)  # it may become training data
            shown = await run_in_threadpool(guards.check_output, fb.corrected_answer, False)
            refused = verdict if not verdict.allowed else shown if not shown.allowed else None
            if refused is not None:
                return _error(400, f"corrected_answer refused by the guard: {refused.reason}", "guardrail_refusal")
            corrected = (await run_in_threadpool(guards.redact, [fb.corrected_answer]))[0][0]
        if fb.comment:
            comment = (await run_in_threadpool(guards.redact, [fb.comment]))[0][0]
        feedback_id = await run_in_threadpool(log.record_feedback, {
            "response_id": fb.response_id, "client": client.name, "rating": fb.rating, "corrected_answer": corrected,
            "comment": comment, "status": "pending"})
        return {"status": "pending", "feedback_id": feedback_id, "response_id": fb.response_id}

    @app.get("/v1/feedback")
    async def list_feedback(request: Request, status: str = "pending"):
        """Feedback on the reviewer's models, for review (reviewer keys only)."""
        client = await authenticate(request)
        if isinstance(client, JSONResponse):
            return client
        if not client.reviewer:
            return _error(403, "this API key may not review feedback", "permission_error")
        if status not in REVIEW_STATUSES:
            return _error(400, f"status must be one of {', '.join(REVIEW_STATUSES)}", "invalid_request_error")
        rows = await run_in_threadpool(log.feedback_rows, status)
        mine = [r for r in rows if r["model"] in client.models or "*" in client.models]
        return {"object": "list", "data": [
            {"feedback_id": r["id"], "response_id": r["response_id"], "model": r["model"], "client": r["client"],
             "rating": r["rating"], "corrected_answer": r["corrected_answer"], "comment": r["comment"],
             "status": r["status"], "reviewed_by": r["reviewed_by"]} for r in mine]}

    @app.post("/v1/feedback/{feedback_id}/review")
    async def review_feedback(feedback_id: int, request: Request):
        """Approve or reject one pending feedback (reviewer keys only; never one's own)."""
        client = await authenticate(request)
        if isinstance(client, JSONResponse):
            return client
        if not client.reviewer:
            return _error(403, "this API key may not review feedback", "permission_error")
        try:
            decision = parse_model(ReviewRequest, json.loads(await request.body() or b"null")).decision
        except (ValueError, RequestError):
            return _error(400, "send {\"decision\": \"approve\"} or {\"decision\": \"reject\"}", "invalid_request_error")
        row = next(iter(await run_in_threadpool(log.feedback_rows, "pending", None, feedback_id)), None)
        if row is None or (row["model"] not in client.models and "*" not in client.models):
            return _error(404, "no such pending feedback on your models", "not_found")
        try:
            done = await run_in_threadpool(log.review, feedback_id, "approved" if decision == "approve" else "rejected",
                                           client.name)
        except PermissionError as err:
            return _error(403, str(err), "permission_error")
        except LookupError:
            return _error(404, "no such pending feedback on your models", "not_found")
        return {"feedback_id": feedback_id, "status": done["status"], "reviewed_by": client.name}

    @app.get("/healthz")
    async def healthz():
        try:
            ok = (await upstream.get("/health", timeout=2)).status_code == 200
        except httpx.HTTPError:
            ok = False
        return {"gateway": "ok", "upstream": "ok" if ok else "unavailable", "models": sorted(routes.models())}

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _canaries(path: str | None) -> tuple[str, ...]:
    if not path or not Path(path).is_file():
        return ()
    return _load_canaries(path, Path(path).stat().st_mtime_ns)


@lru_cache(maxsize=32)
def _load_canaries(path: str, mtime_ns: int) -> tuple[str, ...]:
    from resources.safety.canaries import load_canaries

    return tuple(c.value for c in load_canaries(path))


def _guards(settings: GatewaySettings, policy: str, lexicon: str, canaries: list[str], pseudonym_key: str | None,
            detector=None, public_entities: tuple[str, ...] = ()) -> Guards:
    from resources.redaction.redactor import PiiRedactor
    from resources.safety.probes import load_lexicon

    options = {k: v for k, v in (("spacy_model", settings.spacy_model), ("spacy_exclude", settings.spacy_exclude)) if v is not None}
    engine = PiiRedactor(policy_path=policy, pseudonym_key=pseudonym_key, public_entities=list(public_entities),
                         **options).engine()
    return Guards(engine, canaries, load_lexicon(lexicon), settings.pii_in_prompt, settings.block_injection, detector)


def secrets_from_environment() -> dict[str, str]:
    """The gateway's secrets, as `GatewayServer` passes them to the process."""
    import os

    return {name: os.environ[var] for name, var in SECRET_ENV.items() if os.environ.get(var)}


def run(settings_file: str, host: str, port: int) -> None:
    import uvicorn

    settings = GatewaySettings.model_validate_json(Path(settings_file).read_text())
    uvicorn.run(create_app(settings, secrets=secrets_from_environment()), host=host, port=port, log_level="warning",
                access_log=False)


if __name__ == "__main__":  # python -m resources.serving.gateway.app --settings FILE [--host H] [--port P]
    import argparse

    from resources.offline import apply_offline_defaults

    apply_offline_defaults()
    parser = argparse.ArgumentParser(description="the tuneforge guardrail gateway")
    parser.add_argument("--settings", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    run(args.settings, args.host, args.port)
