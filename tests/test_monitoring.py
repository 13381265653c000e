"""Drift detection on synthetic traffic: production prompts drawn like the training prompts must not be
flagged; shifted ones (another domain, other lengths and words) must be."""

import random

import pytest

from helpers import project_for, record, sample_model
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


def test_retraining_sensor_fires_once_per_drift_report_recommending_it(tmp_path, dagster_instance):
    from dagster import AssetKey, AssetMaterialization, MetadataValue, build_sensor_context

    project = project_for(tmp_path, [sample_model("support", tmp_path / "data", copy_data=False)])
    sensor = project.definitions.resolve_sensor_def("support_retraining_sensor")

    def tick(cursor=None):
        with build_sensor_context(instance=dagster_instance, cursor=cursor) as context:
            result = sensor(context)
        return [r.run_key for r in result.run_requests or []], result.cursor

    def drift(recommend: bool):
        dagster_instance.report_runless_asset_event(AssetMaterialization(
            asset_key=AssetKey(["support", "drift_report"]), partition="2026-11-24",
            metadata={"retrain_recommended": MetadataValue.bool(recommend),
                      "flags": MetadataValue.md("- length_psi 0.9 > 0.25" if recommend else "none")}))

    keys, cursor = tick()
    assert keys == []  # nothing yet
    drift(False)
    keys, cursor = tick(cursor)
    assert keys == []
    drift(True)
    keys, cursor = tick(cursor)
    assert len(keys) == 1 and keys[0].startswith("drift@")
    assert tick(cursor)[0] == []  # the cursor: the same report fires once


@pytest.mark.slow
def test_traffic_and_drift_assets_on_a_real_request_log(tmp_path, dagster_instance):
    """A day of one model's logged requests (SQLite through SQLAlchemy, as the gateway writes it) is summarised —
    the other model's requests stay out — and off-domain prompts make the drift report recommend retraining, its
    checks warn and its picture show the day."""
    import datetime as dt

    import pandas as pd
    from dagster import AssetKey

    from resources.requestlog import RequestLog, RequestLogSource

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
    log.record({"created_at": yesterday, "id": "other", "client": "c", "endpoint": "chat", "model": "policy", "status": 200})
    project = project_for(tmp_path, [sample_model("support", tmp_path / "data", copy_data=False)],
                          request_log=RequestLogSource(database_url=url))
    rows = training_like_prompts()
    record(dagster_instance, project.definitions.resources["store"], AssetKey(["support", "instruction_dataset"]), "d1",
           lambda out: pd.DataFrame({"prompt": [r[0] for r in rows], "batch": [r[1] for r in rows], "split": "train"})
           .to_parquet(out / "examples.parquet"))

    day = yesterday.date().isoformat()
    result = project.definitions.resolve_job_def("support_monitor").execute_in_process(
        instance=dagster_instance, partition_key=day, raise_on_error=False)
    assert result.success
    events = {e.materialization.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()}
    traffic, drift = events["serving_traffic"], events["drift_report"]
    assert traffic["requests"].value == 30 and traffic["errors_5xx"].value == 3  # not the policy model's request
    assert traffic["feedback_down"].value == 8 and traffic["guard_triggers"].value == {"input:EMAIL_ADDRESS": 1}
    assert drift["days"].value == 1 and drift["production_prompts"].value == 30, {k: v.value for k, v in drift.items() if "chart" not in k}
    assert drift["retrain_recommended"].value is True
    assert drift["drift_chart"].value.startswith("![drift over time](data:image/png;base64,")
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"prompts_within_training_distribution": False, "feedback_holds_up": False}
