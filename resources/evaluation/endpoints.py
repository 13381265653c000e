"""Answers from any OpenAI-compatible chat endpoint, as one more row of the comparison.

Add the hosted API a tuned model is meant to replace (or a vLLM server, or the tuneforge gateway) as a
`ChatEndpoint`; its answers to the golden set are scored exactly like the local models'.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from dagster import Config
from pydantic import Field

from resources.evaluation.generation import Generation


class ChatEndpoint(Config):
    """An OpenAI-compatible chat model to compare against."""

    name: str = Field(description="Row name in the comparison table, e.g. 'hosted-gpt'.")
    base_url: str = Field(description="API root, e.g. https://api.example.com/v1 or http://127.0.0.1:8000/v1.")
    model: str = Field(description="Model name sent in each request.")
    api_key_env: str | None = Field(
        default=None, description="Name of the environment variable holding the bearer key (read at run time)."
    )
    concurrency: int = Field(default=4, description="Requests in flight at once.")
    timeout_s: float = Field(default=120.0, description="Per-request timeout.")


class EndpointError(RuntimeError):
    """A comparison endpoint failed; the message names the endpoint and the prompt."""


def answer_with_endpoint(endpoint: ChatEndpoint, prompts: list, max_new_tokens: int,
                         api_key: str | None = None) -> list[Generation]:
    """Greedy (temperature 0) answers; each prompt is a user message or a whole conversation (a list of
    messages); `stopped` is the endpoint's finish_reason == 'stop'. `api_key` (a key the caller already holds)
    takes precedence over `api_key_env`."""
    import openai

    key = api_key or (os.environ.get(endpoint.api_key_env, "") if endpoint.api_key_env else "none")
    if endpoint.api_key_env and not key:
        raise EndpointError(f"comparison endpoint {endpoint.name!r}: environment variable {endpoint.api_key_env} is not set")
    client = openai.OpenAI(base_url=endpoint.base_url, api_key=key, timeout=endpoint.timeout_s, max_retries=2)

    def one(i: int) -> Generation:
        try:
            response = client.chat.completions.create(
                model=endpoint.model,
                messages=list(prompts[i]) if isinstance(prompts[i], list) else [{"role": "user", "content": prompts[i]}],
                temperature=0.0, max_tokens=max_new_tokens)
        except openai.OpenAIError as err:
            raise EndpointError(f"comparison endpoint {endpoint.name!r} ({endpoint.base_url}) failed on prompt {i}: {err}") from err
        choice = response.choices[0]
        tokens = response.usage.completion_tokens if response.usage else 0
        return Generation((choice.message.content or "").strip(), tokens, choice.finish_reason == "stop")

    with ThreadPoolExecutor(max_workers=max(1, endpoint.concurrency)) as pool:
        return list(pool.map(one, range(len(prompts))))
