"""Faults: a failed run is recorded and alerted (a real webhook on 127.0.0.1), and bad configuration fails
with a message that names the field or file, not a stack trace deep in a run."""

import json

import pytest
from fastapi import FastAPI, Request
from servers.openai_server import serve


def test_a_failed_run_is_recorded_and_posted_to_the_webhook(tmp_path, dagster_instance):
    from dagster import asset, build_run_status_sensor_context, materialize

    from orchestration.sensors import run_failure_alerts
    from resources.monitoring.alerts import AlertSink

    @asset
    def fragile():
        raise ValueError("the upstream file vanished")

    result = materialize([fragile], instance=dagster_instance, raise_on_error=False)
    assert not result.success
    received = []
    hook = FastAPI()

    @hook.post("/alert")
    async def alert(request: Request):
        received.append(await request.json())
        return {}

    from dagster import DagsterEventType

    [entry] = dagster_instance.all_logs(result.run_id, of_type=DagsterEventType.RUN_FAILURE)
    failure = entry.dagster_event
    with serve(hook, suffix="") as url:
        sink = AlertSink(path=str(tmp_path / "alerts.jsonl"), webhook_url=f"{url}/alert")
        context = build_run_status_sensor_context(sensor_name="run_failure_alerts", dagster_event=failure,
                                                  dagster_instance=dagster_instance, dagster_run=result.dagster_run,
                                                  resources={"alerts": sink}).for_run_failure()
        run_failure_alerts(context)
    [logged] = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert logged["run_id"] == result.run_id and logged["webhook_status"] == 200
    assert logged["steps"] and "the upstream file vanished" in logged["steps"][0]["error"]
    assert received and received[0]["run_id"] == result.run_id


def test_an_unreachable_webhook_is_recorded_not_raised(tmp_path):
    from resources.monitoring.alerts import AlertSink

    record = AlertSink(path=str(tmp_path / "a.jsonl"), webhook_url="http://127.0.0.1:9/alert", timeout_s=2).send({"job": "x"})
    assert "webhook_error" in record and (tmp_path / "a.jsonl").exists()


def test_bad_configuration_names_the_field(tmp_path):
    from resources.models.base_model import BaseModelSource, ModelUnavailableError
    from resources.redaction.policy import RedactionPolicy
    from resources.serving.deploy import deploy
    from resources.serving.gateway_server import GatewayServer
    from resources.serving.vllm_server import ServingError, VllmServer

    with pytest.raises(ServingError, match=r"VllmServer.url 'http://127.0.0.1:9' is not reachable"):
        VllmServer(url="http://127.0.0.1:9").ensure_running("/models/base")
    with pytest.raises(ServingError, match=r"VllmServer.python '/nope/python' does not exist: run `make serving-env`"):
        VllmServer(python="/nope/python", port=9).ensure_running("/models/base")
    with pytest.raises(ServingError, match="not a PEFT adapter folder"):
        deploy(VllmServer(port=9), GatewayServer(port=9, state_dir=str(tmp_path)), "support", "v1", str(tmp_path), "/models/base")
    bad = tmp_path / "policy.yaml"
    bad.write_text("entities: [PERSON\n")
    with pytest.raises(ValueError, match=r"redaction policy .*policy.yaml is not valid YAML"):
        RedactionPolicy.load(bad)
    with pytest.raises(ModelUnavailableError, match="no-such-org/no-such-model"):
        BaseModelSource(model="no-such-org/no-such-model", cache_dir=str(tmp_path)).resolve()
