"""A scripted judge: deterministic answers to deepeval's judge prompts (test double for a judge LLM).

A judge capable of G-Eval does not run on this machine (a 135M model gives useless scores), so the tests
put this rule-based stand-in behind a real OpenAI-compatible HTTP server (`openai_server.py`). It reads
which JSON key deepeval asks for and answers by simple, documented rules:

- steps: one fixed evaluation step;
- statements / truths / claims: the sentences of the text under "Text:";
- verdicts: "yes" when at least half of a statement's words occur in the reference text of the prompt;
- score (G-Eval): 10 x word overlap (F1) between the Actual Output and the Expected Output;
- reason: a fixed sentence.
"""

from __future__ import annotations

import ast
import json
import re

WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def _f1(a: str, b: str) -> float:
    wa, wb = _words(a), _words(b)
    common = sum(min(wa.count(w), wb.count(w)) for w in set(wa))
    if not common:
        return 0.0
    p, r = common / len(wa), common / len(wb)
    return 2 * p * r / (p + r)


def _section(prompt: str, label: str, stops: tuple[str, ...]) -> str:
    start = prompt.rfind(label)
    if start < 0:
        return ""
    rest = prompt[start + len(label):]
    end = min([i for i in (rest.find(s) for s in stops) if i >= 0] or [len(rest)])
    return rest[:end].strip()


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def requested_key(prompt: str) -> str:
    keys = re.findall(r'with the ["\'](\w+)["\'] key', prompt)
    if not keys and '`"score"`' in prompt:
        keys = ["score"]
    if not keys:
        raise ValueError("no JSON key requested in the judge prompt")
    return keys[-1]


def answer(prompt: str) -> str:
    key = requested_key(prompt)
    if key == "steps":
        return json.dumps({"steps": ["Check that the actual output states the same facts as the expected output."]})
    if key in {"statements", "truths", "claims"}:
        label = "AI Output:" if key == "claims" else "Text:"
        return json.dumps({key: _sentences(_section(prompt, label, ("JSON:",)))})
    if key == "score":
        actual = _section(prompt, "Actual Output:", ("Expected Output:", "Parameters:"))
        expected = _section(prompt, "Expected Output:", ("Actual Output:", "Parameters:"))
        return json.dumps({"score": round(10 * _f1(actual, expected)), "reason": "word overlap with the expected output"})
    if key == "verdicts":
        listed = _section(prompt, "Statements:", ("JSON:", "\n\n")) or _section(prompt, "Claims:", ("JSON:", "\n\n"))
        items = ast.literal_eval(listed) if listed else []
        reference = _words(_section(prompt, "Input:", ("\n\n",)) + " " + _section(prompt, "Retrieval Contexts:", ("Claims:",)))
        return json.dumps({"verdicts": [
            {"verdict": "yes" if sum(w in reference for w in _words(s)) * 2 >= len(_words(s)) else "no",
             "reason": "word overlap rule"} for s in items]})
    if key == "reason":
        return json.dumps({"reason": "scripted judge"})
    raise ValueError(f"the scripted judge has no rule for the JSON key {key!r}")
