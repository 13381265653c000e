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

    return [ExactMatch(threshold), TokenF1(threshold), RougeL(threshold)]


def score_answers(questions: list[str], expected: list[str], actual: list[str]) -> list[dict[str, float]]:
    """Every metric on every (question, reference, answer) triple."""
    _, _, LLMTestCase = _deepeval()
    rows = []
    for q, e, a in zip(questions, expected, actual):
        case = LLMTestCase(input=q, actual_output=a, expected_output=e)
        rows.append({metric.name: metric.measure(case) for metric in make_metrics()})
    return rows
