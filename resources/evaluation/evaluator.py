"""`Evaluator`: runs models over the golden set and the safety probes."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pandas as pd
from dagster import ConfigurableResource
from pydantic import Field

from resources.evaluation.endpoints import ChatEndpoint, answer_with_endpoint
from resources.evaluation.generation import Generation, generate, load_for_generation
from resources.evaluation.judge import JUDGE_METRICS, JudgeModel
from resources.evaluation.metrics import score_answers
from resources.evaluation.statistics import RETRIEVAL
from resources.knowledge.grounding import check_answer, confident
from resources.knowledge.prompt import ABSTAIN, grounded_messages
from resources.safety.probes import SafetyProbes, bias_pairs, load_lexicon, load_red_team, pair_similarity, toxic_terms
from resources.safety.canaries import canary_prompts, exposure, load_canaries
from resources.safety.guards import personal_data_in_outputs
from resources.threads import torch_threads

METRICS = ("fact_recall", "fact_correct", "abstention_recall", "false_abstention", "hallucination", "citation_precision",
           "stale_fact", "rouge_l", "token_f1", "exact_match", "semantic_similarity", "context_support", "verbosity")


def _strings(value) -> list[str]:
    """A list column's value as a list (parquet gives arrays; a missing value is None or NaN)."""
    return [str(v) for v in value] if hasattr(value, "__iter__") and not isinstance(value, str) else []


@dataclass(frozen=True)
class ServedAs:
    """What the gateway does around a grounded answer, which the evaluation's `+retrieval` rows do too: answer with
    the abstention sentence, without generating, when the best passage scores below `min_retrieval_score`; then the
    grounding check with its action (`resources.knowledge.grounding`)."""

    grounding: str = "abstain"
    abstention: str = ABSTAIN
    min_retrieval_score: float | None = None


def calibrate_threshold(answerable: list[float], unanswerable: list[float], max_false_abstention: float) -> dict:
    """The retrieval threshold from the dev split's best-passage scores: below it a request is declined without
    generating. It is set so that at most `max_false_abstention` of answerable questions fall under it, estimated
    conservatively from a small dev split: the lower of the empirical quantile and the normal lower bound
    (mean - z * sd of the answerable scores), since the dev split's own minimum says little about the next question.
    None when the dev split lacks either kind of question. Reports what it does on the dev split."""
    import math
    from statistics import NormalDist, mean, stdev

    if not answerable or not unanswerable:
        return {"threshold": None, "reason": f"the dev split has {len(answerable)} answerable and {len(unanswerable)} "
                "unanswerable questions: both are needed to calibrate", "dev_answerable": len(answerable),
                "dev_unanswerable": len(unanswerable)}
    ordered = sorted(answerable)
    allowed = math.floor(max_false_abstention * len(ordered))  # answerable questions that may fall below it
    empirical = ordered[allowed] if allowed < len(ordered) else ordered[-1]
    bound = mean(answerable) - NormalDist().inv_cdf(1 - max_false_abstention) * stdev(answerable) \
        if len(answerable) > 2 and max_false_abstention > 0 else empirical
    threshold = round(float(min(empirical, bound)) - 1e-4, 4)
    return {"threshold": threshold, "dev_answerable": len(answerable), "dev_unanswerable": len(unanswerable),
            "dev_false_abstention": round(sum(s < threshold for s in answerable) / len(answerable), 4),
            "dev_abstention_recall": round(sum(s < threshold for s in unanswerable) / len(unanswerable), 4),
            "max_false_abstention": max_false_abstention}


@dataclass(frozen=True)
class Contender:
    """One row of the comparison: a model in this process (base weights, optional adapter) or one behind an
    OpenAI-compatible endpoint — the model's own vLLM serving it as it will be served, or a comparison API."""

    role: str  # base | candidate | champion | the endpoint's name
    base_path: str | None = None
    adapter_path: str | None = None
    endpoint: ChatEndpoint | None = None
    api_key: str | None = None  # the endpoint's key when the caller holds it (the project's own vLLM)
    with_retrieval: bool = True  # also answers as served, the question in the grounded prompt (`<role>+retrieval`)


class Evaluator(ConfigurableResource):
    """Generation settings shared by every compared model, what they are compared with, and the probes."""

    max_new_tokens: int = Field(default=64, description="Answer length cap; an answer that hits it without EOS is a runaway "
                                "(64: 30% over the longest sample reference answer, 49 tokens).")
    batch_size: int = Field(default=48, description="Prompts generated together (length-sorted, left-padded batches); "
                            "on a 2-core CPU a 64-prompt decode step costs 1.6x a 16-prompt one, 2.4x a single prompt's.")
    threads: int | None = Field(default=None, description="CPU threads of in-process generation (unset: every core; "
                                "`make` sets OMP_NUM_THREADS=1 for everything else).")
    engine: Literal["auto", "vllm", "transformers"] = Field(
        default="auto", description="What generates the answers: `vllm` — the model's own vLLM for every row, the "
        "candidate and champion loaded on it as LoRAs, i.e. exactly as served (the choice on a GPU, where vLLM's "
        "LoRA kernels are fast); `transformers` — transformers + PEFT in this process, the adapter merged into "
        "the weights; `auto` — the base model on the vLLM when one is running or starting for it (a deployment "
        "run starts it early) and the adapters in this process (on CPU vLLM's LoRA kernels took 4x as long as "
        "merged weights on the grounded prompt; greedy fp32 answers are the same either way, tested). The "
        "report records which engine answered each row.")
    grounding_passages: int = Field(
        default=3, description="Passages retrieved from knowledge_index per golden question, for the grounding scores."
    )
    answer_dev: bool = Field(
        default=False, description="Also answer the golden set's dev split (reported apart, as `dev_scores`; never "
        "what the gate decides on). Off: the dev split only calibrates the retrieval threshold, which needs no "
        "answers. Benchmarks turn it on to choose settings on the dev split and report the sealed test split.")
    compare_with: list[ChatEndpoint] = Field(
        default_factory=list,
        description="OpenAI-compatible endpoints (e.g. the hosted API being replaced) scored as extra comparison rows.",
    )

    def answer(self, base_path: str, adapter_path: str | None, prompts: list) -> list[Generation]:
        with torch_threads(self.threads):
            tokenizer, model = load_for_generation(base_path, adapter_path, merge=True)
            return generate(tokenizer, model, prompts, self.max_new_tokens, self.batch_size)

    def answer_as(self, contender: Contender, prompts: list) -> list[Generation]:
        """Greedy answers; each prompt is a user message or a whole conversation (the grounded prompt)."""
        if contender.endpoint is not None:
            return answer_with_endpoint(contender.endpoint, prompts, self.max_new_tokens, api_key=contender.api_key)
        return self.answer(contender.base_path, contender.adapter_path, prompts)

    def compare(self, contenders: list[Contender], golden: pd.DataFrame, contexts: list[list[str]],
                judge: JudgeModel | None = None, log: Callable[[str], None] = print,
                retrieved: list[list[dict]] | None = None,
                served: ServedAs = ServedAs()) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
        """Every contender answers the golden questions; per-example rows and per-model averages.
        `contexts[i]` are the retrieved passages for question i ([] when it has no known source). With `retrieved`
        (the passages the gateway would retrieve for each question), every local contender answers a second time
        as served — the row `<role>+retrieval`: a question whose best passage scores below the threshold is
        declined without generating, the others are asked in the grounded prompt, and every answer passes the
        grounding check (`served`) — what a client of the gateway would receive."""
        prompts, references = list(golden["prompt"]), list(golden["answer"])
        facts = [_strings(f) for f in golden["must_include"]] if "must_include" in golden else None
        stale = [_strings(f) for f in golden["must_not_include"]] if "must_not_include" in golden else None
        unanswerable = [("unanswerable" in _strings(t)) for t in golden["tags"]] if "tags" in golden else None
        rows: list[dict] = []
        aggregates: dict[str, dict[str, float]] = {}
        runs = []
        for contender in contenders:
            runs.append((contender.role, contender, prompts, contexts, None))
            if retrieved is not None and contender.with_retrieval:
                grounded = [grounded_messages([{"role": "user", "content": q}], ps, served.abstention)
                            for q, ps in zip(prompts, retrieved)]
                runs.append((contender.role + RETRIEVAL, contender, grounded, [[p["text"] for p in ps] for ps in retrieved],
                             retrieved))
        for role, contender, inputs, contexts, passages in runs:
            if passages is None:
                answers, checked = self.answer_as(contender, inputs), None
                texts = [a.text for a in answers]
            else:
                answers, checked = self._served(contender, inputs, prompts, passages, served)
                texts = [c.text for c in checked]
            scores = score_answers(prompts, references, texts, contexts, facts, unanswerable,
                                   grounded=passages is not None, abstention=served.abstention, stale=stale)
            judged = judge.score(prompts, references, texts, contexts) if judge and judge.configured else [{}] * len(texts)
            mine = []
            for i, (example_id, prompt, reference, a, context, score, judgement) in enumerate(
                    zip(golden["id"], prompts, references, answers, contexts, scores, judged)):
                row = {"model": role, "id": example_id, "prompt": prompt, "reference": reference, "answer": texts[i],
                       "stopped": a.stopped, "new_tokens": a.new_tokens, "retrieved": list(context), **score, **judgement}
                if checked is not None:
                    c = checked[i]
                    row.update(raw_answer=a.text, grounding=c.verdict, cited=list(c.cited), unsupported=list(c.unsupported))
                mine.append(row)
            rows += mine
            frame = pd.DataFrame(mine)
            means = {m: float(frame[m].mean()) for m in (*METRICS, *JUDGE_METRICS) if m in frame and frame[m].notna().any()}
            aggregates[role] = {k: v for k, v in means.items() if not math.isnan(v)} | {
                "runaway_rate": float(1 - frame["stopped"].mean())}
            if checked is not None:
                aggregates[role]["grounding_failures"] = float(frame["grounding"].isin(["unsupported", "off_topic"]).mean())
            log(f"{role}: " + ", ".join(f"{k}={v:.4f}" for k, v in aggregates[role].items()))
        return pd.DataFrame(rows), aggregates

    def _served(self, contender: Contender, inputs: list, questions: list[str], passages: list[list[dict]],
                served: ServedAs):
        """The answers as the gateway serves them: declined without generating below the retrieval threshold, then
        the grounding check. Returns (the model's answers, the checked answers)."""
        from resources.knowledge.grounding import Checked

        ask = [i for i, ps in enumerate(passages) if confident(ps, served.min_retrieval_score)]
        generated = dict(zip(ask, self.answer_as(contender, [inputs[i] for i in ask]) if ask else []))
        answers, checked = [], []
        for i, question in enumerate(questions):
            if i not in generated:
                answers.append(Generation(served.abstention, 0, True))
                checked.append(Checked(served.abstention, "low_retrieval"))
                continue
            answers.append(generated[i])
            checked.append(check_answer(generated[i].text, passages[i], question, served.grounding, served.abstention))
        return answers, checked

    def safety_suite(self, candidate: Contender, golden_answers: list[str], golden_stopped: list[bool], redactor,
                     probes: SafetyProbes, golden_contexts: list[str] | None = None,
                     golden_ids: list[str] | None = None) -> dict:
        """Canary extraction, red-team and bias probes on the candidate (one batched generation pass, by the same
        engine that answered the golden set), plus PII, toxicity and runaway rates of its golden answers (PII as the
        gateway judges it: a value that stands in the answer's passages or question, `golden_contexts`, is not a
        leak). `offending` names what each count counts — golden question ids (`golden_ids`), red-team probe ids,
        canary sources — never the values."""
        canaries = load_canaries(probes.canaries) if probes.canaries else []
        red_team = load_red_team(probes.red_team) if probes.red_team else []
        pairs = bias_pairs()
        prompts = [p for c in canaries for p in canary_prompts(c)] + [r["prompt"] for r in red_team]
        prompts += [p for _, a, b in pairs for p in (a, b)]
        answers = iter(a.text for a in self.answer_as(candidate, prompts))

        exposures = [exposure(c, [next(answers) for _ in canary_prompts(c)]) for c in canaries]
        lexicon = load_lexicon(probes.toxicity_lexicon)
        probes = []
        for row in red_team:
            answer = next(answers)
            found = redactor.disclosed(answer, row["prompt"]) if row["kind"] == "jailbreak" else {}
            probes.append({"id": row["id"], "kind": row["kind"], "toxic_terms": toxic_terms(answer, lexicon),
                           "disclosed": sorted(found)})
        bias: dict[str, list[float]] = {}
        for attribute, _, _ in pairs:
            bias.setdefault(attribute, []).append(pair_similarity(next(answers), next(answers)))
        judged = personal_data_in_outputs(redactor.engine(), golden_answers, golden_contexts)  # as the gateway
        ids = [str(i) for i in golden_ids] if golden_ids is not None else [f"golden[{i}]" for i in range(len(golden_answers))]
        pii = sum((counts for _, counts in judged), Counter())
        offending = {
            "pii_leaks": [f"{ids[i]} ({', '.join(sorted(counts))})" for i, (_, counts) in enumerate(judged) if counts],
            "canary_leaks": [e["canary"] for e in exposures if e["leaked"]],
            "toxic_outputs": [ids[i] for i, a in enumerate(golden_answers) if toxic_terms(a, lexicon)]
            + [p["id"] for p in probes if p["toxic_terms"]],
            "jailbreak_disclosures": [p["id"] for p in probes if p["disclosed"]],
        }
        return {
            "pii_leaks": sum(bool(counts) for _, counts in judged),
            "offending": offending,
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
