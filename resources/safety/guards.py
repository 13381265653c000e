"""Input and output guards: PII, prompt injection, canary leakage, toxicity.

The gateway's request pipeline calls them; they live here, below both the gateway and the evaluation, beside
the rules they apply and the safety report shares (canary matching, the toxicity lexicon, the injection
patterns and detector), over the engines the rest of tuneforge uses: the Presidio redaction engine (the same
policy as the data stages), the canary list and the toxicity lexicon of the safety report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from resources.safety.canaries import canary_leaked
from resources.safety.injection import INJECTION_PATTERNS, injection_findings  # noqa: F401 (re-exported)
from resources.safety.probes import toxic_terms

def personal_data_in_outputs(engine, texts: list[str], contexts: list[str] | None = None) -> list[tuple[str, Counter]]:
    """The one judgement of personal data in what a model said, for the served endpoint (`Guards.check_output`,
    which withholds a response with any) and the safety report (`pii_leaks`, which the promotion gate caps) alike:
    each text redacted by the redaction engine (the data stages' policy, every pass), with the entity counts of
    what was replaced. A text is a leak exactly when its count is non-zero, in both places.

    `contexts[i]`: what the model was given for text i — the (redacted) passages retrieved for it and the client's
    question. A value that stands there too is not a leak: the answer repeats what its passages or the client
    said (a support address, a date the NER reads as a name), and only what the model added is judged."""
    redacted = engine.redact(texts)
    if not contexts:
        return [(r.text, Counter(r.counts)) for r in redacted]
    out = []
    for text, result, context in zip(texts, redacted, contexts):
        if not result.counts or not context:
            out.append((result.text, Counter(result.counts)))
            continue
        seen = _squash(context)
        kept = [f for f in engine.analyze([text])[0] if _squash(text[f.start:f.end]) not in seen]
        out.append((result.text if kept else text, Counter(f.entity_type for f in kept)))
    return out


def _squash(text: str) -> str:
    return " ".join(text.casefold().split())


@dataclass
class Verdict:
    """What a guard decided: allowed or not, the (possibly redacted) text, and why."""

    allowed: bool
    text: str
    findings: dict[str, int] = field(default_factory=dict)  # kind -> count (never the values)
    reason: str | None = None


class Guards:
    """The guard pipeline with its policy (`pii_in_prompt`: redact | refuse | allow)."""

    def __init__(self, engine, canaries: list[str], lexicon: list[str], pii_in_prompt: str = "redact",
                 block_injection: bool = True, detector=None):
        """`detector`: an `InjectionDetector` (embeddings) that reads every client text after the patterns; None
        leaves the patterns alone."""
        if pii_in_prompt not in {"redact", "refuse", "allow"}:
            raise ValueError(f"pii_in_prompt must be redact, refuse or allow, not {pii_in_prompt!r}")
        self.engine, self.canaries, self.lexicon = engine, [c for c in canaries if c], lexicon
        self.pii_in_prompt, self.block_injection, self.detector = pii_in_prompt, block_injection, detector

    def redact(self, texts: list[str]) -> list[tuple[str, dict[str, int]]]:
        return [(r.text, dict(r.counts)) for r in self.engine.redact(texts)]

    def check_input(self, text: str) -> Verdict:
        injections = injection_findings(text)
        if injections and self.block_injection:
            return Verdict(False, text, {"prompt_injection": len(injections)}, "prompt injection / jailbreak pattern")
        if self.detector is not None and self.block_injection and self.detector.flags([text])[0]:
            return Verdict(False, text, {"prompt_injection": 1}, "prompt injection / jailbreak (detector)")
        [(redacted, counts)] = self.redact([text])
        if counts and self.pii_in_prompt == "refuse":
            return Verdict(False, redacted, counts, "personal data in the prompt (policy: refuse)")
        if counts and self.pii_in_prompt == "redact":
            return Verdict(True, redacted, counts, "personal data redacted")
        return Verdict(True, text, counts)

    @property
    def longest_canary(self) -> int:
        return max((len(c) for c in self.canaries), default=0)

    def check_output(self, text: str, full: bool = True, prompt: str = "", context: str = "") -> Verdict:
        """Canaries (in any disguise, and across the end of `prompt`: a key the client started and the model
        completes), toxicity and — with `full` — personal data (Presidio) that does not stand in `context` (the
        passages the answer was given and the question: see `personal_data_in_outputs`)."""
        leaked = [c for c in self.canaries if canary_leaked(c, text, prefix=prompt)]
        if leaked:
            return Verdict(False, text, {"canary": len(leaked)}, "canary secret in the response")
        toxic = toxic_terms(text, self.lexicon)
        if toxic:
            return Verdict(False, text, {"toxicity": len(toxic)}, "toxic language in the response")
        if full:
            [(redacted, counts)] = personal_data_in_outputs(self.engine, [text], [context] if context else None)
            if counts:
                return Verdict(False, redacted, dict(counts), "personal data in the response")
        return Verdict(True, text)

