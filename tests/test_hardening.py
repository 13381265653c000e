"""Faults: a failed run is recorded and alerted (a real webhook on 127.0.0.1), and bad configuration fails
with a message that names the field or file, not a stack trace deep in a run."""

import json
import os
import shutil
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from servers.openai_server import serve

from helpers import ROOT, SAMPLE, new_instance, project_for, record, sample_model


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
    from resources.redaction.redactor import PiiRedactor
    from resources.requestlog import RequestLogSource
    from resources.retrieval.index import KnowledgeIndexer
    from resources.serving.deploy import ServingStack, deploy
    from resources.serving.gateway_server import GatewayServer
    from resources.serving.vllm_server import ServingError, VllmServer

    with pytest.raises(ServingError, match=r"VllmServer.url 'http://127.0.0.1:9' is not reachable"):
        VllmServer(url="http://127.0.0.1:9").ensure_running("/models/base")
    with pytest.raises(ServingError, match=r"VllmServer.python '/nope/python' does not exist: run `make serving-env`"):
        VllmServer(python="/nope/python", port=9, state_dir=str(tmp_path)).ensure_running("/models/base")
    stack = ServingStack(VllmServer(port=9, state_dir=str(tmp_path)), GatewayServer(port=9, state_dir=str(tmp_path)),
                         PiiRedactor(), KnowledgeIndexer(), RequestLogSource())
    with pytest.raises(ServingError, match="not a PEFT adapter folder"):
        deploy(stack, "support", "v1", str(tmp_path), "/models/base")
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

    module = tmp_path / "bad_location.py"
    module.write_text("from orchestration.definitions import build_definitions\n"
                      "from resources.serving.vllm_server import VllmServer\n"
                      f"defs = build_definitions({str(ROOT)!r}, {str(tmp_path)!r}, vllm=VllmServer(url='vllm.serving.svc:8000'))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DAGSTER_HOME": str(tmp_path)}
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
    """A value that only the world can refute (a file that must parse, a server) fails at resource set-up, naming
    the field: the run fails before any step starts (in-process; with the multiprocess executor, at the start of
    the step that uses the resource) and nothing is materialized."""
    from dagster import DagsterEventType

    from resources.ingestion.inbox import Inbox

    bad = tmp_path / "forget.yaml"
    bad.write_text("forget: [unclosed\n")
    project = project_for(tmp_path, [sample_model("support", tmp_path / "data")], inbox=Inbox(forget_list=str(bad)))
    dagster_instance.add_dynamic_partitions("support_batches", ["support_qa.csv"])
    result = project.definitions.resolve_job_def("support_ingest_batch").execute_in_process(
        instance=dagster_instance, partition_key="support_qa.csv", raise_on_error=False)
    assert not result.success
    events = dagster_instance.all_logs(result.run_id)
    kinds = [e.dagster_event.event_type for e in events if e.dagster_event]
    assert DagsterEventType.STEP_START not in kinds and DagsterEventType.ASSET_MATERIALIZATION not in kinds
    failure = next(e for e in events if e.dagster_event and e.dagster_event.event_type == DagsterEventType.RESOURCE_INIT_FAILURE)
    error = failure.dagster_event.event_specific_data.error
    text = "".join([error.message] + [c.message for c in _causes(error)])
    assert f"Inbox.forget_list = '{bad}'" in text and "invalid YAML" in text
    assert not (project.state / "artifacts").exists()


def _causes(error):
    while error.cause:
        error = error.cause
        yield error


def test_an_unknown_adapter_version_is_refused_naming_the_field(tmp_path, dagster_instance):
    from dagster import AssetKey

    from resources.serving.gateway_server import GatewayServer
    from resources.serving.vllm_server import VllmServer
    from resources.storage import write_json

    project = project_for(tmp_path, [sample_model("support", tmp_path / "data", copy_data=False)],
                          vllm=VllmServer(port=9, state_dir=str(tmp_path)), gateway=GatewayServer(port=9, state_dir=str(tmp_path)))
    store = project.definitions.resources["store"]
    for asset, name in (("lora_adapter", "adapter_config.json"), ("base_model", "model.json"),
                        ("knowledge_index", "index.json"), ("promotion_decision", "decision.json")):
        record(dagster_instance, store, AssetKey(["support", asset]), "a1b2c3", lambda out, n=name: write_json(out, n, {}))
    result = project.definitions.resolve_job_def("support_deploy_adapter").execute_in_process(
        instance=dagster_instance, raise_on_error=False, op_selection=["support__deployed_endpoint"],
        run_config={"ops": {"support__deployed_endpoint": {"config": {"adapter_version": "v-typo"}}}})
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "DeploymentConfig.adapter_version = 'v-typo': no such support/lora_adapter version (materialized: a1b2c3)" in failure.message
    assert len(result.get_step_failure_events()) == 1  # not retried: a typo does not heal


def test_tuneforge_check_lists_every_problem_before_launch(tmp_path, monkeypatch, capsys):
    """`tuneforge check` initialises every resource as a run would (EnvVars resolved) and checks every model's files
    and base model, naming each problem."""
    import sys

    from orchestration.cli import main

    bad_yaml = tmp_path / "redaction.yaml"
    bad_yaml.write_text("entities: [PERSON\n")
    (tmp_path / "models" / "broken").mkdir(parents=True)
    (tmp_path / "models" / "broken" / "defs.yaml").write_text(
        "type: orchestration.model.TuneforgeModel\nattributes:\n  name: broken\n  inbox: nowhere\n"
        "  golden: [missing.jsonl]\n  base_model: no-such-org/no-such-model\n")
    (tmp_path / "bad_location.py").write_text(f"""
from dagster import EnvVar
from orchestration.definitions import build_definitions
from resources.evaluation.judge import JudgeModel
from resources.models.base_model import BaseModelSource
from resources.redaction.redactor import PiiRedactor
from resources.serving.vllm_server import VllmServer
from resources.storage import ArtifactStore
defs = build_definitions({str(tmp_path)!r},
    model_source=BaseModelSource(cache_dir={str(tmp_path / 'cache')!r}),
    redactor=PiiRedactor(policy_path={str(bad_yaml)!r}),
    vllm=VllmServer(url="http://127.0.0.1:9"),
    store=ArtifactStore(root={str(tmp_path / 'artifacts')!r}, remote_url=EnvVar("TUNEFORGE_TEST_REMOTE")),
    judge=JudgeModel(api_key=EnvVar("TUNEFORGE_TEST_UNSET_KEY")),
)
""")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TUNEFORGE_TEST_REMOTE", "nosuch://bucket/prefix")
    monkeypatch.delenv("TUNEFORGE_TEST_UNSET_KEY", raising=False)
    sys.modules.pop("bad_location", None)
    assert main(["check", "--module", "bad_location"]) == 1
    out = capsys.readouterr().out
    assert "models.broken.base_model = 'no-such-org/no-such-model': base model 'no-such-org/no-such-model' is not a local folder" in out
    assert f"models.broken.inbox = '{tmp_path / 'nowhere'}': no such folder" in out
    assert f"models.broken.golden = '{tmp_path / 'missing.jsonl'}': no such file" in out
    assert f"PiiRedactor.policy_path = '{bad_yaml}': redaction policy {bad_yaml} is not valid YAML" in out
    assert "VllmServer.url = 'http://127.0.0.1:9': not reachable (GET /health failed)" in out
    assert "ArtifactStore.remote_url = 'nosuch://bucket/prefix': fsspec knows no 'nosuch' protocol" in out  # resolved EnvVar
    assert "TUNEFORGE_TEST_UNSET_KEY" in out  # an unset secret is named, not a stack trace
    assert "ok   curator" in out and "FAIL models.broken" in out
    assert "5 with problems" in out


def test_tuneforge_check_names_an_empty_inbox_and_a_hub_model_a_run_would_download(tmp_path, monkeypatch, capsys):
    """With the hub on, a base model that is only a hub id and not in the local cache would be downloaded when the run
    starts (or fail there, 30 s in, where the hub is unreachable): `tuneforge check` says so, asking the cache only;
    and an inbox with nothing in it is named too. A run's own pre-flight lets both pass (data may already be ingested;
    a machine with the hub may download)."""
    from orchestration import workflows
    from orchestration.cli import main
    from orchestration.project import load_project

    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / ".DS_Store").write_text("")  # hidden files are not documents
    (tmp_path / "golden.jsonl").write_text("")
    (tmp_path / "policies").mkdir()
    shutil.copy(ROOT / "policies" / "redaction.yaml", tmp_path / "policies")
    (tmp_path / "models" / "m").mkdir(parents=True)
    (tmp_path / "models" / "m" / "defs.yaml").write_text(
        "type: orchestration.model.TuneforgeModel\nattributes:\n  name: m\n  inbox: inbox\n  golden: [golden.jsonl]\n"
        "  base_model: no-such-org/uncached-model\n")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    assert main(["check", "--project", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert (f"models.m.inbox = '{tmp_path / 'inbox'}': empty: nothing to ingest (drop files, or folders of files, "
            "into it; each is one batch)") in out
    assert ("models.m.base_model = 'no-such-org/uncached-model': base model 'no-such-org/uncached-model' is not a local "
            "folder and not in the Hugging Face cache: a run would download it from the hub first") in out
    assert workflows.check(load_project(tmp_path))["models.m"] == []


STAGES = ("raw_documents", "cleaned_documents", "redacted_documents")
WORKER = ROOT / "tests" / "workers" / "ingest_one_batch.py"


def _workspace(root):
    (root / "support" / "inbox").mkdir(parents=True)
    shutil.copy(SAMPLE / "support" / "inbox" / "support_qa.csv", root / "support" / "inbox")


def _outcome(root):
    """Ledgers, stored row counts, doc-id uniqueness and data versions of every stage."""
    from dagster import AssetKey

    from resources.storage import ArtifactStore

    instance = new_instance(root / ".dagster")
    store = ArtifactStore(root=str(root / ".tuneforge" / "artifacts"))
    out = {}
    for asset in STAGES:
        event = instance.get_latest_materialization_event(AssetKey(["support", asset]))
        key = event.asset_materialization.metadata["artifact"].value
        table = store.read_table(f"support/{asset}", key)
        out[asset] = {"ledger": store.read_json(f"support/{asset}", key, "ledger.json"), "rows": len(table),
                      "unique_ids": table["doc_id"].is_unique,
                      "data_version": event.asset_materialization.tags["dagster/data_version"]}
    instance.dispose()
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The outcome of a data run that was never interrupted (one for every stage's kill test)."""
    import subprocess
    import sys

    reference = tmp_path_factory.mktemp("reference")
    _workspace(reference)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, str(WORKER), str(reference)], check=True, env=env, capture_output=True)
    return _outcome(reference)


@pytest.mark.slow
@pytest.mark.parametrize("stage", range(len(STAGES)), ids=STAGES)
def test_a_run_killed_during_a_stage_reruns_to_the_uninterrupted_result(tmp_path, stage, uninterrupted):
    """kill -9 the run worker while a data stage runs, re-run the partition: the same record counts and data
    versions as a run that was never interrupted, no duplicates, and no half-written artifact."""
    import signal
    import subprocess
    import sys
    import time

    killed = tmp_path / "killed"
    _workspace(killed)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

    worker = subprocess.Popen([sys.executable, str(WORKER), str(killed)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    assert worker.stdout.readline().strip() == "START"
    artifacts = killed / ".tuneforge" / "artifacts" / "support"
    previous = artifacts / STAGES[stage - 1] if stage else None
    deadline = time.time() + 300
    while previous is not None and not any(previous.glob("support_qa.csv@*")) and time.time() < deadline and worker.poll() is None:
        time.sleep(0.05)
    time.sleep(0.2)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    assert not any((artifacts / STAGES[stage]).glob("support_qa.csv@*"))  # killed before it finished
    for asset in STAGES:  # whatever exists is complete: a version folder appears only once fully written
        for folder in (artifacts / asset).glob("support_qa.csv@*"):
            assert {"ledger.json", "documents.parquet"} <= {p.name for p in folder.iterdir()}

    rerun = subprocess.run([sys.executable, str(WORKER), str(killed)], env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    got = _outcome(killed)
    assert got == uninterrupted
    assert all(v["unique_ids"] and v["ledger"]["balanced"] for v in got.values())


def test_kubernetes_profile_validates_and_the_trainer_pod_renders(monkeypatch):
    """No cluster runs here: the instance profile's run launcher config validates against dagster-k8s's
    schema, and the trainer's GPU pod (FineTuner launcher=k8s, Pipes) renders into a valid V1Pod."""
    import yaml
    from dagster import Shape
    from dagster._config import process_config
    from dagster_k8s.launcher import K8sRunLauncher
    from dagster_k8s.pipes import build_pod_body

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
