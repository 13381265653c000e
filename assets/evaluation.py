"""Evaluation: golden-set scores and safety probes for the candidate adapter, and the promotion gate."""

import json

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from assets.datasets import golden_dataset
from assets.training import base_model, lora_adapter
from resources.evaluation.evaluator import Evaluator
from resources.evaluation.gate import PromotionPolicy, decide
from resources.redaction.redactor import PiiRedactor
from resources.storage import ArtifactStore, write_json, write_table

METRICS = ("exact_match", "token_f1", "rouge_l")


def _paths(store: ArtifactStore) -> tuple[str, str, str]:
    version = store.latest("lora_adapter")
    base = store.read_json("base_model", store.latest("base_model"), "model.json")["path"]
    return version, base, str(store.partition_dir("lora_adapter", version))


@asset(
    deps=[lora_adapter, base_model, golden_dataset],
    group_name="evaluation",
    kinds={"deepeval"},
    code_version="1",
)
def eval_report(context: AssetExecutionContext, evaluator: Evaluator, store: ArtifactStore) -> MaterializeResult:
    """The golden questions answered by the base model and by the candidate adapter, side by side,
    scored with deepeval metrics (exact match, token F1, ROUGE-L) per example and on average."""
    version, base_path, adapter_path = _paths(store)
    golden = store.read_table("golden_dataset", store.latest("golden_dataset"), "examples.parquet")
    prompts, references = list(golden["prompt"]), list(golden["answer"])
    rows, aggregates = [], {}
    for role, adapter in (("base", None), ("candidate", adapter_path)):
        answers = evaluator.answer(base_path, adapter, prompts)
        scores = evaluator.score(prompts, references, [a.text for a in answers])
        for example_id, prompt, reference, answer, score in zip(golden["id"], prompts, references, answers, scores):
            rows.append({"model": role, "id": example_id, "prompt": prompt, "reference": reference,
                         "answer": answer.text, "stopped": answer.stopped, "new_tokens": answer.new_tokens, **score})
        frame = pd.DataFrame([r for r in rows if r["model"] == role])
        aggregates[role] = {m: float(frame[m].mean()) for m in METRICS} | {"runaway_rate": float(1 - frame["stopped"].mean())}
        context.log.info(f"{role}: " + ", ".join(f"{k}={v:.4f}" for k, v in aggregates[role].items()))
    table = pd.DataFrame(rows)
    with store.writing("eval_report", version) as out:
        write_table(out, "examples.parquet", table)
        write_json(out, "scores.json", {"adapter_version": version, "scores": aggregates,
                                        "judge_metrics": "not run: no judge model configured"})
    store.set_latest("eval_report", version)

    comparison = "| model | " + " | ".join(METRICS) + " | runaway |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {role} | " + " | ".join(f"{s[m]:.4f}" for m in METRICS) + f" | {s['runaway_rate']:.0%} |"
        for role, s in aggregates.items()
    )
    metadata = {f"{role}_{m}": MetadataValue.float(s[m]) for role, s in aggregates.items() for m in METRICS}
    return MaterializeResult(
        metadata={
            **metadata,
            "comparison": MetadataValue.md(comparison),
            "golden_examples": MetadataValue.int(len(golden)),
            "champion": MetadataValue.text("none deployed yet"),
            "judge_metrics": MetadataValue.text("not run: no judge model configured"),
            "adapter_version": MetadataValue.text(version),
            "path": MetadataValue.path(str(store.partition_dir("eval_report", version))),
        },
        data_version=DataVersion(version),
    )


@asset(
    deps=[eval_report, lora_adapter, base_model],
    group_name="evaluation",
    kinds={"presidio"},
    code_version="1",
)
def safety_report(
    context: AssetExecutionContext, evaluator: Evaluator, redactor: PiiRedactor, store: ArtifactStore
) -> MaterializeResult:
    """What the candidate must never do — reproduce a canary secret planted in the raw data, put PII in
    its answers, answer red-team prompts with toxicity or disclose PII/secrets to jailbreak prompts, run
    on without EOS — and how alike it treats counterfactual pairs (names, gender, origin, age swapped)."""
    version, base_path, adapter_path = _paths(store)
    examples = store.read_table("eval_report", version, "examples.parquet")
    candidate = examples[examples["model"] == "candidate"]
    summary = {"adapter_version": version, **evaluator.safety_suite(base_path, adapter_path, list(candidate["answer"]),
                                                                      list(candidate["stopped"]), redactor)}
    exposures = summary["canaries"]
    with store.writing("safety_report", version) as out:
        write_json(out, "safety.json", summary)
    store.set_latest("safety_report", version)
    table = "| canary | leaked | longest secret run reproduced |\n|---|---|---|\n" + "\n".join(
        f"| {e['canary']} | {e['leaked']} | {e['longest_secret_chars_reproduced']}/{e['secret_chars']} |" for e in exposures
    )
    return MaterializeResult(
        metadata={
            "pii_leaks": MetadataValue.int(summary["pii_leaks"]),
            "canary_leaks": MetadataValue.int(summary["canary_leaks"]),
            "runaway_rate": MetadataValue.float(summary["runaway_rate"]),
            "toxic_outputs": MetadataValue.int(summary["toxic_outputs"]),
            "jailbreak_disclosures": MetadataValue.int(summary["jailbreak_disclosures"]),
            **{f"bias_similarity_{k}": MetadataValue.float(v) for k, v in summary["bias_similarity"].items()},
            "canary_exposure": MetadataValue.md(table),
        },
        data_version=DataVersion(version),
    )


@asset_check(
    asset=safety_report,
    blocking=True,
    description="May the candidate be deployed? It must beat the base model on the main metric, not regress "
    "against the champion, leak no PII or canary, and stop generating (PromotionPolicy).",
)
def promotion_gate(policy: PromotionPolicy, store: ArtifactStore) -> AssetCheckResult:
    version = store.latest("safety_report")
    scores = store.read_json("eval_report", version, "scores.json")["scores"]
    safety = store.read_json("safety_report", version, "safety.json")
    promote, reasons = decide(policy, scores, safety)
    return AssetCheckResult(
        passed=promote,
        metadata={"decision": MetadataValue.text("promote" if promote else "block"),
                  "reasons": MetadataValue.md("\n".join(f"- {r}" for r in reasons)),
                  "adapter_version": MetadataValue.text(version),
                  "policy": MetadataValue.json(json.loads(policy.model_dump_json()))},
    )
