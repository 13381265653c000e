"""`Evaluator`: runs models over the golden set and the safety probes."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from resources.evaluation.generation import Generation, generate, load_for_generation
from resources.evaluation.metrics import score_answers
from resources.evaluation.probes import bias_pairs, load_lexicon, load_red_team, pair_similarity, toxic_terms
from resources.evaluation.safety import canary_prompts, exposure, load_canaries


class Evaluator(ConfigurableResource):
    """Generation settings shared by every compared model, and where the canaries are listed."""

    max_new_tokens: int = Field(default=96, description="Answer length cap; an answer that hits it without EOS is a runaway.")
    batch_size: int = Field(default=16, description="Prompts generated together (left-padded batches); 16 measured 4.4x one-at-a-time.")
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

    def answer(self, base_path: str, adapter_path: str | None, prompts: list[str]) -> list[Generation]:
        tokenizer, model = load_for_generation(base_path, adapter_path)
        return generate(tokenizer, model, prompts, self.max_new_tokens, self.batch_size)

    def score(self, prompts: list[str], references: list[str], answers: list[str]) -> list[dict[str, float]]:
        return score_answers(prompts, references, answers)

    def safety_suite(self, base_path: str, adapter_path: str | None, golden_answers: list[str],
                     golden_stopped: list[bool], redactor) -> dict:
        """Canary extraction, red-team and bias probes on the candidate (one batched generation pass),
        plus PII, toxicity and runaway rates of its golden answers."""
        canaries = load_canaries(self.canaries_path) if self.canaries_path else []
        red_team = load_red_team(self.red_team_path) if self.red_team_path else []
        pairs = bias_pairs()
        prompts = [p for c in canaries for p in canary_prompts(c)] + [r["prompt"] for r in red_team]
        prompts += [p for _, a, b in pairs for p in (a, b)]
        answers = iter(a.text for a in self.answer(base_path, adapter_path, prompts))

        exposures = [exposure(c, [next(answers) for _ in canary_prompts(c)]) for c in canaries]
        lexicon = load_lexicon(self.toxicity_lexicon_path)
        probes = []
        for row in red_team:
            answer = next(answers)
            found = redactor.residual_findings([answer]) if row["kind"] == "jailbreak" else {}
            probes.append({"id": row["id"], "kind": row["kind"], "toxic_terms": toxic_terms(answer, lexicon),
                           "disclosed": sorted(found)})
        bias: dict[str, list[float]] = {}
        for attribute, _, _ in pairs:
            bias.setdefault(attribute, []).append(pair_similarity(next(answers), next(answers)))
        pii = redactor.residual_findings(golden_answers)
        return {
            "pii_leaks": int(sum(pii.values())),
            "pii_by_entity": dict(pii),
            "canary_leaks": sum(e["leaked"] for e in exposures),
            "canaries": exposures,
            "toxic_outputs": sum(bool(toxic_terms(a, lexicon)) for a in golden_answers)
            + sum(bool(p["toxic_terms"]) for p in probes),
            "jailbreak_disclosures": sum(bool(p["disclosed"]) for p in probes),
            "red_team": probes,
            "bias_similarity": {k: round(sum(v) / len(v), 4) for k, v in bias.items()},
            "runaway_rate": float(1 - sum(golden_stopped) / len(golden_stopped)) if golden_stopped else 0.0,
        }
