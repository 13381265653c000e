"""A scripted OpenAI-compatible teacher on 127.0.0.1: stands in for a large teacher LLM, which cannot run here.

Asked for question/answer pairs (tuneforge's QA prompt), it answers from the passage: one pair whose answer is
the passage's first sentence, and one whose answer is not in the passage. Markers in a passage script the
failures a real endpoint has: MALFORMED (broken JSON), REFUSE (a refusal), EMPTY (an empty list), SLOW (slower
than the client's timeout), FLAKY (503 on the first attempt, then an answer). As judge it says whether the
answer's words stand in the passage. It counts requests and the most it had in flight at once (the slow
requests, which the client abandons, left out).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def build_teacher(latency_s: float = 0.05) -> FastAPI:
    """`latency_s`: each answer's delay (a little, so concurrent calls overlap)."""
    app = FastAPI()
    app.state.calls = Counter()
    app.state.in_flight = 0
    app.state.max_in_flight = 0
    app.state.flaky_seen = set()
    app.state.prompts = []  # every prompt received, in order (what reached the teacher)

    def passage_of(prompt: str) -> str:
        return prompt.split("---\n", 1)[1].split("\n---", 1)[0]

    def pairs(passage: str) -> str:
        first = re.split(r"(?<=[.!?])\s", passage.strip(), maxsplit=1)[0]
        topic = " ".join(first.split()[:4])
        return json.dumps([{"question": f"What is stated about {topic}?", "answer": first},
                           {"question": f"Which colour is the logo of {topic}?", "answer": "The logo is ultraviolet."}])

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        app.state.prompts.append(prompt)
        counted = "SLOW" not in prompt  # a request the client abandons at its timeout is not one it waits on
        app.state.in_flight += counted
        app.state.max_in_flight = max(app.state.max_in_flight, app.state.in_flight)
        try:
            await asyncio.sleep(latency_s)
            if prompt.startswith("You write training data"):
                passage = passage_of(prompt)
                app.state.calls["qa"] += 1
                if "FLAKY" in passage and passage not in app.state.flaky_seen:
                    app.state.flaky_seen.add(passage)
                    return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
                if "SLOW" in passage:
                    await asyncio.sleep(3)
                text = ("Here you go: [{question: broken" if "MALFORMED" in passage else
                        "I can't help with that request." if "REFUSE" in passage else
                        "[]" if "EMPTY" in passage else pairs(passage))
            else:
                app.state.calls["judge"] += 1
                passage = passage_of(prompt)
                answer = prompt.rsplit("Answer: ", 1)[1].split("\n", 1)[0]
                words = [w for w in re.findall(r"\w+", answer.lower()) if len(w) > 3]
                supported = all(w in passage.lower() for w in words)
                text = json.dumps({"supported": supported, "standalone": True})
            return {"id": "t", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                              "total_tokens": len(prompt.split()) + len(text.split())}}
        finally:
            app.state.in_flight -= counted

    return app
