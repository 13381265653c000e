"""The gateway's guard steps: plain functions between the request schema (`schema.py`) and the routes (`app.py`).

Each step takes what the one before it produced and the route's `Guards` (resources/safety: the rules the
promotion gate's safety report applies too) and returns a value; none touches HTTP, the event loop, the request
log or the metrics, so each is tested on its own and the routes stay thin (parse -> steps -> upstream -> steps ->
respond). The steps are synchronous: Presidio and the injection detector are CPU work, which the routes run in
a worker thread.

    guard_input      every text the client wrote, in every role -> refused, or the texts to forward (redacted)
    ground           the retrieved passages -> the grounded prompt, passages carrying instructions left out;
                     below the route's retrieval threshold, the abstention without asking the model
    check_grounding  each choice of a grounded answer -> served as is, or (a claim no cited passage holds, a
                     redaction placeholder) the route's action: the abstention, a quoted sentence, or flagged
    guard_choices    every text field of every choice of a complete response -> withheld or redacted
    StreamGuard      a streamed answer -> what may be released, once the whole output guard passed it
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from resources.knowledge.grounding import Checked, check_answer, confident
from resources.knowledge.prompt import ABSTAIN, grounded_messages, passage_text, source_of
from resources.safety.guards import Guards, Verdict, injection_findings
from resources.serving.gateway.schema import ChatRequest, CompletionRequest, choice_texts, withhold

BLOCKED = "[withheld by the tuneforge output guard: {reason}]"


def _add(total: dict[str, int], findings: dict[str, int]) -> dict[str, int]:
    for kind, n in findings.items():
        total[kind] = total.get(kind, 0) + n
    return total


@dataclass
class GuardedInput:
    """What the input guard made of a request: refused (with why), or the texts to forward."""

    findings: dict[str, int]  # kind -> count over every text (never the values)
    prompt_redacted: str  # what the request log keeps of the prompt: always redacted
    refused: str | None = None  # the client-facing reason, when refused
    messages: list[dict[str, Any]] | None = None  # chat: the messages as forwarded (PII redacted per the policy)
    prompt: str | None = None  # completions: the prompt as forwarded
    question: str = ""  # what retrieval searches with and the canary check reads across: the last user turn


def guard_input(guards: Guards, request: ChatRequest | CompletionRequest, endpoint: str,
                allow_client_system: bool | None = None) -> GuardedInput:
    """Every text the client wrote, in every role (system and assistant turns too), through the input guard:
    injection patterns and detector, then personal data redacted, refused or allowed by the route's policy."""
    if endpoint == "chat" and allow_client_system is False and any(m.role == "system" for m in request.messages):
        return GuardedInput({}, "", refused="system messages are not accepted for this model (its serving policy)")
    texts = [m.text() for m in request.messages] if endpoint == "chat" else [request.prompt]
    verdicts = [guards.check_input(t) for t in texts]
    findings: dict[str, int] = {}
    for verdict in verdicts:
        _add(findings, verdict.findings)
    refused = next((v for v in verdicts if not v.allowed), None)
    clean = [v.text for v in verdicts]
    if refused or guards.pii_in_prompt == "allow":  # the log never keeps personal data, whatever was forwarded
        logged = "\n".join(text for text, _ in guards.redact(clean))
    else:
        logged = "\n".join(clean)
    if refused:
        return GuardedInput(findings, logged, refused=f"prompt refused by the input guard: {refused.reason}")
    if endpoint != "chat":
        return GuardedInput(findings, logged, prompt=clean[0], question=clean[0])
    messages = [{"role": m.role, "content": t, **({"name": m.name} if m.name else {})}
                for m, t in zip(request.messages, clean)]
    question = next((t for m, t in zip(reversed(request.messages), reversed(clean)) if m.role == "user"), "")
    return GuardedInput(findings, logged, messages=messages, question=question)


@dataclass
class Grounding:
    messages: list[dict[str, Any]]  # the grounded prompt (or the messages unchanged when no passage is usable)
    sources: list[dict[str, Any]] = field(default_factory=list)  # the passages in the prompt, in order ([1], [2], ...)
    flagged: int = 0  # passages left out because they carry instructions aimed at the model
    confident: bool = True  # the best passage reaches the route's retrieval threshold (else: abstain, do not generate)


def ground(messages: list[dict[str, Any]], found: list[dict[str, Any]], threshold: float | None = None,
           abstention: str = ABSTAIN) -> Grounding:
    """The grounded prompt (the one `resources.knowledge.prompt` builds for training and evaluation too) from the
    retrieved passages. Retrieved passages are untrusted input: one carrying instructions is left out. Below the
    route's retrieval threshold (`resources.knowledge.grounding.confident`) the request is not `confident`."""
    sources = [p for p in found if not injection_findings(p["text"])]
    return Grounding(grounded_messages(messages, sources, abstention) if sources else messages, sources, len(found) - len(sources),
                     confident(found, threshold))


def grounding_context(question: str, sources: list[dict[str, Any]]) -> str:
    """What a grounded answer was given (the question and its passages): a value that stands there is no leak."""
    return "\n".join([question, *(passage_text(p) for p in sources)])


def describe_checked(checked: Checked, sources: list[dict[str, Any]]) -> dict[str, Any]:
    """What a response tells the client of the grounding check on one answer: the verdict, what was done, counts —
    never the unsupported claims themselves (the text they stood in may have been withheld) — and the passages the
    served text cites, each with its supporting sentence."""
    return {"verdict": checked.verdict, "action": checked.action, "unsupported_claims": len(checked.unsupported),
            "invalid_citations": checked.invalid_citations, "citations": checked.citations(sources, source_of)}


def check_grounding(response, sources: list[dict[str, Any]], question: str, action: str, abstention: str) -> list[Checked]:
    """The grounding check on each choice of a grounded chat answer (`resources.knowledge.grounding`, what the
    evaluation's served rows apply too): a choice whose text the check replaced (abstention or quote) loses its
    logprobs, which were the model's tokens, not the served text's. `response` is changed in place."""
    found = []
    for choice in response.choices:
        checked = check_answer(choice.message.content or "", sources, question, action, abstention)
        if checked.text != (choice.message.content or ""):
            choice.message.content = checked.text
            choice.logprobs = None
        found.append(checked)
    return found


def guard_choices(guards: Guards, response, endpoint: str, question: str, context: str = "") -> tuple[list[str], dict[str, int]]:
    """The output guard over every text field of every choice (content, refusal, reasoning, logprob tokens and
    their alternatives, tool calls): a choice with any text the guard refuses is withheld whole (every field
    replaced by the notice); one that passes is kept as it is. Returns the answers as the log keeps them
    and the findings. `context`: the question and passages the answer was given (their values are no leak).
    `response` is a parsed upstream response (schema.parse_response); it is changed in place."""
    outputs, findings = [], {}
    for choice in response.choices:
        verdict: Verdict | None = None
        for text in choice_texts(choice):
            verdict = guards.check_output(text, True, question, context)
            if not verdict.allowed:
                break
        _add(findings, verdict.findings if verdict else {})
        if verdict is not None and not verdict.allowed:
            withhold(choice, BLOCKED.format(reason=verdict.reason))
            outputs.append((choice.message.content if endpoint == "chat" else choice.text) or "")
        else:  # every text passed the whole output guard, personal data included: nothing left to redact
            outputs.append((choice.message.content if endpoint == "chat" else choice.text) or "")
    return outputs, findings


class StreamGuard:
    """What of a streamed answer may be released: nothing the whole output guard (canaries, toxicity and
    personal data) has not passed, and always `holdback` characters (at least the longest canary) kept back, so
    a value still arriving cannot be released half-seen. Canaries and toxicity are checked on every piece
    (`add`); the whole guard runs on a window — from `holdback` before what was released to the last word
    boundary — once it has grown by twice the holdback (`window`, `check`, `release`), and on the rest at the end.
    Windows start and end between words: a cut-off word reads to NER as a name."""

    def __init__(self, guards: Guards, question: str, holdback: int, context: str = ""):
        self.guards, self.question, self.context = guards, question, context
        self.holdback = max(holdback, guards.longest_canary + 1)
        self.full, self.sent, self.checked = "", 0, 0

    def add(self, piece: str) -> Verdict | None:
        """Appends a piece; the blocking verdict if canaries or toxicity already show."""
        self.full += piece
        quick = self.guards.check_output(self.full, full=False, prompt=self.question)
        return None if quick.allowed else quick

    def _start(self) -> int:
        at = max(0, self.sent - self.holdback)
        return max(self.full.rfind(" ", 0, at), self.full.rfind("\n", 0, at)) + 1 if at else 0

    def window(self, final: bool = False) -> tuple[int, int] | None:
        """The span the whole guard must pass before more is released; None while not enough has arrived."""
        if final:
            return (self._start(), len(self.full)) if self.checked < len(self.full) else None
        end = max(self.full.rfind(" "), self.full.rfind("\n"))
        return (self._start(), end) if end - self.sent >= 2 * self.holdback else None

    def check(self, span: tuple[int, int]) -> Verdict:
        """The whole output guard on a window (CPU work: run it off the event loop)."""
        return self.guards.check_output(self.full[span[0] : span[1]], True, self.question, self.context)

    def release(self, span: tuple[int, int]) -> str:
        """After `check` passed `span`: the text that may go to the client now (all but the holdback)."""
        self.checked = span[1]
        until = max(self.sent, self.checked - self.holdback)
        text, self.sent = self.full[self.sent : until], until
        return text

    def rest(self) -> str:
        """At the end, once `check` passed `window(final=True)`: everything still held back."""
        self.checked = len(self.full)
        text, self.sent = self.full[self.sent :], len(self.full)
        return text
