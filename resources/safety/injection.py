"""Prompt-injection rules shared by the gateway (prompts and retrieved passages) and the knowledge stage (passages
of documents that carry instructions aimed at the model are flagged when they are cut)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import numpy as np

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


ATTACKS_FILE = Path(__file__).with_name("attacks.jsonl")  # known attacks, by family (the reference corpus)
BENIGN_FILE = Path(__file__).with_name("benign_prompts.jsonl")  # ordinary requests, look-alikes included


def reference_corpus() -> tuple[list[str], list[str]]:
    """The shipped attack and benign reference prompts the detector learns from."""
    def texts(path: Path) -> list[str]:
        return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    return texts(ATTACKS_FILE), texts(BENIGN_FILE)


class InjectionDetector:
    """A detector that generalises beyond the patterns, over sentence embeddings (the shipped MiniLM, offline, CPU)
    of the normalised text and the reference corpus of known attacks and ordinary requests (the design LLM Guard
    uses). Two views must agree that a text is an attack: a logistic-regression probe (scikit-learn) says so with
    probability >= `threshold`, and its `neighbours` nearest known attacks are closer on average than its nearest
    ordinary requests by at least `margin` (a topic alone - passwords, security, "ignore" - is not an attack).
    A pattern match is an attack either way. `embed` maps texts to L2-normalised vectors
    (`KnowledgeIndexer.embed`), so this module needs no model of its own. The defaults were chosen by 5-fold
    cross-validation on the reference corpus and checked on the labelled set in the tests (README, "Prompt
    injection")."""

    def __init__(self, embed: Callable[[list[str]], np.ndarray], threshold: float = 0.5, strength: float = 4.0,
                 neighbours: int = 3, margin: float = 0.0):
        from sklearn.linear_model import LogisticRegression

        attacks, benign = reference_corpus()
        self.embed, self.threshold, self.neighbours, self.margin = embed, threshold, neighbours, margin
        self.vectors = embed([normalize(t) for t in attacks + benign])
        self.labels = np.array([1] * len(attacks) + [0] * len(benign))
        self.probe = LogisticRegression(C=strength, class_weight="balanced", max_iter=3000).fit(self.vectors, self.labels)

    def scores(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The probe's attack probability and the nearest-neighbour margin of each text."""
        if not texts:
            return np.zeros(0), np.zeros(0)
        vectors = self.embed([normalize(t) for t in texts])
        similarity = vectors @ self.vectors.T

        def nearest(label: int) -> np.ndarray:
            own = np.where(self.labels == label, similarity, -np.inf)
            return np.sort(own, axis=1)[:, ::-1][:, : self.neighbours].mean(axis=1)

        return self.probe.predict_proba(vectors)[:, 1], nearest(1) - nearest(0)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        return self.scores(texts)[0]

    def flags(self, texts: list[str]) -> list[bool]:
        probability, margin = self.scores(texts)
        return [bool((p >= self.threshold and m >= self.margin) or injection_findings(t))
                for t, p, m in zip(texts, probability, margin)]
