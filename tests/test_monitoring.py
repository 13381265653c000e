"""Drift detection on synthetic traffic: production prompts drawn like the training prompts must not be
flagged; shifted ones (another domain, other lengths and words) must be."""

import json
import random

import pytest

from conftest import SAMPLE
from resources.monitoring.drift import MonitoringPolicy, feedback_flags, prompt_drift, psi


def training_like_prompts():
    """Support questions in the style of the sample corpus (topic = the product area)."""
    rng = random.Random(7)
    areas = {
        "billing": ["How do I update the card on my {p} plan?", "Why was I charged twice for the {p} plan this month?",
                    "Can I switch the {p} plan to annual billing?", "Where do I download invoices for the {p} plan?"],
        "access": ["How do I reset two-factor authentication for a {p} workspace member?",
                   "Why can't my colleague log in with SSO on the {p} plan?", "How long do API tokens last on {p}?",
                   "How do I revoke an API token in a {p} workspace?"],
        "export": ["How do I export all boards from a {p} workspace?", "Why is my {p} export ZIP empty?",
                   "Can I schedule a weekly export on the {p} plan?", "Where does the {p} export email come from?"],
    }
    plans = ["Free", "Team", "Business", "Enterprise"]
    rows = [(tpl.format(p=rng.choice(plans)), area) for area, tpls in areas.items() for tpl in tpls for _ in range(12)]
    rng.shuffle(rows)
    return rows


def shifted_prompts(n):
    rng = random.Random(3)
    dishes = ["lasagna", "risotto", "banana bread", "ramen", "paella", "curry"]
    return [f"Could you please give me a detailed step by step recipe for a vegetarian {rng.choice(dishes)} that serves "
            f"{rng.randint(2, 12)} people, including a shopping list, preparation times and wine pairing suggestions?"
            for _ in range(n)]


@pytest.fixture(scope="module")
def embed():
    from resources.retrieval.index import KnowledgeIndexer

    return KnowledgeIndexer().embed


def test_unshifted_traffic_is_not_flagged_and_shifted_traffic_is(embed):
    rows = training_like_prompts()
    reference, topics = [r[0] for r in rows[:96]], [r[1] for r in rows[:96]]
    same = [r[0] for r in rows[96:]]
    policy = MonitoringPolicy()
    calm = prompt_drift(reference, topics, same, embed, policy)
    assert calm["judged"] and calm["flags"] == [], calm
    shifted = prompt_drift(reference, topics, shifted_prompts(40), embed, policy)
    assert shifted["judged"] and len(shifted["flags"]) >= 3, shifted
    assert shifted["embedding_drift"] > calm["embedding_drift"] * 3
    assert shifted["length_psi"] > policy.max_length_psi and shifted["oov_rate"] > policy.max_oov_rate


def test_too_little_traffic_is_not_judged(embed):
    report = prompt_drift(["a question"] * 30, ["t"] * 30, ["another"] * 5, embed, MonitoringPolicy(min_requests=20))
    assert not report["judged"] and report["flags"] == []


def test_psi_and_feedback_flags():
    assert psi([10, 10, 10], [10, 10, 10]) == pytest.approx(0.0)
    assert psi([10, 10, 10], [1, 1, 28]) > 0.5
    policy = MonitoringPolicy(min_feedback_votes=10, min_feedback_up_rate=0.6)
    assert feedback_flags(3, 2, policy) == []  # too few votes to judge
    assert feedback_flags(8, 2, policy) == []
    assert feedback_flags(4, 8, policy) and "0.33" in feedback_flags(4, 8, policy)[0]


def _stand_ins():
    """Assets with the real keys, standing in for the expensive ones so the sensor sees real events."""
    from dagster import AssetExecutionContext, Config, DataVersion, MaterializeResult, MetadataValue, asset

    class V(Config):
        version: str = "v1"
        retrain: bool = False

    @asset(name="instruction_dataset")
    def dataset(config: V) -> MaterializeResult:
        return MaterializeResult(data_version=DataVersion(config.version))

    @asset(name="lora_adapter", deps=["instruction_dataset"])
    def adapter(config: V) -> MaterializeResult:
        return MaterializeResult(data_version=DataVersion("a-" + config.version))

    @asset(name="drift_report")
    def drift(config: V) -> MaterializeResult:
        return MaterializeResult(metadata={"retrain_recommended": MetadataValue.bool(config.retrain),
                                           "flags": MetadataValue.md("- length_psi 0.9 > 0.25" if config.retrain else "none")})

    return dataset, adapter, drift


def test_retraining_sensor_fires_once_per_new_dataset_and_per_drift_report(dagster_instance):
    from dagster import build_sensor_context, materialize

    from orchestration.sensors import retraining_sensor

    dataset, adapter, drift = _stand_ins()

    def run(asset, **config):
        assert materialize([asset], instance=dagster_instance, run_config={"ops": {asset.key.path[-1]: {"config": config}}}).success

    def tick(cursor=None):
        with build_sensor_context(instance=dagster_instance, cursor=cursor) as context:
            result = retraining_sensor(context)
        return [r.run_key for r in result.run_requests or []], result.cursor

    assert tick()[0] == []  # nothing yet
    run(dataset, version="v1")
    keys, cursor = tick()
    assert keys == ["dataset@v1"]
    run(adapter, version="v1")  # trained on v1: nothing left to do
    assert tick(cursor)[0] == []
    run(dataset, version="v2")  # new data (a new batch or feedback) -> a new dataset version
    assert tick(cursor)[0] == ["dataset@v2"]
    run(adapter, version="v2")
    run(drift, retrain=False)
    keys, cursor = tick(cursor)
    assert keys == []
    run(drift, retrain=True)
    keys, cursor = tick(cursor)
    assert len(keys) == 1 and keys[0].startswith("drift@")
    assert tick(cursor)[0] == []  # the cursor: the same report fires once


def test_daily_schedule_targets_the_previous_day():
    import datetime as dt

    from dagster import build_schedule_context

    from orchestration.definitions import defs
    from orchestration.schedules import daily_monitoring_schedule

    with build_schedule_context(scheduled_execution_time=dt.datetime(2026, 11, 25, 1, 0, tzinfo=dt.timezone.utc)) as context:
        [request] = daily_monitoring_schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-11-24"
    assert {"monitor_schedule", "evaluate_champion_schedule"} <= {s.name for s in defs.schedules}


@pytest.mark.slow
def test_traffic_and_drift_assets_on_a_real_request_log(tmp_path, dagster_instance):
    """A day of logged requests (SQLite through SQLAlchemy, as the gateway writes it) is summarised, and
    off-domain prompts make the drift report recommend retraining and its check warn."""
    import datetime as dt

    import pandas as pd
    from dagster import materialize

    from assets.monitoring import drift_report, feedback_holds_up, prompts_within_training_distribution, serving_traffic
    from resources.monitoring.traffic import RequestLogSource
    from resources.retrieval.index import KnowledgeIndexer
    from resources.requestlog import RequestLog
    from resources.storage import ArtifactStore

    url = f"sqlite:///{tmp_path / 'requests.db'}"
    log = RequestLog(url)
    yesterday = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    for i, prompt in enumerate(shifted_prompts(30)):
        log.record({"created_at": yesterday, "id": f"r{i}", "client": "c", "endpoint": "chat", "model": "support", "upstream_model": "support-v1",
                    "adapter_version": "v1", "status": 200 if i % 10 else 503, "latency_ms": 100.0 + i, "prompt_tokens": 30,
                    "completion_tokens": 20, "input_guard": {"EMAIL_ADDRESS": 1} if i == 0 else {}, "output_guard": {},
                    "prompt_redacted": prompt})
        if i < 12:
            log.record_feedback({"created_at": yesterday, "response_id": f"r{i}", "client": "c", "rating": "down" if i < 8 else "up"})
    store = ArtifactStore(root=str(tmp_path / "artifacts"))
    rows = training_like_prompts()
    with store.writing("instruction_dataset", "d1") as out:
        pd.DataFrame({"prompt": [r[0] for r in rows], "batch": [r[1] for r in rows], "split": "train"}).to_parquet(out / "examples.parquet")
    store.set_latest("instruction_dataset", "d1")

    day = yesterday.date().isoformat()
    resources = {"store": store, "request_log": RequestLogSource(database_url=url), "indexer": KnowledgeIndexer(),
                 "monitoring": MonitoringPolicy()}
    traffic = materialize([serving_traffic], partition_key=day, resources=resources, instance=dagster_instance)
    [event] = traffic.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["requests"].value == 30 and metadata["errors_5xx"].value == 3
    assert metadata["feedback_down"].value == 8 and metadata["guard_triggers"].value == {"input:EMAIL_ADDRESS": 1}

    result = materialize([drift_report, prompts_within_training_distribution, feedback_holds_up], resources=resources,
                         instance=dagster_instance, selection=["drift_report"])
    [event] = result.get_asset_materialization_events()
    assert event.materialization.metadata["retrain_recommended"].value is True
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"prompts_within_training_distribution": False, "feedback_holds_up": False}
