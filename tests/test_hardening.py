"""Faults: a failed run is recorded and alerted (a real webhook on 127.0.0.1), and bad configuration fails
with a message that names the field or file, not a stack trace deep in a run."""

import json
from pathlib import Path

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


def test_a_bad_literal_fails_when_the_definitions_load(tmp_path):
    """What the code location loader (the UI, `dagster definitions validate`) shows: the field and the reason."""
    import subprocess
    import sys

    from conftest import ROOT

    module = tmp_path / "bad_location.py"
    module.write_text("from orchestration.definitions import build_definitions\n"
                      "from resources.serving.vllm_server import VllmServer\n"
                      "defs = build_definitions(vllm=VllmServer(url='vllm.serving.svc:8000'))\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT), "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text((ROOT / "config" / "dagster" / "dagster.yaml").read_text())
    out = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-f", str(module)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 1
    assert "VllmServer.url = 'vllm.serving.svc:8000': expected an http(s) URL" in out.stdout + out.stderr

    from pydantic import ValidationError

    from resources.storage import ArtifactStore

    with pytest.raises(ValidationError, match=r"ArtifactStore.remote_url = 'nosuch://bucket': fsspec knows no 'nosuch' protocol"):
        ArtifactStore(remote_url="nosuch://bucket")


def test_bad_configuration_fails_when_the_run_starts_before_any_asset_body(tmp_path, dagster_instance):
    """A value that only the world can refute (a folder, a server) fails at resource set-up, naming the field:
    the run fails before any step starts (in-process; with the multiprocess executor, at the start of the
    step that uses the resource) and nothing is materialized."""
    from dagster import DagsterEventType, materialize

    from assets.training import base_model
    from resources.models.base_model import BaseModelSource
    from resources.storage import ArtifactStore

    result = materialize([base_model], instance=dagster_instance, raise_on_error=False,
                         resources={"model_source": BaseModelSource(model=str(tmp_path / "no-such-model")),
                                    "store": ArtifactStore(root=str(tmp_path / "artifacts"))})
    assert not result.success
    events = dagster_instance.all_logs(result.run_id)
    kinds = [e.dagster_event.event_type for e in events if e.dagster_event]
    assert DagsterEventType.STEP_START not in kinds and DagsterEventType.ASSET_MATERIALIZATION not in kinds
    failure = next(e for e in events if e.dagster_event and e.dagster_event.event_type == DagsterEventType.RESOURCE_INIT_FAILURE)
    error = failure.dagster_event.event_specific_data.error
    text = "".join([error.message] + [c.message for c in _causes(error)])
    assert f"BaseModelSource.model = '{tmp_path / 'no-such-model'}': no such folder" in text
    assert not (tmp_path / "artifacts").exists()


def _causes(error):
    while error.cause:
        error = error.cause
        yield error


def test_an_unknown_adapter_version_is_refused_naming_the_field(tmp_path, dagster_instance):
    from dagster import materialize

    from assets.deployment import deployed_endpoint
    from resources.serving.gateway_server import GatewayServer
    from resources.serving.vllm_server import VllmServer
    from resources.storage import ArtifactStore, write_json

    store = ArtifactStore(root=str(tmp_path / "artifacts"))
    with store.writing("lora_adapter", "a1b2c3") as out:
        write_json(out, "adapter_config.json", {})
    result = materialize([deployed_endpoint], instance=dagster_instance, raise_on_error=False,
                         run_config={"ops": {"deployed_endpoint": {"config": {"adapter_version": "v-typo"}}}},
                         resources={"store": store, "vllm": VllmServer(port=9, state_dir=str(tmp_path)),
                                    "gateway": GatewayServer(port=9, state_dir=str(tmp_path))})
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "DeploymentConfig.adapter_version = 'v-typo': no such lora_adapter version (stored: a1b2c3)" in failure.message
    assert len(result.get_step_failure_events()) == 1  # not retried: a typo does not heal


def test_tuneforge_check_lists_every_problem_before_launch(tmp_path, monkeypatch, capsys):
    """`tuneforge check` initialises every resource as a run would (EnvVars resolved) and names each problem."""
    import sys

    from orchestration.cli import main

    bad_yaml = tmp_path / "redaction.yaml"
    bad_yaml.write_text("entities: [PERSON\n")
    (tmp_path / "bad_location.py").write_text(f"""
from dagster import EnvVar
from orchestration.definitions import build_definitions
from resources.models.base_model import BaseModelSource
from resources.redaction.redactor import PiiRedactor
from resources.serving.vllm_server import VllmServer
from resources.storage import ArtifactStore
defs = build_definitions(
    model_source=BaseModelSource(model="no-such-org/no-such-model", cache_dir={str(tmp_path / 'cache')!r}),
    redactor=PiiRedactor(policy_path={str(bad_yaml)!r}),
    vllm=VllmServer(url="http://127.0.0.1:9"),
    store=ArtifactStore(root={str(tmp_path / 'artifacts')!r}, remote_url=EnvVar("TUNEFORGE_TEST_REMOTE")),
    judge=__import__("resources.evaluation.judge", fromlist=["JudgeModel"]).JudgeModel(api_key=EnvVar("TUNEFORGE_TEST_UNSET_KEY")),
)
""")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TUNEFORGE_TEST_REMOTE", "nosuch://bucket/prefix")
    monkeypatch.delenv("TUNEFORGE_TEST_UNSET_KEY", raising=False)
    sys.modules.pop("bad_location", None)
    assert main(["check", "--module", "bad_location"]) == 1
    out = capsys.readouterr().out
    assert "BaseModelSource.model = 'no-such-org/no-such-model': base model 'no-such-org/no-such-model' is not a local folder" in out
    assert f"PiiRedactor.policy_path = '{bad_yaml}': redaction policy {bad_yaml} is not valid YAML" in out
    assert "VllmServer.url = 'http://127.0.0.1:9': not reachable (GET /health failed)" in out
    assert "ArtifactStore.remote_url = 'nosuch://bucket/prefix': fsspec knows no 'nosuch' protocol" in out  # resolved EnvVar
    assert "TUNEFORGE_TEST_UNSET_KEY" in out  # an unset secret is named, not a stack trace
    assert "ok   curator" in out and "FAIL model_source" in out
    assert "5 with problems" in out


STAGES = ("raw_documents", "cleaned_documents", "redacted_documents")
WORKER = """
import os, sys
os.environ["DAGSTER_HOME"] = sys.argv[1]
sys.path.insert(0, sys.argv[3])
from dagster import DagsterInstance
from orchestration.definitions import build_definitions
from resources.evaluation.feedback import FeedbackSource
from resources.ingestion.inbox import Inbox
from resources.storage import ArtifactStore
root = sys.argv[2]
defs = build_definitions(inbox=Inbox(path=root + "/inbox", settle_seconds=0, forget_list=root + "/forget.yaml"),
                         store=ArtifactStore(root=root + "/artifacts"),
                         feedback=FeedbackSource(path=root + "/fb", endpoint_database_url=None))
instance = DagsterInstance.get()
instance.add_dynamic_partitions("ingestion_batches", ["support_qa.csv"])
print("START", flush=True)
defs.resolve_job_def("ingest_batch").execute_in_process(instance=instance, partition_key="support_qa.csv")
"""


def _workspace(root, sample):
    import shutil

    from conftest import ROOT

    (root / "home").mkdir(parents=True)
    (root / "home" / "dagster.yaml").write_text((ROOT / "config" / "dagster" / "dagster.yaml").read_text())
    (root / "inbox").mkdir()
    shutil.copy(sample / "inbox" / "support_qa.csv", root / "inbox")


def _outcome(root):
    """Ledgers, stored row counts, doc-id uniqueness and data versions of every stage."""
    import os

    from dagster import AssetKey, DagsterInstance

    from resources.storage import ArtifactStore

    os.environ["DAGSTER_HOME"] = str(root / "home")
    store, instance = ArtifactStore(root=str(root / "artifacts")), DagsterInstance.get()
    out = {}
    for asset in STAGES:
        table = store.read_table(asset, "support_qa.csv")
        event = instance.get_latest_materialization_event(AssetKey(asset))
        out[asset] = {"ledger": store.read_json(asset, "support_qa.csv", "ledger.json"), "rows": len(table),
                      "unique_ids": table["doc_id"].is_unique,
                      "data_version": event.asset_materialization.tags["dagster/data_version"]}
    instance.dispose()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("stage", range(len(STAGES)), ids=STAGES)
def test_a_run_killed_during_a_stage_reruns_to_the_uninterrupted_result(tmp_path, stage, monkeypatch):
    """kill -9 the run worker while a data stage runs, re-run the partition: the same record counts and
    data versions as a run that was never interrupted, no duplicates, and no half-written artifact."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT, SAMPLE

    reference, killed = tmp_path / "reference", tmp_path / "killed"
    for root in (reference, killed):
        _workspace(root, SAMPLE)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(script), str(reference / "home"), str(reference), str(ROOT)], check=True,
                   env=env, capture_output=True)

    worker = subprocess.Popen([sys.executable, str(script), str(killed / "home"), str(killed), str(ROOT)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    assert worker.stdout.readline().strip() == "START"
    previous = killed / "artifacts" / STAGES[stage - 1] / "support_qa.csv" if stage else None
    deadline = time.time() + 300
    while previous is not None and not previous.exists() and time.time() < deadline and worker.poll() is None:
        time.sleep(0.05)
    time.sleep(0.2)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    assert not (killed / "artifacts" / STAGES[stage] / "support_qa.csv").exists()  # killed before it finished
    for asset in STAGES:  # whatever exists is complete: a stage folder appears only once fully written
        folder = killed / "artifacts" / asset / "support_qa.csv"
        assert not folder.exists() or {"ledger.json", "documents.parquet"} <= {p.name for p in folder.iterdir()}

    rerun = subprocess.run([sys.executable, str(script), str(killed / "home"), str(killed), str(ROOT)], env=env,
                           capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    got, want = _outcome(killed), _outcome(reference)
    assert got == want
    assert all(v["unique_ids"] and v["ledger"]["balanced"] for v in got.values())


def test_kubernetes_profile_validates_and_the_trainer_pod_renders(monkeypatch):
    """No cluster runs here: the instance profile's run launcher config validates against dagster-k8s's
    schema, and the trainer's GPU pod (FineTuner launcher=k8s, Pipes) renders into a valid V1Pod."""
    import yaml
    from dagster import Shape
    from dagster._config import process_config
    from dagster_k8s.launcher import K8sRunLauncher
    from dagster_k8s.pipes import build_pod_body

    from conftest import ROOT
    from resources.training.fine_tuner import FineTuner

    profile = yaml.safe_load((ROOT / "config" / "dagster" / "dagster.k8s.yaml").read_text())
    assert profile["run_launcher"]["class"] == "K8sRunLauncher"
    monkeypatch.setenv("TUNEFORGE_IMAGE", "registry.example.com/tuneforge:0.1.0")  # the profile reads it from the env
    checked = process_config(Shape(K8sRunLauncher.config_type()), profile["run_launcher"]["config"])
    assert checked.success, checked.errors
    values = yaml.safe_load((ROOT / "deploy" / "helm" / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagster-user-deployments"]["deployments"][0]["dagsterApiGrpcArgs"][-1] == "orchestration.definitions"

    tuner = FineTuner(launcher="k8s", num_processes=4, k8s_gpus=4, k8s_image="registry.example.com/tuneforge:0.1.0",
                      work_dir="/data/training")
    command = tuner.command(__import__("pathlib").Path("/data/training/v1/spec.json"))
    assert command[:5] == ["python", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    pod = build_pod_body("tuneforge-train-v1", tuner.k8s_image, command, {"TOKENIZERS_PARALLELISM": "false"},
                         None, tuner.pod_spec())
    [container] = pod.spec.containers
    assert container.resources.limits == {"nvidia.com/gpu": "4"} and container.image == tuner.k8s_image
    assert pod.spec.node_selector == {"nvidia.com/gpu.present": "true"}
    assert container.volume_mounts[0].mount_path == "/data" and pod.spec.volumes[0].persistent_volume_claim.claim_name == "tuneforge-artifacts"

    with pytest.raises(ValueError, match="FineTuner.k8s_image is required"):
        FineTuner(launcher="k8s", work_dir="/data/training")
    with pytest.raises(ValueError, match="work_dir must be an absolute path under k8s_mount_path"):
        FineTuner(launcher="k8s", k8s_image="x", work_dir=".tuneforge/training")
