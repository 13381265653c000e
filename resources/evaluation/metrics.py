"""Deterministic answer-quality metrics as deepeval metrics: they run offline, with no judge model.

Each is a `deepeval.metrics.BaseMetric` over an `LLMTestCase(input, actual_output, expected_output)`;
scores come from deepeval's own scorer (exact match, ROUGE via the rouge-score package) or, for token F1,
the SQuAD definition over deepeval's text normalisation.
"""

from __future__ import annotations

import re
from collections import Counter

from resources.offline import apply_offline_defaults


def _deepeval():
    apply_offline_defaults()
    from deepeval.metrics import BaseMetric
    from deepeval.scorer import Scorer
    from deepeval.test_case import LLMTestCase

    return BaseMetric, Scorer, LLMTestCase


def token_f1(expected: str, actual: str) -> float:
    """SQuAD token F1 between normalised answers (lower case, no punctuation or articles)."""
    from deepeval.scorer.scorer import normalize_text

    truth, pred = normalize_text(expected).split(), normalize_text(actual).split()
    common = Counter(truth) & Counter(pred)
    overlap = sum(common.values())
    if not truth or not pred or not overlap:
        return float(truth == pred)
    precision, recall = overlap / len(pred), overlap / len(truth)
    return 2 * precision * recall / (precision + recall)


def context_support(answer: str, passages: list[str]) -> float:
    """Share of the answer's content words (stop words removed) found in the retrieved passages: an offline,
    lexical grounding score (1.0 = every content word is backed by the knowledge base; the judge's
    faithfulness metric is the semantic version when a judge is configured)."""
    from deepeval.scorer.scorer import normalize_text
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    words = [w for w in normalize_text(answer).split() if w not in ENGLISH_STOP_WORDS]
    if not words:
        return 0.0
    support = set(normalize_text(" ".join(passages)).split())
    return sum(w in support for w in words) / len(words)


def make_metrics(threshold: float = 0.5) -> list:
    """Fresh metric instances (deepeval metrics hold per-case state)."""
    BaseMetric, Scorer, _ = _deepeval()

    class _Deterministic(BaseMetric):
        name = "base"
        _required_params = []

        def __init__(self, threshold: float):
            self.threshold = threshold
            self.include_reason = False
            self.async_mode = False
            self.strict_mode = False
            self.evaluation_model = None

        def score_of(self, expected: str, actual: str) -> float:
            raise NotImplementedError

        def measure(self, test_case, *args, **kwargs) -> float:
            self.score = float(self.score_of(test_case.expected_output or "", test_case.actual_output or ""))
            self.success = self.score >= self.threshold
            return self.score

        async def a_measure(self, test_case, *args, **kwargs) -> float:
            return self.measure(test_case)

        def is_successful(self) -> bool:
            return bool(self.success)

        @property
        def __name__(self):
            return self.name

    class ExactMatch(_Deterministic):
        name = "exact_match"

        def score_of(self, expected, actual):
            return Scorer.quasi_exact_match_score(expected, actual)

    class TokenF1(_Deterministic):
        name = "token_f1"

        def score_of(self, expected, actual):
            return token_f1(expected, actual)

    class RougeL(_Deterministic):
        name = "rouge_l"

        def score_of(self, expected, actual):
            return Scorer.rouge_score(expected, actual, "rougeL") if actual.strip() else 0.0

    class ContextSupport(_Deterministic):
        name = "context_support"

        def measure(self, test_case, *args, **kwargs) -> float:
            self.score = context_support(test_case.actual_output or "", test_case.retrieval_context or [])
            self.success = self.score >= self.threshold
            return self.score

    return [ExactMatch(threshold), TokenF1(threshold), RougeL(threshold), ContextSupport(threshold)]


CITATION = re.compile(r"\[(\d{1,2})\]")


def fact_recall(answer: str, facts: list[str], question: str = "", reference: str = "") -> float:
    """Share of the golden example's `must_include` facts that the answer states, read unit-aware
    (`resources.knowledge.claims.states`: "14 days" states `14-day`, "8 boards" does not state `$8`, a bare number
    counts only with its noun). How long the answer is does not change it: that is `verbosity`."""
    from resources.knowledge.claims import states

    return sum(states(f, answer, question, reference) for f in facts) / len(facts)


def citation_precision(answer: str, passages: list[str], facts: list[str], question: str = "",
                       reference: str = "") -> float | None:
    """For an answer that cites passages `[n]` and states some of the facts: 1 when every fact it states is held by
    a passage it cites, else 0. None when it cites nothing or states none of the facts (nothing to judge)."""
    from resources.knowledge.claims import states

    cited = [int(n) for n in CITATION.findall(answer) if 1 <= int(n) <= len(passages)]
    stated = [f for f in facts if states(f, answer, question, reference)]
    if not cited or not stated:
        return None
    held = "\n".join(passages[n - 1] for n in dict.fromkeys(cited))
    return float(all(states(f, held, question, reference) for f in stated))


def abstained(answer: str, abstention: str = "") -> float:
    """1 when the answer declines to answer (the model's abstention sentence, or words to that effect)."""
    from resources.knowledge.grounding import is_abstention

    return float(is_abstention(answer, abstention))


def semantic_similarity(expected: list[str], actual: list[str]) -> list[float]:
    """Cosine similarity of answer and reference embeddings (the shipped all-MiniLM-L6-v2, offline)."""
    from resources.retrieval.index import KnowledgeIndexer

    if not expected:
        return []
    vectors = KnowledgeIndexer().embed([*expected, *actual])
    ref, ans = vectors[: len(expected)], vectors[len(expected):]
    return [round(float(max(0.0, (r * a).sum())), 4) if a_text.strip() else 0.0
            for r, a, a_text in zip(ref, ans, actual)]


def score_answers(questions: list[str], expected: list[str], actual: list[str],
                  contexts: list[list[str]] | None = None, facts: list[list[str]] | None = None,
                  unanswerable: list[bool] | None = None, grounded: bool = False, abstention: str = "",
                  stale: list[list[str]] | None = None) -> list[dict[str, float]]:
    """Every metric on every (question, reference, answer) triple.

    Always: exact match, token F1, ROUGE-L, semantic similarity, `abstained`; `context_support` where passages are
    given. On an answerable question: `false_abstention` (it declined), `verbosity` (answer length / reference
    length); with `must_include` facts also `fact_recall`, `fact_correct` (every fact stated: the paired test's
    outcome), `hallucination` (a confident answer stating none of them) and, for a grounded answer,
    `citation_precision`. On an unanswerable question: `abstention_recall` (it declined) and `hallucination` (it
    did not). With `stale` facts (a changed document's old values): `stale_fact` (the answer states one)."""
    _, _, LLMTestCase = _deepeval()
    rows = []
    similarity = semantic_similarity(expected, actual)
    for i, (q, e, a) in enumerate(zip(questions, expected, actual)):
        context = list(contexts[i]) if contexts else []
        case = LLMTestCase(input=q, actual_output=a, expected_output=e, retrieval_context=context or None)
        row = {m.name: m.measure(case) for m in make_metrics() if m.name != "context_support" or context}
        row["semantic_similarity"] = similarity[i]
        declined = abstained(a, abstention)
        row["abstained"] = declined
        if unanswerable and unanswerable[i]:
            row["abstention_recall"] = declined
            row["hallucination"] = 1.0 - declined
            rows.append(row)
            continue
        row["false_abstention"] = declined
        row["verbosity"] = round(len(a) / max(len(e), 1), 4)
        wanted = list(facts[i]) if facts and facts[i] is not None else []
        if wanted:
            recall = fact_recall(a, wanted, q, e)
            row["fact_recall"] = recall
            row["fact_correct"] = float(recall == 1.0)
            row["hallucination"] = float(not declined and recall == 0.0)
            if grounded:
                precision = citation_precision(a, context, wanted, q, e)
                if precision is not None:
                    row["citation_precision"] = precision
        old = list(stale[i]) if stale and stale[i] is not None else []
        if old:
            from resources.knowledge.claims import states

            row["stale_fact"] = float(any(states(f, a, q) for f in old))
        rows.append(row)
    return rows
