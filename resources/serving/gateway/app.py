"""The guardrail gateway: an OpenAI-compatible API in front of vLLM (FastAPI).

Per request: API key (hashed at rest) -> size and rate limits -> allowed model -> input guard (PII
redacted or refused, prompt injection refused) -> optional grounding in the knowledge index -> vLLM ->
output guard (canary, toxicity, PII) -> request log (redacted) -> response with a response id that
`/v1/feedback` accepts. `/healthz` and Prometheus `/metrics` are open.
"""

from __future__ import annotations

import json
import time
from contextlib import asynccontextmanager
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

from resources.knowledge.prompt import grounded_messages, source_of
from resources.safety.probes import SHIPPED_LEXICON
from resources.serving.gateway.guards import Guards, injection_findings
from resources.serving.gateway.keys import Client, KeyRing
from resources.requestlog import RequestLog

BLOCKED = "[withheld by the tuneforge output guard: {reason}]"
# Secrets reach the gateway process in its environment (GatewayServer.launch_settings), never in the settings file.
SECRET_ENV = {"upstream_api_key": "TUNEFORGE_UPSTREAM_API_KEY", "pseudonym_key": "TUNEFORGE_PSEUDONYM_KEY"}


class GatewaySettings(BaseModel):
    """Everything the gateway process needs but its secrets; the gateway reads it from a JSON file that
    `GatewayServer.launch_settings` derives from the resources."""

    upstream_url: str = Field(default="http://127.0.0.1:8000", description="vLLM API root.")
    upstream_timeout_s: float = Field(default=300.0, description="Timeout of one upstream request.")
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
    embedding_model: str | None = Field(default=None, description="Embedding model of the knowledge indexes (None: the default).")
    embedding_max_chars: int | None = Field(default=None, description="Characters of each question embedded (None: the default).")
    grounding_passages: int = Field(default=3, description="Passages put into context for a grounded request, where the "
                                    "model's route does not set its own (serving.retrieval_passages).")
    stream_holdback_chars: int = Field(default=48, description="Streamed text held back until the output guard has seen it.")


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


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
    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        await upstream.aclose()

    app = FastAPI(title="tuneforge gateway", lifespan=lifespan)
    keys = KeyRing.load(settings.keys_file)
    routes = Routes(settings.routes_file)
    log = RequestLog(settings.database_url)
    limiter = RateLimiter()
    fixed_guards = guards
    built: dict[tuple, Guards] = {}
    indexes: dict[str, Any] = {}
    upstream_key = secrets.get("upstream_api_key")
    upstream = httpx.AsyncClient(base_url=settings.upstream_url, timeout=settings.upstream_timeout_s,
                                 limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
                                 headers={"Authorization": f"Bearer {upstream_key}"} if upstream_key else {})

    def guards_for(route: dict) -> Guards:
        """The guards of a route: its model's redaction policy; every served model's canaries."""
        if fixed_guards is not None:
            return fixed_guards
        canaries = tuple(sorted({c for r in routes.models().values() for c in _canaries(r.get("canaries_path"))}
                                | set(_canaries(settings.canaries_path))))
        policy = route.get("redaction_policy") or settings.redaction_policy
        lexicon = route.get("toxicity_lexicon_path") or settings.toxicity_lexicon_path
        if (policy, lexicon, canaries) not in built:
            built[(policy, lexicon, canaries)] = _guards(settings, policy, lexicon, list(canaries), secrets.get("pseudonym_key"))
        return built[(policy, lexicon, canaries)]

    def retrieve(index_dir: str, question: str, k: int) -> list[dict]:
        """Passages of a model's knowledge index (each index loaded once, swapped when a new one is routed)."""
        if index_dir not in indexes:
            from resources.retrieval.index import KnowledgeIndexer

            indexer = KnowledgeIndexer(**{k: v for k, v in (("model", settings.embedding_model),
                                                            ("max_chars", settings.embedding_max_chars)) if v is not None})
            indexes.clear()
            indexes[index_dir] = indexer.load(index_dir)
        return indexes[index_dir].passages([question], k)[0]
    registry = CollectorRegistry()
    m_requests = Counter("tuneforge_gateway_requests", "Requests by model and status", ["model", "status"], registry=registry)
    m_latency = Histogram("tuneforge_gateway_latency_seconds", "End-to-end latency", ["model"], registry=registry,
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120))
    m_guard = Counter("tuneforge_gateway_guard_triggers", "Guard decisions that changed a request", ["guard", "kind"], registry=registry)
    m_tokens = Counter("tuneforge_gateway_tokens", "Tokens processed", ["model", "kind"], registry=registry)
    m_up = Gauge("tuneforge_gateway_upstream_up", "1 if the last upstream call succeeded", registry=registry)
    app.state.log, app.state.keys, app.state.settings = log, keys, settings

    def reload_keys() -> None:
        fresh = KeyRing.load(settings.keys_file)
        keys.clients = fresh.clients

    async def authenticate(request: Request) -> Client | JSONResponse:
        header = request.headers.get("authorization", "")
        key = header[7:] if header.lower().startswith("bearer ") else None
        client = keys.authenticate(key)
        if client is None:
            await run_in_threadpool(reload_keys)  # a key added since start-up
            client = keys.authenticate(key)
        return client or _error(401, "missing or invalid API key (Authorization: Bearer <key>)", "authentication_error")

    async def finish(row: dict, response: Response, started: float) -> Response:
        row["latency_ms"] = (time.perf_counter() - started) * 1000
        m_requests.labels(row.get("model") or "-", str(row["status"])).inc()
        m_latency.labels(row.get("model") or "-").observe(row["latency_ms"] / 1000)
        await run_in_threadpool(log.record, row)
        return response

    async def guarded(request: Request, endpoint: str) -> Response:
        started = time.perf_counter()
        rid = f"tf-{uuid.uuid4().hex}"
        client = await authenticate(request)
        if isinstance(client, JSONResponse):
            return client  # unauthenticated requests are not logged against a client
        row: dict[str, Any] = {"id": rid, "client": client.name, "endpoint": endpoint, "status": 200}

        async def fail(status: int, message: str, kind: str) -> Response:
            row.update(status=status, error=message)
            return await finish(row, _error(status, message, kind), started)

        body_bytes = await request.body()
        if len(body_bytes) > client.max_request_bytes:
            return await fail(413, f"request body of {len(body_bytes)} bytes exceeds this client's limit of {client.max_request_bytes}", "request_too_large")
        try:
            body = json.loads(body_bytes)
            alias = body["model"]
        except (ValueError, KeyError, TypeError):
            return await fail(400, "request body must be JSON with a 'model' field", "invalid_request_error")
        row["model"] = alias
        route = routes.models().get(alias)
        if route is None or (alias not in client.models and "*" not in client.models):
            # a model outside the key's scope is answered as one that is not served: no probing for names
            return await fail(404, f"model {alias!r} is not served here (GET /v1/models lists yours)", "model_not_found")
        if not limiter.allow(client):
            return await fail(429, f"rate limit of {client.requests_per_minute} requests/minute exceeded", "rate_limit_exceeded")
        row.update(upstream_model=route["upstream"], adapter_version=route.get("adapter_version"))

        # input guard on everything the user wrote
        texts = [m.get("content") or "" for m in body.get("messages", []) if m.get("role") == "user"] if endpoint == "chat" \
            else [body.get("prompt") or ""]
        guards = await run_in_threadpool(guards_for, route)
        verdicts = [await run_in_threadpool(guards.check_input, t) for t in texts]
        findings: dict[str, int] = {}
        for v in verdicts:
            for k, n in v.findings.items():
                findings[k] = findings.get(k, 0) + n
                m_guard.labels("input", k).inc(n)
        row["input_guard"] = findings
        refused = next((v for v in verdicts if not v.allowed), None)
        if refused or guards.pii_in_prompt == "allow":  # what reaches the log is always redacted
            row["prompt_redacted"] = "\n".join(t for t, _ in await run_in_threadpool(guards.redact, [v.text for v in verdicts]))
        else:
            row["prompt_redacted"] = "\n".join(v.text for v in verdicts)
        if refused:
            return await fail(400, f"prompt refused by the input guard: {refused.reason}", "guardrail_refusal")
        redacted = iter(v.text for v in verdicts)
        if endpoint == "chat":
            body["messages"] = [{**m, "content": next(redacted)} if m.get("role") == "user" else m for m in body["messages"]]
        else:
            body["prompt"] = next(redacted)

        sources = []
        options = body.pop("tuneforge", None) or {}
        grounding = options.get("grounding", route.get("retrieval", False))  # the model's default; a request may opt out
        if grounding and route.get("knowledge_index_dir") and endpoint == "chat" and texts:
            k = int(route.get("retrieval_passages") or settings.grounding_passages)
            found = await run_in_threadpool(retrieve, route["knowledge_index_dir"], texts[-1], k)
            # retrieved passages are untrusted input too: one that carries instructions aimed at the model is left out
            clean = [not injection_findings(p["text"]) for p in found]
            sources = [p for p, ok in zip(found, clean) if ok]
            flagged = len(found) - len(sources)
            if flagged:
                findings["retrieved_injection"] = flagged
                m_guard.labels("input", "retrieved_injection").inc(flagged)
            if sources:
                body["messages"] = grounded_messages(body["messages"], sources)
        body["model"] = route["upstream"]
        # a route may name its own server (a merged champion on its own vLLM); else the shared upstream
        path = route.get("url", "") + ("/v1/chat/completions" if endpoint == "chat" else "/v1/completions")
        extra = {"id": rid, "adapter_version": route.get("adapter_version"), "input_guard": findings,
                 "sources": [source_of(s) for s in sources]}
        if body.get("stream"):
            return await stream(body, path, row, started, extra, endpoint, guards)

        upstream_started = time.perf_counter()
        try:
            response = await upstream.post(path, json=body)
        except httpx.HTTPError as err:
            m_up.set(0)
            return await fail(503, f"model server unavailable ({type(err).__name__}): retry shortly", "upstream_unavailable")
        m_up.set(1)
        row["upstream_ms"] = (time.perf_counter() - upstream_started) * 1000
        if response.status_code >= 400:
            status = 503 if response.status_code >= 500 else response.status_code
            return await fail(status, f"model server answered {response.status_code}: {response.text[:300]}", "upstream_error")
        data = response.json()
        usage = data.get("usage") or {}
        row.update(prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"))
        m_tokens.labels(alias, "prompt").inc(usage.get("prompt_tokens") or 0)
        m_tokens.labels(alias, "completion").inc(usage.get("completion_tokens") or 0)
        choice = data["choices"][0]
        text = choice["message"]["content"] if endpoint == "chat" else choice["text"]
        verdict = await run_in_threadpool(guards.check_output, text or "")
        row["output_guard"] = verdict.findings
        for k, n in verdict.findings.items():
            m_guard.labels("output", k).inc(n)
        if not verdict.allowed:
            text = BLOCKED.format(reason=verdict.reason)
            choice["finish_reason"] = "content_filter"
            if endpoint == "chat":
                choice["message"]["content"] = text
            else:
                choice["text"] = text
        row["response_redacted"] = text if not verdict.allowed else (await run_in_threadpool(guards.redact, [text or ""]))[0][0]
        data.update(id=rid, model=alias, tuneforge={**extra, "output_guard": verdict.findings})
        return await finish(row, JSONResponse(data), started)

    async def stream(body: dict, path: str, row: dict, started: float, extra: dict, endpoint: str, guards: Guards) -> Response:
        """Stream through, holding back the last characters until the output guard has seen them; a
        blocked stream ends with finish_reason content_filter and never carries the offending text."""
        body["stream_options"] = {"include_usage": True}
        request = upstream.build_request("POST", path, json=body)
        try:
            response = await upstream.send(request, stream=True)
        except httpx.HTTPError as err:
            m_up.set(0)
            row.update(status=503, error=f"model server unavailable ({type(err).__name__})")
            return await finish(row, _error(503, row["error"] + ": retry shortly", "upstream_unavailable"), started)
        m_up.set(1)
        if response.status_code >= 400:
            text = (await response.aread()).decode(errors="replace")
            await response.aclose()
            row.update(status=503 if response.status_code >= 500 else response.status_code, error=text[:300])
            return await finish(row, _error(row["status"], f"model server answered {response.status_code}: {text[:300]}", "upstream_error"), started)

        def chunk(text: str, finish_reason: str | None = None) -> str:
            choice = {"index": 0, "delta": {"content": text}} if endpoint == "chat" else {"index": 0, "text": text}
            payload = {"id": extra["id"], "object": "chat.completion.chunk" if endpoint == "chat" else "text_completion",
                       "created": int(time.time()), "model": row["model"], "choices": [{**choice, "finish_reason": finish_reason}]}
            return f"data: {json.dumps(payload)}\n\n"

        async def events():
            full, sent, usage, blocked = "", 0, {}, None
            upstream_started = time.perf_counter()
            try:
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    data = json.loads(line[6:])
                    usage = data.get("usage") or usage
                    for c in data.get("choices", []):
                        full += (c.get("delta", {}).get("content") if endpoint == "chat" else c.get("text")) or ""
                    verdict = guards.check_output(full, full=False)
                    if not verdict.allowed:
                        blocked = verdict
                        break
                    safe_until = len(full) - settings.stream_holdback_chars
                    if safe_until > sent:
                        yield chunk(full[sent:safe_until])
                        sent = safe_until
                if blocked is None:
                    blocked = await run_in_threadpool(guards.check_output, full)
                    blocked = None if blocked.allowed else blocked
                if blocked is None:
                    yield chunk(full[sent:])
                    yield chunk("", "stop")
                else:
                    yield chunk(BLOCKED.format(reason=blocked.reason), "content_filter")
                yield "data: [DONE]\n\n"
            except httpx.HTTPError as err:
                row.update(status=503, error=f"model server failed mid-stream ({type(err).__name__})")
                yield f"data: {json.dumps({'error': {'message': row['error'], 'code': 503}})}\n\n"
            finally:
                await response.aclose()
                row.update(upstream_ms=(time.perf_counter() - upstream_started) * 1000,
                           prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"),
                           output_guard=blocked.findings if blocked else {},
                           response_redacted=BLOCKED.format(reason=blocked.reason) if blocked else
                           (await run_in_threadpool(guards.redact, [full]))[0][0])
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
        client = await authenticate(request)
        if isinstance(client, JSONResponse):
            return client
        try:
            body = await request.json()
            response_id = body["response_id"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "feedback needs JSON with 'response_id' and 'rating' (up|down) or 'corrected_answer'", "invalid_request_error")
        rating, corrected = body.get("rating"), body.get("corrected_answer")
        if rating not in {None, "up", "down"} or (rating is None and not corrected):
            return _error(400, "'rating' must be 'up' or 'down' (or give 'corrected_answer')", "invalid_request_error")
        logged = await run_in_threadpool(log.get, response_id)
        if logged is None or logged["client"] != client.name:
            return _error(404, f"no response {response_id!r} for this client", "not_found")
        if corrected:
            route = routes.models().get(logged["model"]) or {}
            corrected = (await run_in_threadpool(guards_for(route).redact, [corrected]))[0][0]
        await run_in_threadpool(log.record_feedback, {"response_id": response_id, "client": client.name, "rating": rating,
                                                      "corrected_answer": corrected, "comment": body.get("comment")})
        return {"status": "recorded", "response_id": response_id}

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


def _guards(settings: GatewaySettings, policy: str, lexicon: str, canaries: list[str], pseudonym_key: str | None) -> Guards:
    from resources.redaction.redactor import PiiRedactor
    from resources.safety.probes import load_lexicon

    options = {k: v for k, v in (("spacy_model", settings.spacy_model), ("spacy_exclude", settings.spacy_exclude)) if v is not None}
    engine = PiiRedactor(policy_path=policy, pseudonym_key=pseudonym_key, **options).engine()
    return Guards(engine, canaries, load_lexicon(lexicon), settings.pii_in_prompt, settings.block_injection)


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
