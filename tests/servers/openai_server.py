"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests (FastAPI + uvicorn in a thread).

It serves test-double models, for what cannot run here (a capable judge, a hosted proprietary API) and
for a fast upstream in gateway tests (the real vLLM has its own end-to-end test):
- `scripted-judge` answers deepeval's judge prompts by the rules in `scripted_judge.py`;
- `answer-book` answers from a fixed question -> answer mapping (a stand-in for a strong hosted API),
  and "I do not know." otherwise;
- `echo` repeats the last message it received; `leaky` answers with the `leak` text it was built with.
Both chat and text completions, streamed (SSE) or not. With `api_key` set, requests must carry it. The
server counts requests per model and keeps the prompts it received (`app.state.prompts`).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import StreamingResponse

from servers import scripted_judge


MODELS = ("scripted-judge", "answer-book", "echo", "leaky")


def build_app(api_key: str | None = None, answer_book: dict[str, str] | None = None, leak: str = "") -> FastAPI:
    app = FastAPI()
    app.state.requests = Counter()
    app.state.prompts = []
    app.state.bodies = []  # every request body as received
    answer_book = answer_book or {}

    def authorise(authorization: str | None) -> None:
        if api_key and authorization != f"Bearer {api_key}":
            raise HTTPException(status_code=401, detail="invalid API key")

    @app.get("/v1/models")
    def models(authorization: str | None = Header(default=None)):
        authorise(authorization)
        return {"object": "list", "data": [{"id": m, "object": "model"} for m in MODELS]}

    @app.get("/health")
    def health():
        return {}

    def reply(model: str, prompt: str) -> str:
        app.state.requests[model] += 1
        app.state.prompts.append(prompt)
        if model == "scripted-judge":
            return scripted_judge.answer(prompt)
        if model == "answer-book":
            return answer_book.get(prompt, "I do not know.")
        if model == "echo":
            return prompt
        if model == "leaky":
            return leak
        raise HTTPException(status_code=404, detail=f"model {model!r} not found")

    def usage(prompt: str, text: str) -> dict:
        return {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                "total_tokens": len(prompt.split()) + len(text.split())}

    def streamed(model: str, prompt: str, text: str, chat: bool) -> StreamingResponse:
        def events():
            words = text.split(" ")
            for i, word in enumerate(words):
                piece = word if i == len(words) - 1 else word + " "
                choice = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
                yield f"data: {json.dumps({'model': model, 'choices': [{**choice, 'finish_reason': None}]})}\n\n"
            yield f"data: {json.dumps({'model': model, 'choices': [], 'usage': usage(prompt, text)})}\n\n"
            yield "data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat(request: Request, authorization: str | None = Header(default=None)):
        authorise(authorization)
        body = await request.json()
        app.state.bodies.append(body)
        model, prompt = body["model"], body["messages"][-1]["content"]
        text = reply(model, prompt)
        if body.get("stream"):
            return streamed(model, prompt, text, chat=True)
        return {
            "id": f"cmpl-{sum(app.state.requests.values())}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": usage(prompt, text),
        }

    @app.post("/v1/completions")
    async def completions(request: Request, authorization: str | None = Header(default=None)):
        authorise(authorization)
        body = await request.json()
        model, prompt = body["model"], body["prompt"]
        text = reply(model, prompt)
        if body.get("stream"):
            return streamed(model, prompt, text, chat=False)
        return {"id": "cmpl-x", "object": "text_completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "finish_reason": "stop", "text": text}], "usage": usage(prompt, text)}

    return app


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A uvicorn server for `app` in a thread on 127.0.0.1; can be stopped and started again (same port)."""

    def __init__(self, app: FastAPI, port: int = 0):
        self.app, self.port, self.server, self.thread = app, port, None, None

    def start(self) -> "Served":
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("test HTTP server did not start")
            time.sleep(0.05)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def serve(app: FastAPI, port: int = 0, suffix: str = "/v1"):
    """Run `app` on 127.0.0.1 (a free port unless given); yields the base URL (+ `suffix`)."""
    served = Served(app, port).start()
    try:
        yield f"http://127.0.0.1:{served.port}{suffix}"
    finally:
        served.stop()
