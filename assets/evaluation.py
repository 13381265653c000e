"""Evaluation: golden-set scores and safety probes for the candidate adapter, and the promotion gate."""

import json

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    Backoff,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
    asset_check,
)

from assets.datasets import golden_dataset
from assets.retrieval import knowledge_index
from assets.training import base_model, lora_adapter
from resources.evaluation.evaluator import METRICS, Contender, Evaluator
from resources.evaluation.judge import JUDGE_METRICS, JudgeModel
from resources.evaluation.gate import PromotionPolicy, decide
from resources.redaction.redactor import PiiRedactor
from resources.retrieval.index import KnowledgeIndexer
from resources.storage import ArtifactNotFoundError, ArtifactStore, write_json, write_table

CHAMPION = "champion"  # the store pointer the deployment stage moves to the adapter it puts into service


def _paths(store: ArtifactStore) -> tuple[str, str, str]:
    version = store.latest("lora_adapter")
    base = store.read_json("base_model", store.latest("base_model"), "model.json")["path"]
    return version, base, str(store.local("lora_adapter", version))


def champion_version(store: ArtifactStore) -> str | None:
    """The adapter version now deployed, if any."""
    try:
        return store.latest(CHAMPION)
    except ArtifactNotFoundError:
        return None


def _contexts(store: ArtifactStore, indexer: KnowledgeIndexer, golden: pd.DataFrame, k: int) -> list[list[str]]:
    """Retrieved passages for golden questions answerable from the knowledge base; [] for the others."""
    index_dir = store.local("knowledge_index", store.latest("knowledge_index"))
    answerable = golden["source_doc_id"].notna().tolist()
    hits = iter(indexer.passages(index_dir, [p for p, a in zip(golden["prompt"], answerable) if a], k))
    return [[h["text"] for h in next(hits)] if a else [] for a in answerable]


@asset(
    deps=[lora_adapter, base_model, golden_dataset, knowledge_index],
    group_name="evaluation",
    kinds={"deepeval"},
    code_version="2",
    # judge and comparison endpoints are remote: retry transient failures with backoff
    retry_policy=RetryPolicy(max_retries=2, delay=10, backoff=Backoff.EXPONENTIAL),
)
def eval_report(context: AssetExecutionContext, evaluator: Evaluator, judge: JudgeModel, indexer: KnowledgeIndexer,
                store: ArtifactStore) -> MaterializeResult:
    """The golden questions answered by the base model, the candidate adapter, the champion (the adapter
    now deployed, if any) and any configured comparison endpoint, side by side; scored per example with
    deepeval metrics — exact match, token F1, ROUGE-L, grounding in the passages retrieved from the
    knowledge index, and the LLM-as-judge metrics when a judge is configured."""
    version, base_path, adapter_path = _paths(store)
    golden = store.read_table("golden_dataset", store.latest("golden_dataset"), "examples.parquet")
    contenders = [Contender("base", base_path), Contender("candidate", base_path, adapter_path)]
    champion = champion_version(store)
    if champion and champion != version:
        contenders.append(Contender("champion", base_path, str(store.local("lora_adapter", champion))))
    contenders += [Contender(e.name, endpoint=e) for e in evaluator.compare_with]
    contexts = _contexts(store, indexer, golden, evaluator.grounding_passages)
    table, aggregates = evaluator.compare(contenders, golden, contexts, judge, log=context.log.info)

    with store.writing("eval_report", version) as out:
        write_table(out, "examples.parquet", table)
        write_json(out, "scores.json", {"adapter_version": version, "champion_version": champion, "scores": aggregates,
                                        "judge_metrics": judge.status()})
    store.set_latest("eval_report", version)

    columns = [m for m in (*METRICS, *JUDGE_METRICS) if any(m in s for s in aggregates.values())]
    comparison = "| model | " + " | ".join(columns) + " | runaway |\n|---|" + "---|" * (len(columns) + 1) + "\n" + "\n".join(
        f"| {role} | " + " | ".join(f"{s[m]:.4f}" if m in s else "—" for m in columns) + f" | {s['runaway_rate']:.0%} |"
        for role, s in aggregates.items()
    )
    metadata = {f"{role}_{m}": MetadataValue.float(v) for role, s in aggregates.items() for m, v in s.items()}
    return MaterializeResult(
        metadata={
            **metadata,
            "comparison": MetadataValue.md(comparison),
            "golden_examples": MetadataValue.int(len(golden)),
            "grounded_examples": MetadataValue.int(sum(bool(c) for c in contexts)),
            "champion": MetadataValue.text(champion or "none deployed yet"),
            "judge_metrics": MetadataValue.text(judge.status()),
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
    with store.writing("promotion_gate", version) as out:  # the deployment stage re-reads the decision
        write_json(out, "decision.json", {"adapter_version": version, "promote": promote, "reasons": reasons,
                                          "policy": json.loads(policy.model_dump_json())})
    return AssetCheckResult(
        passed=promote,
        metadata={"decision": MetadataValue.text("promote" if promote else "block"),
                  "reasons": MetadataValue.md("\n".join(f"- {r}" for r in reasons)),
                  "adapter_version": MetadataValue.text(version),
                  "policy": MetadataValue.json(json.loads(policy.model_dump_json()))},
    )
