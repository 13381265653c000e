"""End to end with the real vLLM CPU server (`make serving-env`): deploy through Dagster, talk to the tuned
model through the gateway, serve two teams' adapters side by side, roll back, refuse an ungated adapter."""

import json

import httpx
import pytest
from servers.openai_server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def random_adapter(base_path: str, folder, seed: int) -> str:
    """A LoRA adapter with random (non-zero) weights, saved with the base tokenizer, as training saves it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_path),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base_path).save_pretrained(folder)
    return str(folder)


def local_answer(base_path: str, adapter_path: str, prompt: str, max_new_tokens: int) -> str:
    from resources.evaluation.generation import generate, load_for_generation

    tokenizer, model = load_for_generation(base_path, adapter_path)
    return generate(tokenizer, model, [prompt], max_new_tokens, 1)[0].text


@pytest.fixture(scope="module")
def serving(tmp_path_factory, smol_model_path):
    from conftest import ROOT

    from resources.serving.gateway_server import GatewayServer
    from resources.serving.vllm_server import VllmServer
    from resources.storage import ArtifactStore

    if not (ROOT / ".venv-vllm" / "bin" / "python").exists():
        pytest.fail("the vLLM environment is missing: run `make serving-env` (make test does)")
    tmp = tmp_path_factory.mktemp("serving")
    store = ArtifactStore(root=str(tmp / "artifacts"))
    with store.writing("base_model", "b") as out:
        (out / "model.json").write_text(json.dumps({"path": smol_model_path}))
    store.set_latest("base_model", "b")
    for version, seed, promote in (("adapter-a", 1, True), ("adapter-b", 2, True), ("adapter-bad", 3, False)):
        random_adapter(smol_model_path, store.partition_dir("lora_adapter", version), seed)
        with store.writing("promotion_gate", version) as out:
            (out / "decision.json").write_text(json.dumps({"promote": promote, "reasons": [f"test decision {promote}"]}))
    vllm = VllmServer(python=str(ROOT / ".venv-vllm" / "bin" / "python"), port=free_port(), state_dir=str(tmp / "serving"),
                      kv_cache_gib=1, max_model_len=1024)
    gateway = GatewayServer(port=free_port(), state_dir=str(tmp / "serving"),
                            canaries_path=str(ROOT / "data" / "sample" / "canaries.json"))
    try:
        yield {"store": store, "vllm": vllm, "gateway": gateway, "base": smol_model_path}
    finally:
        gateway.stop()
        vllm.stop()


def deploy(serving, instance, **config):
    from dagster import materialize

    from assets.deployment import deployed_endpoint

    return materialize([deployed_endpoint], instance=instance, raise_on_error=False,
                       resources={"store": serving["store"], "vllm": serving["vllm"], "gateway": serving["gateway"]},
                       run_config={"ops": {"deployed_endpoint": {"config": config}}})


def ask(serving, key, model, prompt="How long do API tokens last?", max_tokens=12):
    response = httpx.post(f"{serving['gateway'].url}/v1/chat/completions", timeout=120,
                          headers={"Authorization": f"Bearer {key}"},
                          json={"model": model, "messages": [{"role": "user", "content": prompt}],
                                "max_tokens": max_tokens, "temperature": 0})
    assert response.status_code == 200, response.text
    return response.json()


def test_deploy_serve_side_by_side_and_roll_back(serving, dagster_instance):
    from orchestration.cli import add_key

    store = serving["store"]
    store.set_latest("lora_adapter", "adapter-a")
    result = deploy(serving, dagster_instance)
    assert result.success
    [event] = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["adapter_version"].value == "adapter-a" and metadata["served_model"].value == "support"
    assert store.latest("champion") == "adapter-a"
    key = add_key(serving["gateway"], "tests", ["support", "team-b", "base"])

    # the tuned model answers through the gateway exactly as transformers + PEFT does (greedy, fp32)
    path_a = str(store.partition_dir("lora_adapter", "adapter-a"))
    served = ask(serving, key, "support")
    assert served["tuneforge"]["adapter_version"] == "adapter-a"
    assert served["choices"][0]["message"]["content"].strip() == local_answer(serving["base"], path_a, "How long do API tokens last?", 12)
    base_answer = ask(serving, key, "base")["choices"][0]["message"]["content"]
    assert base_answer != served["choices"][0]["message"]["content"]  # the adapter changes the output

    # a second team's adapter, loaded into the running server (no restart) and served side by side
    store.set_latest("lora_adapter", "adapter-b")
    assert deploy(serving, dagster_instance, name="team-b").success
    served_models = {m["id"] for m in serving["vllm"].served_models()}
    assert {"base", "support-adapter-a", "team-b-adapter-b"} <= served_models
    b = ask(serving, key, "team-b")["choices"][0]["message"]["content"]
    assert b.strip() == local_answer(serving["base"], str(store.partition_dir("lora_adapter", "adapter-b")),
                                     "How long do API tokens last?", 12)
    assert ask(serving, key, "support")["tuneforge"]["adapter_version"] == "adapter-a"

    # 'support' moves to adapter-b, then rolls back to adapter-a by re-materializing that version
    assert deploy(serving, dagster_instance, adapter_version="adapter-b").success
    assert ask(serving, key, "support")["tuneforge"]["adapter_version"] == "adapter-b"
    assert deploy(serving, dagster_instance, adapter_version="adapter-a").success
    assert ask(serving, key, "support")["tuneforge"]["adapter_version"] == "adapter-a"
    assert store.latest("champion") == "adapter-a"


def test_an_adapter_the_gate_did_not_pass_is_not_deployed(serving, dagster_instance):
    result = deploy(serving, dagster_instance, adapter_version="adapter-bad")
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "may not be deployed" in failure.event_specific_data.error.message


def test_a_chat_template_mismatch_fails_loudly(serving, tmp_path):
    import shutil

    from resources.serving.deploy import check_template_and_eos
    from resources.serving.vllm_server import ServingError

    serving["vllm"].ensure_running(serving["base"], "base")
    tampered = tmp_path / "tampered"
    shutil.copytree(serving["store"].partition_dir("lora_adapter", "adapter-a"), tampered)
    config = json.loads((tampered / "tokenizer_config.json").read_text())
    template_file = tampered / "chat_template.jinja"
    if template_file.exists():
        template_file.write_text("{% for m in messages %}### {{ m['content'] }}\n{% endfor %}")
    else:
        config["chat_template"] = "{% for m in messages %}### {{ m['content'] }}\n{% endfor %}"
        (tampered / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ServingError, match="chat template mismatch"):
        check_template_and_eos(serving["vllm"], str(tampered), serving["base"])


def test_full_loop_new_file_to_endpoint_with_lineage(tmp_path, smol_model_path):
    """Drop a file in the inbox, tick the inbox sensor, run the ingestion and datasets, tick the retraining
    sensor, run what it requests (train the real SmolLM2 for 2 steps -> evaluate -> gate -> deploy on vLLM
    -> audit), then read the lineage of the new endpoint: it names the dropped file's sha256."""
    import hashlib
    import os
    import shutil

    from dagster import DagsterInstance, build_sensor_context

    from conftest import ROOT, SAMPLE
    from orchestration.cli import run_pipeline
    from orchestration.definitions import build_definitions
    from orchestration.sensors import retraining_sensor
    from resources.datasets.policy import DatasetPolicy
    from resources.evaluation.evaluator import Evaluator
    from resources.evaluation.feedback import FeedbackSource
    from resources.evaluation.gate import PromotionPolicy
    from resources.governance.lineage import LineageReader, source_files, to_markdown
    from resources.ingestion.inbox import Inbox
    from resources.models.base_model import BaseModelSource
    from resources.serving.gateway_server import GatewayServer
    from resources.serving.vllm_server import VllmServer
    from resources.storage import ArtifactStore
    from resources.training.fine_tuner import FineTuner

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "config" / "dagster" / "dagster.yaml").read_text())
    os.environ["DAGSTER_HOME"] = str(home)
    instance = DagsterInstance.get()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    dropped = inbox / "support_qa.csv"
    shutil.copy(SAMPLE / "inbox" / "support_qa.csv", dropped)
    sha = hashlib.sha256(dropped.read_bytes()).hexdigest()
    vllm = VllmServer(python=str(ROOT / ".venv-vllm" / "bin" / "python"), port=free_port(), state_dir=str(tmp_path / "serving"),
                      kv_cache_gib=1, max_model_len=1024)
    gateway = GatewayServer(port=free_port(), state_dir=str(tmp_path / "serving"))
    defs = build_definitions(
        inbox=Inbox(path=str(inbox), settle_seconds=0, forget_list=str(tmp_path / "forget.yaml")),
        store=ArtifactStore(root=str(tmp_path / "artifacts")),
        feedback=FeedbackSource(path=str(tmp_path / "feedback"), endpoint_database_url=None),
        datasets=DatasetPolicy(golden_paths=[str(SAMPLE / "golden.jsonl")]),
        model_source=BaseModelSource(cache_dir=str(ROOT / ".cache" / "tuneforge" / "models")),
        fine_tuner=FineTuner(work_dir=str(tmp_path / "work")),
        evaluator=Evaluator(max_new_tokens=16, red_team_path=None),
        # 2 training steps cannot be expected to beat the base model: this test is about the loop, so the
        # policy only keeps the safety limits (the gate's own tests cover blocking)
        policy=PromotionPolicy(min_gain_over_base=-1.0, max_runaway_rate=1.0),
        vllm=vllm, gateway=gateway,
    )
    try:
        summary = run_pipeline(instance, defs, log=lambda *_: None)
        assert list(summary["batches"]) == ["support_qa.csv"]
        with build_sensor_context(instance=instance) as context:
            result = retraining_sensor(context)
        [request] = result.run_requests
        assert request.run_key.startswith("dataset@")
        run = defs.resolve_job_def("retrain").execute_in_process(
            instance=instance, raise_on_error=False,
            tags={**request.tags, "dagster/sensor_name": "retraining_sensor", "dagster/run_key": request.run_key},
            run_config={"ops": {"lora_adapter": {"config": {"max_steps": 2, "eval_steps": 1, "max_length": 256}}}})
        assert run.success, [e.event_specific_data.error.message for e in run.all_events if e.is_step_failure]
        with build_sensor_context(instance=instance, cursor=result.cursor) as context:
            assert not retraining_sensor(context).run_requests  # trained on this version: fires once

        report = LineageReader(instance).report(endpoint="support")
        files = source_files(report)
        assert [f["sha256"] for f in files] == [sha] and files[0]["path"] == "support_qa.csv"
        assert report["batches"][0]["raw_documents"]["triggered_by"].startswith("sensor inbox_sensor")
        assert report["adapter"]["triggered_by"].startswith("sensor retraining_sensor")
        assert report["promotion_gate"]["decision"] == "promote"
        assert report["base_model"]["metadata"]["weights_sha256"] == report["adapter"]["metadata"]["base_model_sha256"]
        assert sha in to_markdown(report)
        audit = [e for e in run.get_asset_materialization_events() if e.asset_key.path == ["governance_audit"]]
        assert audit and sha in audit[0].materialization.metadata["raw_file_sha256"].value
    finally:
        gateway.stop()
        vllm.stop()
        instance.dispose()


DEPLOY_WORKER = """
import os, sys, json
os.environ["DAGSTER_HOME"] = sys.argv[1]
sys.path.insert(0, sys.argv[2])
from dagster import DagsterInstance, materialize
from assets.deployment import deployed_endpoint
from resources.serving.gateway_server import GatewayServer
from resources.serving.vllm_server import VllmServer
from resources.storage import ArtifactStore
cfg = json.loads(sys.argv[3])
result = materialize([deployed_endpoint], instance=DagsterInstance.get(), resources={
    "store": ArtifactStore(root=cfg["store"]), "vllm": VllmServer(**cfg["vllm"]), "gateway": GatewayServer(**cfg["gateway"])},
    run_config={"ops": {"deployed_endpoint": {"config": {"adapter_version": "adapter-a", "name": "killed"}}}})
print("OK" if result.success else "FAILED")
"""


def test_a_deployment_killed_mid_way_reruns_to_a_working_endpoint(serving, tmp_path):
    """kill -9 the run worker while vLLM is starting for a deployment; the re-run adopts the server that
    was starting (no second vLLM on the port), finishes the deployment, and the endpoint answers."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT
    from orchestration.cli import add_key

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "config" / "dagster" / "dagster.yaml").read_text())
    state = tmp_path / "state"
    vllm = {"python": str(ROOT / ".venv-vllm" / "bin" / "python"), "port": free_port(), "state_dir": str(state),
            "kv_cache_gib": 1, "max_model_len": 1024}
    gateway = {"port": free_port(), "state_dir": str(state)}
    cfg = json.dumps({"store": serving["store"].root, "vllm": vllm, "gateway": gateway})
    script = tmp_path / "deploy_worker.py"
    script.write_text(DEPLOY_WORKER)
    worker = subprocess.Popen([sys.executable, str(script), str(home), str(ROOT), cfg], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    pid_file = state / f"vllm-{vllm['port']}.pid"
    deadline = time.time() + 120
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert pid_file.exists(), "the deployment never started vLLM"
    os.killpg(worker.pid, signal.SIGKILL)  # the run worker dies; vLLM (its own session) keeps starting
    worker.wait()
    orphan = int(pid_file.read_text())

    from resources.serving.gateway_server import GatewayServer
    from resources.serving.vllm_server import VllmServer

    try:
        rerun = subprocess.run([sys.executable, str(script), str(home), str(ROOT), cfg], capture_output=True, text=True)
        assert rerun.stdout.strip().endswith("OK"), rerun.stderr[-3000:]
        assert int(pid_file.read_text()) == orphan  # the server that was starting was adopted, not duplicated
        key = add_key(GatewayServer(**gateway), "tests", ["killed"])
        answer = httpx.post(f"http://127.0.0.1:{gateway['port']}/v1/chat/completions", timeout=120,
                            headers={"Authorization": f"Bearer {key}"},
                            json={"model": "killed", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
        assert answer.status_code == 200 and answer.json()["tuneforge"]["adapter_version"] == "adapter-a"
    finally:
        GatewayServer(**gateway).stop()
        VllmServer(**vllm).stop()
