"""Monitoring: a model's serving traffic per day, drift against its training data, and its champion re-scored."""

import datetime as dt

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    MetadataValue,
    Output,
    TimeWindowPartitionMapping,
    asset,
    asset_check,
)

from assets.evaluation import adapter_of
from assets.metadata import asset_args, bullets, emit, key, picture
from assets.partitions import serving_days
from resources.artifacts import OPTIONAL, Artifact, Batches, config_of, version_of
from resources.evaluation.evaluator import METRICS, Contender, Evaluator
from resources.monitoring.drift import feedback_flags, prompt_drift
from resources.monitoring.traffic import summarise
from resources.plots import over_time
from resources.records import fingerprint
from resources.requestlog import RequestLogSource
from resources.retrieval.index import KnowledgeIndexer
from resources.spec import ModelSpec
from resources.storage import ArtifactStore, write_json, write_table

DRIFT_MEASURES = ("embedding_drift", "out_of_domain_share", "length_psi", "length_ks", "vocabulary_psi", "oov_rate", "topic_psi")


def build(spec: ModelSpec) -> list:
    stage = asset_args(spec, "monitoring")
    window = spec.monitoring.window_days

    @asset(key=key(spec, "serving_traffic"), partitions_def=serving_days, kinds={"sqlalchemy", "parquet"}, code_version="2",
           **stage)
    def serving_traffic(context: AssetExecutionContext, request_log: RequestLogSource, store: ArtifactStore) -> Output[Artifact]:
        """One day of the gateway's request log for this model: volume, errors, latency percentiles, tokens, guard
        triggers, the grounding check's verdicts (answers grounded, recited, replaced as unsupported or off topic, declined for a
        low retrieval score) and feedback, overall and per adapter version; the day's (redacted) prompts for the
        drift report."""
        reqs, fb = request_log.day(dt.date.fromisoformat(context.partition_key), spec.name)
        summary = summarise(reqs, fb)
        version = version_of([fingerprint(reqs, ["id", "status", "prompt_redacted"]), fingerprint(fb, ["response_id", "rating"])])
        artifact = Artifact.create(store, context.asset_key, version, context.partition_key)
        with artifact.writing() as out:
            write_table(out, "requests.parquet", reqs.astype({"input_guard": "string", "output_guard": "string",
                                                              "grounding": "string"}))
            write_table(out, "feedback.parquet", fb)
            write_json(out, "summary.json", summary)
        overall = summary["overall"]
        table = "| adapter | requests | 5xx | p50 ms | p95 ms | up | down |\n|---|---|---|---|---|---|---|\n" + "\n".join(
            f"| {v} | {s['requests']} | {s['errors_5xx']} | {s['latency_p50_ms'] or 0:.0f} | {s['latency_p95_ms'] or 0:.0f} "
            f"| {s['feedback_up']} | {s['feedback_down']} |" for v, s in summary["per_adapter"].items())
        return emit(artifact, {
            "requests": MetadataValue.int(overall["requests"]), "errors_5xx": MetadataValue.int(overall["errors_5xx"]),
            "refused_4xx": MetadataValue.int(overall["refused_4xx"]),
            "latency_p50_ms": MetadataValue.float(overall["latency_p50_ms"] or 0.0),
            "latency_p95_ms": MetadataValue.float(overall["latency_p95_ms"] or 0.0),
            "completion_tokens": MetadataValue.int(overall["completion_tokens"]),
            "feedback_up": MetadataValue.int(overall["feedback_up"]), "feedback_down": MetadataValue.int(overall["feedback_down"]),
            "guard_triggers": MetadataValue.json(overall["guard_triggers"]), "per_adapter": MetadataValue.md(table),
            "grounding": MetadataValue.json(overall["grounding"]),
        })

    @asset(key=key(spec, "drift_report"), partitions_def=serving_days, kinds={"scipy"}, code_version="2",
           ins={"serving_traffic": AssetIn(key=key(spec, "serving_traffic"),
                                           partition_mapping=TimeWindowPartitionMapping(start_offset=-(window - 1), end_offset=0)),
                "instruction_dataset": AssetIn(key=key(spec, "instruction_dataset")),
                "champion_scores": AssetIn(key=key(spec, "champion_scores"), metadata={OPTIONAL: True})},
           **stage)
    def drift_report(context: AssetExecutionContext, indexer: KnowledgeIndexer, store: ArtifactStore, serving_traffic: Batches,
                     instruction_dataset: Artifact, champion_scores: Artifact | None) -> Output[Artifact]:
        """Production prompts of the `monitoring.window_days` days up to this one against the training prompts —
        embedding, length, vocabulary and topic drift, overall and per day — and quality: feedback per day and the
        champion's latest golden-set scores against its scores at deployment; flags when a threshold is crossed,
        which the retraining sensor acts on."""
        policy = spec.monitoring
        train = instruction_dataset.read_table("examples.parquet")
        train = train[train["split"] == "train"]
        reference, topics = list(train["prompt"]), list(train["batch"])
        embedded: dict[str, object] = {}

        def embed(texts: list[str]):  # the reference is embedded once for the window and every day
            marker = "\n".join(texts)
            if marker not in embedded:
                embedded[marker] = indexer.embed(texts)
            return embedded[marker]

        days = {d: a.read_table("requests.parquet") for d, a in serving_traffic.items()}
        production = [p for reqs in days.values() for p in reqs["prompt_redacted"].dropna()]
        report = prompt_drift(reference, topics, production, embed, policy)
        per_day = {d: prompt_drift(reference, topics, list(reqs["prompt_redacted"].dropna()), embed, policy) for d, reqs in days.items()}
        daily = [{"day": d, **{k: a.read_json("summary.json")["overall"][k] for k in ("requests", "feedback_up", "feedback_down",
                                                                                      "errors_5xx")}}
                 for d, a in serving_traffic.items()]
        up, down = sum(d["feedback_up"] for d in daily), sum(d["feedback_down"] for d in daily)
        report["feedback_flags"] = feedback_flags(up, down, policy)
        report["feedback_up_rate"] = up / (up + down) if up + down else None
        report["daily"] = daily
        report["per_day"] = {d: {k: r.get(k) for k in (*DRIFT_MEASURES, "judged", "production_prompts")} for d, r in per_day.items()}
        champion = champion_scores.read_json("scores.json") if champion_scores is not None else None
        report["champion"] = champion
        report["retrain_recommended"] = bool(report["flags"] or report["feedback_flags"])
        inputs = {"serving_traffic": serving_traffic.combined_version(), "instruction_dataset": instruction_dataset.version,
                  "champion_scores": champion_scores.version if champion_scores else None}
        version = version_of({k: v for k, v in report.items() if k != "daily"}, inputs, [*config_of(policy), indexer.model])
        artifact = Artifact.create(store, context.asset_key, version, context.partition_key)
        limits = report.get("limits") or {}
        with artifact.writing() as out:
            write_json(out, "drift.json", report)
            chart = picture(over_time(list(per_day), {m: [per_day[d].get(m) for d in per_day] for m in
                                                      ("embedding_drift", "out_of_domain_share", "oov_rate", "topic_psi")},
                                      limits, f"drift per day, {spec.name}"), "drift over time", out, "drift.png")
        trend = "| day | requests | up | down | 5xx |\n|---|---|---|---|---|\n" + "\n".join(
            f"| {d['day']} | {d['requests']} | {d['feedback_up']} | {d['feedback_down']} | {d['errors_5xx']} |" for d in daily)
        return emit(artifact, {
            **{k: MetadataValue.float(float(report[k])) for k in DRIFT_MEASURES if k in report},
            "production_prompts": MetadataValue.int(len(production)),
            "days": MetadataValue.int(len(days)),
            "feedback_up_rate": MetadataValue.float(report["feedback_up_rate"] if report["feedback_up_rate"] is not None else -1.0),
            "flags": bullets(report["flags"] + report["feedback_flags"]),
            "retrain_recommended": MetadataValue.bool(report["retrain_recommended"]),
            "daily_trend": MetadataValue.md(trend),
            "drift_chart": chart,
            "topic_share": MetadataValue.json({"production": report.get("topic_share_production"),
                                               "reference": report.get("topic_share_reference")}),
            "judged": MetadataValue.bool(report["judged"]),
        })

    @asset_check(asset=drift_report, partitions_def=serving_days,
                 description="Production prompts stay close to the training distribution (the model's monitoring policy).")
    def prompts_within_training_distribution(drift_report: Artifact) -> AssetCheckResult:
        report = drift_report.read_json("drift.json")
        return AssetCheckResult(passed=not report["flags"], severity=AssetCheckSeverity.WARN,
                                metadata={"flags": bullets(report["flags"]), "judged": MetadataValue.bool(report["judged"])})

    @asset_check(asset=drift_report, partitions_def=serving_days,
                 description="Users' thumbs-up share holds above monitoring.min_feedback_up_rate.")
    def feedback_holds_up(drift_report: Artifact) -> AssetCheckResult:
        report = drift_report.read_json("drift.json")
        rate = report["feedback_up_rate"]
        return AssetCheckResult(passed=not report["feedback_flags"], severity=AssetCheckSeverity.WARN,
                                metadata={"flags": bullets(report["feedback_flags"]),
                                          "up_rate": MetadataValue.float(rate if rate is not None else -1.0)})

    @asset(key=key(spec, "champion_scores"), kinds={"deepeval"}, code_version="2",
           ins={"champion": AssetIn(key=key(spec, "champion")), "golden_dataset": AssetIn(key=key(spec, "golden_dataset")),
                "base_model": AssetIn(key=key(spec, "base_model"))}, **stage)
    def champion_scores(context: AssetExecutionContext, evaluator: Evaluator, store: ArtifactStore, champion: Artifact,
                        golden_dataset: Artifact, base_model: Artifact) -> Output[Artifact]:
        """The adapter in service re-scored on the current golden set (weekly schedule): quality drift shows as these
        floats falling across materializations, against the candidate's scores when it was evaluated."""
        adapter = adapter_of(spec, champion)
        golden = golden_dataset.read_table("examples.parquet")
        contender = Contender("champion", base_model.read_json("model.json")["path"], str(adapter.path))
        _, aggregates = evaluator.compare([contender], golden, [[] for _ in range(len(golden))], log=context.log.info)
        scores = aggregates["champion"]
        at_deploy = _scores_when_evaluated(context, spec, adapter.version)
        content = {"champion": adapter.version, "scores": scores, "at_deployment": at_deploy}
        version = version_of(content, {"champion": champion.version, "golden_dataset": golden_dataset.version,
                                       "base_model": base_model.version}, config_of(evaluator))
        artifact = Artifact.create(store, context.asset_key, version)
        with artifact.writing() as out:
            write_json(out, "scores.json", content)
        return emit(artifact, {
            "champion": MetadataValue.text(adapter.version),
            **{f"champion_{k}": MetadataValue.float(v) for k, v in scores.items() if k in METRICS or k == "runaway_rate"},
            **{f"at_deployment_{k}": MetadataValue.float(v) for k, v in at_deploy.items() if k in METRICS},
        })

    @asset_check(asset=champion_scores, description="The champion's main metric has not fallen below its score when it was "
                 "evaluated by more than promotion.max_regression_vs_champion.")
    def champion_quality_holds(champion_scores: Artifact) -> AssetCheckResult:
        data = champion_scores.read_json("scores.json")
        metric = spec.promotion.main_metric
        now, then = data["scores"].get(metric), data["at_deployment"].get(metric)
        if now is None or then is None:
            return AssetCheckResult(passed=True, severity=AssetCheckSeverity.WARN,
                                    metadata={"note": MetadataValue.text(f"no {metric} to compare (now {now}, then {then})")})
        return AssetCheckResult(passed=now >= then - spec.promotion.max_regression_vs_champion, severity=AssetCheckSeverity.WARN,
                                metadata={"now": MetadataValue.float(now), "at_deployment": MetadataValue.float(then)})

    return [serving_traffic, drift_report, prompts_within_training_distribution, feedback_holds_up, champion_scores,
            champion_quality_holds]


def _scores_when_evaluated(context: AssetExecutionContext, spec: ModelSpec, adapter_version: str) -> dict:
    """The candidate scores of the evaluation that promoted `adapter_version` (its eval_report's metadata)."""
    from dagster import AssetRecordsFilter

    for record in context.instance.fetch_materializations(AssetRecordsFilter(asset_key=key(spec, "eval_report")), limit=200).records:
        metadata = record.event_log_entry.asset_materialization.metadata
        if metadata.get("adapter_version") and metadata["adapter_version"].value == adapter_version:
            return {k.removeprefix("candidate_"): v.value for k, v in metadata.items() if k.startswith("candidate_")}
    return {}

