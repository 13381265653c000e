"""The one grounded prompt: what a model receives when it answers from retrieved passages.

Training (`raft` examples), evaluation and the gateway all build it here, so the served model sees in
production exactly the prompt it was trained and evaluated on. Passages are numbered; an answer cites
the passage it used as `[n]`; the response's `sources` list the passages in the same order.
"""

from __future__ import annotations

import re
from typing import Any

ABSTAIN = "The passages do not answer this question."
# the model's abstention sentence (knowledge.abstention) is named in the instruction: the sentence it is trained to
# say, the gateway says for it, and the evaluation counts
INSTRUCTION = ("Answer using only the numbered passages below, and give the number of the passage you used in "
               "brackets after your answer. If the passages do not answer the question, reply: {abstention}")


def passage_heading(passage: dict[str, Any]) -> str:
    title, section = (passage.get("title") or "").strip(), (passage.get("section") or "").strip()
    if section and section != title:
        return f"{title} > {section}" if title and not section.startswith(title) else section
    return title


_LEADING_HEADINGS = re.compile(r"\A(?:[ \t]{0,3}#{1,6}[ \t][^\n]*(?:\n+|\Z))+")


def passage_text(passage: dict[str, Any]) -> str:
    """A passage's text as the prompt shows it: without the Markdown heading lines it starts with, which the
    heading path above it already names (a model copying the start of a passage copied the heading)."""
    text = passage["text"].strip()
    return _LEADING_HEADINGS.sub("", text).strip() or text


def system_prompt(passages: list[dict[str, Any]], abstention: str = ABSTAIN) -> str:
    blocks = [f"[{n}] {passage_heading(p)}\n{passage_text(p)}" for n, p in enumerate(passages, start=1)]
    return INSTRUCTION.format(abstention=abstention) + "\n\n" + "\n\n".join(blocks)


def grounded_messages(messages: list[dict[str, Any]], passages: list[dict[str, Any]],
                      abstention: str = ABSTAIN) -> list[dict[str, Any]]:
    """The conversation with the passages in a system message before it (after any system message of its own);
    `abstention`: the model's sentence for passages that do not answer (knowledge.abstention)."""
    lead = [m for m in messages[:1] if m.get("role") == "system"]
    return lead + [{"role": "system", "content": system_prompt(passages, abstention)}] + messages[len(lead):]


def cited(answer: str, n: int) -> str:
    return f"{answer.strip()} [{n}]"


def source_of(passage: dict[str, Any]) -> dict[str, Any]:
    """What a response tells the client about one passage (never the raw file path)."""
    return {"id": passage.get("chunk_id"), "document": passage.get("external_id") or passage.get("doc_id"),
            "title": passage.get("title"), "section": passage.get("section"),
            "source_sha256": passage.get("source_sha256"), "score": passage.get("score")}
