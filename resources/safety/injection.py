"""Prompt-injection rules shared by the gateway (prompts and retrieved passages) and the knowledge stage (passages
of documents that carry instructions aimed at the model are flagged when they are cut)."""

from __future__ import annotations

import re

from resources.safety.normalize import normalize

# Phrases typical of prompt-injection / jailbreak attempts (lower-cased, matched as regexes).
INJECTION_PATTERNS = (
    r"ignore (all |any )?(the )?(previous|prior|above) (instructions|rules|prompts?)",
    r"disregard (all |any )?(the )?(previous|prior|above|system)",
    r"(reveal|print|show|repeat) (me )?(your|the) (system prompt|hidden instructions|instructions)",
    r"you are now (dan|in developer mode|unrestricted|jailbroken)",
    r"pretend (that )?you (have no|are not bound by|don't have) (rules|restrictions|guidelines)",
    r"(you are|you're|act as if you are|enter|switch to) (now )?(in )?developer mode",
    r"developer mode (is )?(enabled|on)\W.{0,80}\b(no|without|ignore) (rules|restrictions|filters|guidelines)",
    r"\bjailbreak\b",
)


def injection_findings(text: str) -> list[str]:
    """The injection patterns `text` matches (none: it reads as data, not as instructions to the model), read
    after `normalize` (zero-width characters, look-alike letters, full-width forms and spacing undone)."""
    lowered = normalize(text)
    return [p for p in INJECTION_PATTERNS if re.search(p, lowered)]
