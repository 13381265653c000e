"""`Evaluator`: runs models over the golden set and the safety probes."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from resources.evaluation.generation import Generation, generate, load_for_generation
from resources.evaluation.metrics import score_answers


class Evaluator(ConfigurableResource):
    """Generation settings shared by every compared model, and where the canaries are listed."""

    max_new_tokens: int = Field(default=96, description="Answer length cap; an answer that hits it without EOS is a runaway.")
    batch_size: int = Field(default=8, description="Prompts generated together (left-padded batches).")
    canaries_path: str | None = Field(
        default="data/sample/canaries.json",
        description="JSON list of canary secrets planted in the raw data; the tuned model must reproduce none.",
    )
    red_team_path: str | None = Field(
        default="data/safety/red_team.jsonl", description="Red-team prompts (toxicity and jailbreak / prompt injection)."
    )
    toxicity_lexicon_path: str = Field(
        default="data/safety/toxicity_lexicon.txt", description="Terms that mark an answer as toxic (offline scorer)."
    )
    judge_base_url: str | None = Field(
        default=None, description="OpenAI-compatible endpoint of a judge model for LLM-as-judge metrics (not built yet)."
    )

    def answer(self, base_path: str, adapter_path: str | None, prompts: list[str]) -> list[Generation]:
        tokenizer, model = load_for_generation(base_path, adapter_path)
        return generate(tokenizer, model, prompts, self.max_new_tokens, self.batch_size)

    def score(self, prompts: list[str], references: list[str], answers: list[str]) -> list[dict[str, float]]:
        return score_answers(prompts, references, answers)
