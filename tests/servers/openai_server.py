"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests (FastAPI + uvicorn in a thread).

It serves two test-double models, because a capable judge or a hosted proprietary API cannot run here:
- `scripted-judge` answers deepeval's judge prompts by the rules in `scripted_judge.py`;
- `answer-book` answers from a fixed question -> answer mapping (a stand-in for a strong hosted API),
  and "I do not know." otherwise.
Every request must carry the bearer key; the server counts requests per model.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI, Header, HTTPException, Request

from servers import scripted_judge


def build_app(api_key: str, answer_book: dict[str, str]) -> FastAPI:
    app = FastAPI()
    app.state.requests = Counter()

    def authorise(authorization: str | None) -> None:
        if authorization != f"Bearer {api_key}":
            raise HTTPException(status_code=401, detail="invalid API key")

    @app.get("/v1/models")
    def models(authorization: str | None = Header(default=None)):
        authorise(authorization)
        return {"object": "list", "data": [{"id": m, "object": "model"} for m in ("scripted-judge", "answer-book")]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request, authorization: str | None = Header(default=None)):
        authorise(authorization)
        body = await request.json()
        model, prompt = body["model"], body["messages"][-1]["content"]
        app.state.requests[model] += 1
        if model == "scripted-judge":
            text = scripted_judge.answer(prompt)
        elif model == "answer-book":
            text = answer_book.get(prompt, "I do not know.")
        else:
            raise HTTPException(status_code=404, detail=f"model {model!r} not found")
        return {
            "id": f"cmpl-{sum(app.state.requests.values())}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                      "total_tokens": len(prompt.split()) + len(text.split())},
        }

    return app


@contextmanager
def serve(app: FastAPI):
    """Run `app` on a free port of 127.0.0.1; yields the base URL (…/v1)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("test OpenAI server did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
