"""`JudgeModel`: LLM-as-judge metrics (deepeval) through any OpenAI-compatible endpoint.

G-Eval correctness (against the reference answer), answer relevancy (to the question) and faithfulness
(to the passages retrieved from the knowledge index) are deepeval's own metrics; the judge is deepeval's
`LocalModel`, an OpenAI-compatible client, pointed at `base_url` (a vLLM-served judge, a hosted API).
With no `base_url` configured the judge metrics are reported as not run: nothing is faked, and nothing
reaches the network.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from resources.offline import apply_offline_defaults
from resources.preflight import CheckedResource, check_http_url, problem

JUDGE_METRICS = ("judge_correctness", "judge_answer_relevancy", "judge_faithfulness")
NOT_CONFIGURED = "not run: no judge model configured (set JudgeModel.base_url and model)"


class JudgeUnavailableError(RuntimeError):
    """The configured judge endpoint cannot be reached or does not serve the configured model."""


class JudgeModel(CheckedResource):
    """The judge LLM behind deepeval's LLM-as-judge metrics."""

    base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible API root of the judge, e.g. http://judge:8000/v1. Unset: judge metrics not run.",
    )
    model: str | None = Field(default=None, description="Model name the judge endpoint serves.")
    api_key: str | None = Field(
        default=None, description="Bearer key for the judge endpoint; pass EnvVar('TUNEFORGE_JUDGE_API_KEY'), never a literal."
    )
    threshold: float = Field(default=0.5, description="Score at or above which deepeval marks a case as passed.")
    timeout_s: float = Field(default=120.0, description="Per-request timeout against the judge endpoint.")

    @field_validator("base_url", mode="before")
    @classmethod
    def _url(cls, value):
        return check_http_url("JudgeModel", "base_url", value)

    def problems(self) -> list[str]:
        if bool(self.base_url) != bool(self.model):
            return [problem(self, "model" if self.base_url else "base_url", self.model if self.base_url else self.base_url,
                            "set both base_url and model to run the judge metrics, or neither")]
        if not self.configured:
            return []
        try:
            self.check_reachable()
        except JudgeUnavailableError as err:
            return [str(err)]
        return []

    @property
    def configured(self) -> bool:
        return bool(self.base_url and self.model)

    def status(self) -> str:
        return f"run: {self.model} at {self.base_url}" if self.configured else NOT_CONFIGURED

    def check_reachable(self) -> None:
        """Fail fast, naming the endpoint, instead of deep inside deepeval's retries."""
        import httpx

        url = self.base_url.rstrip("/") + "/models"
        try:
            response = httpx.get(url, headers={"Authorization": f"Bearer {self.api_key or 'none'}"}, timeout=10)
            response.raise_for_status()
        except httpx.HTTPError as err:
            raise JudgeUnavailableError(f"JudgeModel.base_url {self.base_url!r} is not reachable ({err})") from err
        served = {m.get("id") for m in response.json().get("data", [])}
        if served and self.model not in served:
            raise JudgeUnavailableError(f"JudgeModel.model {self.model!r} is not served at {self.base_url} (serves {sorted(served)})")

    def _metrics(self):
        apply_offline_defaults()
        from deepeval.metrics import AnswerRelevancyMetric, FaithfulnessMetric, GEval
        from deepeval.models import LocalModel
        from deepeval.test_case import SingleTurnParams

        judge = LocalModel(model=self.model, base_url=self.base_url, api_key=self.api_key or "none",
                           timeout=self.timeout_s)
        common = {"model": judge, "threshold": self.threshold, "async_mode": False}
        return {
            "judge_correctness": GEval(
                name="correctness",
                criteria="Does the actual output state the same facts as the expected output, without contradicting it?",
                evaluation_params=[SingleTurnParams.ACTUAL_OUTPUT, SingleTurnParams.EXPECTED_OUTPUT], **common),
            "judge_answer_relevancy": AnswerRelevancyMetric(include_reason=False, **common),
            "judge_faithfulness": FaithfulnessMetric(include_reason=False, **common),
        }

    def score(self, questions: list[str], references: list[str], answers: list[str],
              contexts: list[list[str]]) -> list[dict[str, float | None]]:
        """Judge metrics per example; faithfulness only where retrieved passages exist (else None)."""
        if not self.configured:
            raise RuntimeError(NOT_CONFIGURED)
        from deepeval.test_case import LLMTestCase

        self.check_reachable()
        rows = []
        for question, reference, answer, context in zip(questions, references, answers, contexts):
            case = LLMTestCase(input=question, actual_output=answer or " ", expected_output=reference,
                               retrieval_context=list(context) or None)
            row: dict[str, float | None] = {}
            for name, metric in self._metrics().items():
                row[name] = None if name == "judge_faithfulness" and not context else float(metric.measure(case))
            rows.append(row)
        return rows
