"""Deterministic answer-quality metrics as deepeval metrics: they run offline, with no judge model.

Each is a `deepeval.metrics.BaseMetric` over an `LLMTestCase(input, actual_output, expected_output)`;
scores come from deepeval's own scorer (exact match, ROUGE via the rouge-score package) or, for token F1,
the SQuAD definition over deepeval's text normalisation.
"""

from __future__ import annotations

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


def score_answers(questions: list[str], expected: list[str], actual: list[str],
                  contexts: list[list[str]] | None = None) -> list[dict[str, float]]:
    """Every metric on every (question, reference, answer) triple; `context_support` only where retrieved
    passages are given (questions answerable from the knowledge base)."""
    _, _, LLMTestCase = _deepeval()
    rows = []
    for i, (q, e, a) in enumerate(zip(questions, expected, actual)):
        context = list(contexts[i]) if contexts else []
        case = LLMTestCase(input=q, actual_output=a, expected_output=e, retrieval_context=context or None)
        rows.append({m.name: m.measure(case) for m in make_metrics() if m.name != "context_support" or context})
    return rows
