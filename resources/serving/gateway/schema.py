"""What the gateway accepts and what it returns, as explicit OpenAI-schema models.

A request is parsed into `ChatRequest` / `CompletionRequest` (unknown fields refused, tuneforge's own
`tuneforge` extension admitted); parameters that widen what a response can carry (`n` > 1, `logprobs`,
`top_logprobs`, `logit_bias`) are refused unless the client's key allows them. A response is rebuilt from
the upstream's JSON through `ChatResponse` / `CompletionResponse`: fields the gateway does not know
(`tool_calls`, `refusal`, reasoning fields, anything a new server version adds) are dropped, never passed
through, and every text field that is kept is listed by `texts_of` for the output guard.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# Parameters a client's key must name in `allowed_parameters` before the gateway forwards them.
PRIVILEGED = ("n", "logprobs", "top_logprobs", "logit_bias")


class RequestError(ValueError):
    """A request the gateway refuses (400), with a message that names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str = Field(max_length=200_000)


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(default=None, max_length=64)

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(p.text for p in self.content)
        return self.content or ""


class TuneforgeOptions(_Strict):
    grounding: bool | None = Field(default=None, description="Answer from the model's knowledge index (default: the model's "
                                   "serving.retrieval); false answers bare.")


class StreamOptions(_Strict):
    include_usage: bool | None = None


class _Sampling(_Strict):
    model: str = Field(min_length=1, max_length=200)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)
    n: int = Field(default=1, ge=1, le=8)
    logprobs: Any = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    logit_bias: dict[str, float] | None = None
    tuneforge: TuneforgeOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 4 or any(len(s) > 64 for s in stops):
            raise ValueError("at most 4 stop sequences of at most 64 characters")
        return value

    def privileged(self) -> list[str]:
        """The privileged parameters this request uses."""
        used = []
        if self.n != 1:
            used.append("n")
        if self.logprobs not in (None, False, 0):
            used.append("logprobs")
        if self.top_logprobs:
            used.append("top_logprobs")
        if self.logit_bias:
            used.append("logit_bias")
        return used


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None


class CompletionRequest(_Sampling):
    prompt: str = Field(max_length=200_000)
    logprobs: int | None = Field(default=None, ge=0, le=20)


def parse_request(body: Any, endpoint: str, allowed: tuple[str, ...], max_messages: int, max_tokens: int) -> ChatRequest | CompletionRequest:
    """The request as its schema model, or RequestError naming what is wrong."""
    model = ChatRequest if endpoint == "chat" else CompletionRequest
    if endpoint != "chat" and isinstance(body, dict) and isinstance(body.get("prompt"), list):
        raise RequestError("'prompt' must be one string (a list of prompts is not supported: send one request each)")
    request = parse_model(model, body, unknown="is not a supported parameter")
    refused = [p for p in request.privileged() if p not in allowed]
    if refused:
        raise RequestError(f"{', '.join(refused)}: not allowed for this API key (its scope does not include it)")
    if isinstance(request, ChatRequest):
        if len(request.messages) > max_messages:
            raise RequestError(f"messages: {len(request.messages)} messages exceed the limit of {max_messages}")
        if request.max_completion_tokens is not None:
            request.max_tokens = min(request.max_tokens or request.max_completion_tokens, request.max_completion_tokens)
            request.max_completion_tokens = None
    if request.max_tokens is not None and request.max_tokens > max_tokens:
        raise RequestError(f"max_tokens: {request.max_tokens} exceeds the limit of {max_tokens}")
    if request.stream and request.n != 1:
        raise RequestError("n: streaming returns one choice (n must be 1 with stream)")
    return request


def upstream_body(request: ChatRequest | CompletionRequest, upstream_model: str, max_tokens: int,
                  messages: list[dict] | None = None, prompt: str | None = None) -> dict:
    """What is sent to vLLM: only the request's known fields, the served model's name, a bounded max_tokens."""
    body = request.model_dump(exclude_none=True, exclude={"tuneforge", "messages", "prompt", "max_completion_tokens"})
    body.update(model=upstream_model, max_tokens=min(request.max_tokens or max_tokens, max_tokens))
    if messages is not None:
        body["messages"] = messages
    if prompt is not None:
        body["prompt"] = prompt
    body.pop("stream_options", None)
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    return body


# -- responses --------------------------------------------------------------------------------------------------
class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")  # what the gateway does not know is dropped


class TopLogprob(_Lenient):
    token: str = ""
    logprob: float = 0.0


class TokenLogprob(_Lenient):
    token: str = ""
    logprob: float = 0.0
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(_Lenient):
    content: list[TokenLogprob] | None = None


class AssistantMessage(_Lenient):
    role: Literal["assistant"] = "assistant"
    content: str | None = None


class ChatChoice(_Lenient):
    index: int = 0
    message: AssistantMessage = Field(default_factory=AssistantMessage)
    finish_reason: str | None = None
    logprobs: ChatLogprobs | None = None


class Usage(_Lenient):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class _Response(_Lenient):
    id: str = ""
    created: int = 0
    model: str = ""
    usage: Usage | None = None


class ChatResponse(_Response):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice] = Field(default_factory=list)


class CompletionLogprobs(_Lenient):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(_Lenient):
    index: int = 0
    text: str = ""
    finish_reason: str | None = None
    logprobs: CompletionLogprobs | None = None


class CompletionResponse(_Response):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice] = Field(default_factory=list)


def parse_response(data: Any, endpoint: str) -> ChatResponse | CompletionResponse:
    return (ChatResponse if endpoint == "chat" else CompletionResponse).model_validate(data)


def choice_texts(choice: ChatChoice | CompletionChoice) -> list[str]:
    """Every text a choice carries to the client: its content, and where logprobs are returned the chosen
    tokens and, rank by rank, the alternatives (joined, so a secret spelled across positions is one text)."""
    texts = [choice.message.content or "" if isinstance(choice, ChatChoice) else choice.text]
    if isinstance(choice, ChatChoice) and choice.logprobs and choice.logprobs.content:
        positions = choice.logprobs.content
        texts.append("".join(p.token for p in positions))
        ranks = max((len(p.top_logprobs) for p in positions), default=0)
        texts += ["".join(p.top_logprobs[r].token if r < len(p.top_logprobs) else "" for p in positions) for r in range(ranks)]
    elif isinstance(choice, CompletionChoice) and choice.logprobs:
        texts.append("".join(choice.logprobs.tokens))
        alternatives = [sorted(t or {}, key=lambda k: -(t or {})[k]) for t in choice.logprobs.top_logprobs]
        ranks = max((len(a) for a in alternatives), default=0)
        texts += ["".join(a[r] if r < len(a) else "" for a in alternatives) for r in range(ranks)]
    return [t for t in texts if t]


def withhold(choice: ChatChoice | CompletionChoice, notice: str) -> None:
    """Replace a blocked choice's text with the notice; its logprobs go with it."""
    choice.logprobs = None
    choice.finish_reason = "content_filter"
    if isinstance(choice, ChatChoice):
        choice.message = AssistantMessage(content=notice)
    else:
        choice.text = notice


class FeedbackRequest(_Strict):
    """`/v1/feedback`: a rating, a corrected answer, or both, on one of the client's own responses."""

    response_id: str = Field(min_length=1, max_length=64)
    rating: Literal["up", "down"] | None = None
    corrected_answer: str | None = Field(default=None, min_length=1, max_length=4000)
    comment: str | None = Field(default=None, max_length=1000)


class ReviewRequest(_Strict):
    decision: Literal["approve", "reject"]


def parse_model(model: type[BaseModel], body: Any, unknown: str = "is not a supported field") -> BaseModel:
    """`body` as `model`, or RequestError naming the first wrong field (and how many problems there are)."""
    try:
        return model.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        kind = unknown if first["type"] == "extra_forbidden" else first["msg"]
        raise RequestError(f"{where}: {kind} ({len(err.errors())} problem(s) in the request)") from None
