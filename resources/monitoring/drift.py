"""Drift between production prompts and the training distribution, and the thresholds that flag it.

Plain functions over numpy/scipy and the embedding model of the knowledge index:
- embedding drift: 1 - cosine(mean production embedding, mean training embedding), and the share of
  production prompts whose nearest training prompt is less similar than `ood_similarity` (out of domain);
- length drift: population stability index (PSI) over training-length deciles, and the two-sample
  Kolmogorov-Smirnov statistic (scipy);
- vocabulary drift: out-of-vocabulary rate against the training prompts' words, and PSI over the
  training's most frequent words;
- topic share: each prompt's topic is the source batch of its nearest training example; PSI between the
  two topic distributions.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

WORD = re.compile(r"[a-z0-9']+")
EPS = 1e-4


class MonitoringPolicy(BaseModel):
    """Thresholds of the drift and feedback checks, and the window they look at (a model's `monitoring:` block)."""

    model_config = ConfigDict(extra="forbid")

    window_days: int = Field(default=7, description="Days of serving traffic compared with the training data.")
    min_requests: int = Field(default=20, description="Fewer production prompts than this: drift is not judged.")
    max_embedding_drift: float = Field(default=0.15, description="1 - cosine of the mean embeddings above this is drift.")
    max_out_of_domain_share: float = Field(default=0.3, description="Share of prompts far from every training prompt.")
    ood_similarity: float = Field(default=0.35, description="Nearest-training-prompt cosine below this is out of domain.")
    max_length_psi: float = Field(default=0.25, description="PSI of prompt lengths above this is drift (0.25: significant).")
    max_vocabulary_psi: float = Field(default=0.25, description="PSI over the training's frequent words above this is drift.")
    max_oov_rate: float = Field(default=0.35, description="Share of production words unseen in training above this is drift.")
    max_topic_psi: float = Field(default=0.25, description="PSI of topic shares above this is drift.")
    min_feedback_up_rate: float = Field(default=0.6, description="Thumbs-up share below this (with enough votes) flags falling quality.")
    min_feedback_votes: int = Field(default=10, description="Votes needed before the feedback rate is judged.")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index between two histograms (counts or shares)."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    e, a = e / max(e.sum(), EPS), a / max(a.sum(), EPS)
    e, a = np.clip(e, EPS, None), np.clip(a, EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def length_drift(reference: list[str], production: list[str]) -> dict:
    from scipy.stats import ks_2samp

    ref = np.array([len(words(t)) for t in reference])
    prod = np.array([len(words(t)) for t in production])
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, 11)))
    edges[0], edges[-1] = -np.inf, np.inf
    return {"length_psi": psi(np.histogram(ref, edges)[0], np.histogram(prod, edges)[0]),
            "length_ks": float(ks_2samp(ref, prod).statistic),
            "mean_words_reference": float(ref.mean()), "mean_words_production": float(prod.mean())}


def vocabulary_drift(reference: list[str], production: list[str], top: int = 200) -> dict:
    ref = Counter(w for t in reference for w in words(t))
    prod = Counter(w for t in production for w in words(t))
    vocab = [w for w, _ in ref.most_common(top)]
    other_ref = sum(ref.values()) - sum(ref[w] for w in vocab)
    other_prod = sum(prod.values()) - sum(prod[w] for w in vocab)
    total = max(1, sum(prod.values()))
    return {"vocabulary_psi": psi(np.array([ref[w] for w in vocab] + [other_ref]), np.array([prod[w] for w in vocab] + [other_prod])),
            "oov_rate": sum(n for w, n in prod.items() if w not in ref) / total}


def embedding_drift(ref_vectors: np.ndarray, prod_vectors: np.ndarray, ood_similarity: float) -> tuple[dict, np.ndarray]:
    a, b = ref_vectors.mean(axis=0), prod_vectors.mean(axis=0)
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    similarity = prod_vectors @ ref_vectors.T
    nearest = similarity.argmax(axis=1)
    return ({"embedding_drift": 1 - cosine,
             "out_of_domain_share": float((similarity.max(axis=1) < ood_similarity).mean())}, nearest)


def topic_drift(ref_topics: list[str], nearest: np.ndarray) -> dict:
    topics = sorted(set(ref_topics))
    ref = Counter(ref_topics)
    prod = Counter(ref_topics[i] for i in nearest)
    return {"topic_psi": psi(np.array([ref[t] for t in topics]), np.array([prod[t] for t in topics])),
            "topic_share_production": {t: round(prod[t] / max(1, len(nearest)), 4) for t in topics},
            "topic_share_reference": {t: round(ref[t] / max(1, len(ref_topics)), 4) for t in topics}}


def prompt_drift(reference: list[str], ref_topics: list[str], production: list[str],
                 embed: Callable[[list[str]], np.ndarray], policy: MonitoringPolicy) -> dict:
    """Every drift measure, and the flags the policy raises (empty: no drift)."""
    if len(production) < policy.min_requests:
        return {"production_prompts": len(production), "judged": False, "flags": [],
                "note": f"fewer than {policy.min_requests} production prompts: drift not judged"}
    report: dict = {"production_prompts": len(production), "reference_prompts": len(reference), "judged": True}
    emb, nearest = embedding_drift(embed(reference), embed(production), policy.ood_similarity)
    report |= emb | length_drift(reference, production) | vocabulary_drift(reference, production) | topic_drift(ref_topics, nearest)
    limits = {"embedding_drift": policy.max_embedding_drift, "out_of_domain_share": policy.max_out_of_domain_share,
              "length_psi": policy.max_length_psi, "vocabulary_psi": policy.max_vocabulary_psi,
              "oov_rate": policy.max_oov_rate, "topic_psi": policy.max_topic_psi}
    report["flags"] = [f"{k} {report[k]:.3f} > {limit}" for k, limit in limits.items() if report[k] > limit]
    report["limits"] = limits
    return report


def feedback_flags(up: int, down: int, policy: MonitoringPolicy) -> list[str]:
    votes = up + down
    if votes < policy.min_feedback_votes:
        return []
    rate = up / votes
    return [f"feedback up-rate {rate:.2f} < {policy.min_feedback_up_rate} over {votes} votes"] if rate < policy.min_feedback_up_rate else []
