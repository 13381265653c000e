"""Monitoring: serving traffic per day, drift against the training data, and the champion re-scored."""

import datetime as dt

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from assets.datasets import golden_dataset, instruction_dataset
from assets.deployment import deployed_endpoint
from assets.evaluation import champion_version
from assets.partitions import serving_days
from resources.evaluation.evaluator import METRICS, Contender, Evaluator
from resources.evaluation.gate import PromotionPolicy
from resources.monitoring.drift import MonitoringPolicy, feedback_flags, prompt_drift
from resources.monitoring.traffic import RequestLogSource, summarise
from resources.retrieval.index import KnowledgeIndexer
from resources.storage import ArtifactStore, write_json, write_table


@asset(partitions_def=serving_days, deps=[deployed_endpoint], group_name="monitoring", kinds={"sqlalchemy", "parquet"},
       code_version="1")
def serving_traffic(context: AssetExecutionContext, request_log: RequestLogSource, store: ArtifactStore) -> MaterializeResult:
    """One day of the gateway's request log: volume, errors, latency percentiles, tokens, guard triggers and
    feedback, overall and per adapter version; the day's (redacted) prompts for the drift report."""
    day = dt.date.fromisoformat(context.partition_key)
    reqs, fb = request_log.day(day)
    summary = summarise(reqs, fb)
    with store.writing("serving_traffic", context.partition_key) as out:
        write_table(out, "requests.parquet", reqs.astype({"input_guard": "string", "output_guard": "string"}))
        write_table(out, "feedback.parquet", fb)
        write_json(out, "summary.json", summary)
    overall = summary["overall"]
    table = "| adapter | requests | 5xx | p50 ms | p95 ms | up | down |\n|---|---|---|---|---|---|---|\n" + "\n".join(
        f"| {v} | {s['requests']} | {s['errors_5xx']} | {s['latency_p50_ms'] or 0:.0f} | {s['latency_p95_ms'] or 0:.0f} "
        f"| {s['feedback_up']} | {s['feedback_down']} |" for v, s in summary["per_adapter"].items())
    return MaterializeResult(metadata={
        "requests": MetadataValue.int(overall["requests"]),
        "errors_5xx": MetadataValue.int(overall["errors_5xx"]),
        "refused_4xx": MetadataValue.int(overall["refused_4xx"]),
        "latency_p50_ms": MetadataValue.float(overall["latency_p50_ms"] or 0.0),
        "latency_p95_ms": MetadataValue.float(overall["latency_p95_ms"] or 0.0),
        "completion_tokens": MetadataValue.int(overall["completion_tokens"]),
        "feedback_up": MetadataValue.int(overall["feedback_up"]),
        "feedback_down": MetadataValue.int(overall["feedback_down"]),
        "guard_triggers": MetadataValue.json(overall["guard_triggers"]),
        "per_adapter": MetadataValue.md(table),
    })


def _window(store: ArtifactStore, days: int) -> list[str]:
    partitions = store.partitions("serving_traffic")
    if not partitions:
        return []
    newest = dt.date.fromisoformat(partitions[-1])
    return [p for p in partitions if (newest - dt.date.fromisoformat(p)).days < days]


@asset(deps=[serving_traffic, instruction_dataset], group_name="monitoring", kinds={"scipy"}, code_version="1")
def drift_report(context: AssetExecutionContext, monitoring: MonitoringPolicy, indexer: KnowledgeIndexer,
                 store: ArtifactStore) -> MaterializeResult:
    """Production prompts of the last `window_days` against the training prompts — embedding, length,
    vocabulary and topic drift — and quality over time: feedback per day and the champion's golden-set
    scores; flags when a threshold is crossed, which the retraining sensor acts on."""
    days = _window(store, monitoring.window_days)
    reqs = [store.read_table("serving_traffic", d, "requests.parquet") for d in days]
    production = pd.concat(reqs)["prompt_redacted"].dropna().tolist() if reqs else []
    train = store.read_table("instruction_dataset", store.latest("instruction_dataset"), "examples.parquet")
    train = train[train["split"] == "train"]
    report = prompt_drift(list(train["prompt"]), list(train["batch"]), production, indexer.embed, monitoring)
    daily = [{"day": d, **{k: store.read_json("serving_traffic", d, "summary.json")["overall"][k]
                           for k in ("requests", "feedback_up", "feedback_down", "errors_5xx")}} for d in days]
    up, down = sum(d["feedback_up"] for d in daily), sum(d["feedback_down"] for d in daily)
    report["feedback_flags"] = feedback_flags(up, down, monitoring)
    report["feedback_up_rate"] = up / (up + down) if up + down else None
    report["daily"] = daily
    champion_history = [
        {"at": dt.datetime.fromtimestamp(r.timestamp, dt.timezone.utc).isoformat(timespec="minutes"),
         **{k: v.value for k, v in r.event_log_entry.asset_materialization.metadata.items() if k.startswith("champion_")}}
        for r in context.instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey("champion_scores")), limit=20).records]
    report["champion_history"] = champion_history
    report["retrain_recommended"] = bool(report["flags"] or report["feedback_flags"])
    version = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    with store.writing("drift_report", version) as out:
        write_json(out, "drift.json", report)
    store.set_latest("drift_report", version)

    trend = "| day | requests | up | down | 5xx |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {d['day']} | {d['requests']} | {d['feedback_up']} | {d['feedback_down']} | {d['errors_5xx']} |" for d in daily)
    floats = {k: MetadataValue.float(float(report[k])) for k in ("embedding_drift", "out_of_domain_share", "length_psi",
                                                                  "length_ks", "vocabulary_psi", "oov_rate", "topic_psi") if k in report}
    return MaterializeResult(metadata={
        **floats,
        "production_prompts": MetadataValue.int(len(production)),
        "days": MetadataValue.int(len(days)),
        "feedback_up_rate": MetadataValue.float(report["feedback_up_rate"] if report["feedback_up_rate"] is not None else -1.0),
        "flags": MetadataValue.md("\n".join(f"- {f}" for f in report["flags"] + report["feedback_flags"]) or "none"),
        "retrain_recommended": MetadataValue.bool(report["retrain_recommended"]),
        "daily_trend": MetadataValue.md(trend),
        "topic_share": MetadataValue.json({"production": report.get("topic_share_production"),
                                           "reference": report.get("topic_share_reference")}),
        "judged": MetadataValue.bool(report["judged"]),
    })


def _latest_drift(store: ArtifactStore) -> dict:
    return store.read_json("drift_report", store.latest("drift_report"), "drift.json")


@asset_check(asset=drift_report, description="Production prompts stay close to the training distribution (MonitoringPolicy).")
def prompts_within_training_distribution(store: ArtifactStore) -> AssetCheckResult:
    report = _latest_drift(store)
    return AssetCheckResult(passed=not report["flags"], severity=AssetCheckSeverity.WARN,
                            metadata={"flags": MetadataValue.md("\n".join(f"- {f}" for f in report["flags"]) or "none"),
                                      "judged": MetadataValue.bool(report["judged"])})


@asset_check(asset=drift_report, description="Users' thumbs-up share holds above MonitoringPolicy.min_feedback_up_rate.")
def feedback_holds_up(store: ArtifactStore) -> AssetCheckResult:
    report = _latest_drift(store)
    return AssetCheckResult(passed=not report["feedback_flags"], severity=AssetCheckSeverity.WARN,
                            metadata={"flags": MetadataValue.md("\n".join(f"- {f}" for f in report["feedback_flags"]) or "none"),
                                      "up_rate": MetadataValue.float(report["feedback_up_rate"] if report["feedback_up_rate"] is not None else -1.0)})


@asset(deps=[deployed_endpoint, golden_dataset], group_name="monitoring", kinds={"deepeval"}, code_version="1")
def champion_scores(context: AssetExecutionContext, evaluator: Evaluator, store: ArtifactStore) -> MaterializeResult:
    """The deployed adapter re-scored on the current golden set (weekly schedule): quality drift shows as
    these floats falling across materializations."""
    champion = champion_version(store)
    if champion is None:
        return MaterializeResult(metadata={"champion": MetadataValue.text("none deployed")})
    base = store.read_json("base_model", store.latest("base_model"), "model.json")["path"]
    golden = store.read_table("golden_dataset", store.latest("golden_dataset"), "examples.parquet")
    contender = Contender("champion", base, str(store.local("lora_adapter", champion)))
    _, aggregates = evaluator.compare([contender], golden, [[] for _ in range(len(golden))], log=context.log.info)
    scores = aggregates["champion"]
    at_deploy = store.read_json("eval_report", champion, "scores.json")["scores"]["candidate"] \
        if store.exists("eval_report", champion, "scores.json") else {}
    with store.writing("champion_scores", champion) as out:
        write_json(out, "scores.json", {"champion": champion, "scores": scores, "at_deployment": at_deploy})
    store.set_latest("champion_scores", champion)
    return MaterializeResult(metadata={
        "champion": MetadataValue.text(champion),
        **{f"champion_{k}": MetadataValue.float(v) for k, v in scores.items() if k in METRICS or k == "runaway_rate"},
        **{f"at_deployment_{k}": MetadataValue.float(v) for k, v in at_deploy.items() if k in METRICS},
    })


@asset_check(asset=champion_scores, description="The champion's main metric has not fallen below its score at deployment "
             "by more than PromotionPolicy.max_regression_vs_champion.")
def champion_quality_holds(policy: PromotionPolicy, store: ArtifactStore) -> AssetCheckResult:
    champion = champion_version(store)
    if champion is None or not store.exists("champion_scores", champion, "scores.json"):
        return AssetCheckResult(passed=True, severity=AssetCheckSeverity.WARN, metadata={"note": "no champion"})
    data = store.read_json("champion_scores", champion, "scores.json")
    now, then = data["scores"].get(policy.main_metric), data["at_deployment"].get(policy.main_metric)
    passed = then is None or now >= then - policy.max_regression_vs_champion
    return AssetCheckResult(passed=passed, severity=AssetCheckSeverity.WARN,
                            metadata={"now": MetadataValue.float(now), "at_deployment": MetadataValue.float(then or now)})
