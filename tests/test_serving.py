"""End to end with the real vLLM CPU server (`make serving-env`): two models of one project deployed side by side
through one vLLM and one gateway, each reachable only with its own key; rollback; an ungated adapter refused;
the printed curl works when pasted; and a retraining run started by the sensors evaluates, gates and deploys
exactly the adapter it trained while another run trains a newer one in the meantime."""

import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import httpx
import pytest
from dagster import AssetKey, MetadataValue
from servers.openai_server import free_port

from helpers import ROOT, SAMPLE, new_instance, project_for, record, sample_model

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def random_adapter(base_path: str, folder, seed: int) -> None:
    """A LoRA adapter with random (non-zero) weights, saved with the base tokenizer, as training saves it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_path),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base_path).save_pretrained(folder)
    (folder / "tuneforge_manifest.json").write_text(json.dumps({"method": "lora"}))


def local_answer(base_path: str, adapter_path: str, prompt: str, max_new_tokens: int) -> str:
    from resources.evaluation.generation import generate

    tokenizer, model = _loaded(base_path, adapter_path)
    return generate(tokenizer, model, [prompt], max_new_tokens, 1)[0].text


@functools.lru_cache(maxsize=2)
def _loaded(base_path: str, adapter_path: str | None):
    """transformers + PEFT, loaded once per (base, adapter) for the answers tests compare with vLLM's."""
    from resources.evaluation.generation import load_for_generation

    return load_for_generation(base_path, adapter_path)


def stack(tmp):
    from resources.serving.gateway_server import GatewayServer
    from resources.serving.vllm_server import VllmServer

    if not (ROOT / ".venv-vllm" / "bin" / "python").exists():
        pytest.fail("the vLLM environment is missing: run `make serving-env` (make test does)")
    serving = tmp / "serving"
    return {"vllm": VllmServer(python=str(ROOT / ".venv-vllm" / "bin" / "python"), port=free_port(), state_dir=str(serving),
                               kv_cache_gib=1, max_model_len=1024),
            "gateway": GatewayServer(port=free_port(), state_dir=str(serving))}


@pytest.fixture(scope="module")
def serving(tmp_path_factory, smol_model_path):
    """Both sample models on the embedded base; their adapters (random, but real PEFT folders) and promotion
    decisions recorded as materializations; one vLLM and one gateway."""
    from resources.evaluation.evaluator import Evaluator
    from resources.evaluation.gate import GateDecision
    from resources.storage import write_json

    tmp = tmp_path_factory.mktemp("serving")
    servers = stack(tmp)
    project = project_for(tmp, [sample_model("support", tmp / "data", copy_data=False),
                                sample_model("policy", tmp / "data", copy_data=False)],
                          evaluator=Evaluator(max_new_tokens=12), **servers)
    instance = new_instance(tmp / ".dagster")
    store = project.definitions.resources["store"]
    for model in ("support", "policy"):
        record(instance, store, AssetKey([model, "base_model"]), "b", lambda out: write_json(out, "model.json", {"path": smol_model_path}))
        record(instance, store, AssetKey([model, "knowledge_index"]), "i", knowledge_index)
    # as `tuneforge run` does: the shared base model's vLLM starts in the background, once for both models
    from orchestration import workflows

    started = workflows.prestart_serving(project, project.models)
    try:
        yield {"project": project, "instance": instance, "store": store, "base": smol_model_path, **servers,
               "decision": GateDecision, "prestarted": started}
    finally:
        servers["gateway"].stop()
        servers["vllm"].stop_all()
        instance.dispose()


PASSAGES = [("kb-tokens", "API tokens", "API tokens > Expiry", "API tokens expire after 90 days and can be revoked at any time."),
            ("kb-boards", "Plans", "Plans > Free plan", "The Free plan allows 3 boards per workspace.")]


def knowledge_index(out):
    """A real (small) knowledge index: passages and their MiniLM vectors."""
    import numpy as np
    import pandas as pd

    from resources.retrieval.index import PASSAGE_COLUMNS, KnowledgeIndexer
    from resources.storage import write_json

    rows = [{"chunk_id": c, "doc_id": c, "external_id": c.upper(), "title": t, "section": sec, "start": 0, "end": len(x),
             "text": x, "source_path": "kb.jsonl", "source_sha256": "a" * 64} for c, t, sec, x in PASSAGES]
    np.save(out / "vectors.npy", KnowledgeIndexer().embed([r["text"] for r in rows]))
    pd.DataFrame(rows)[PASSAGE_COLUMNS].to_parquet(out / "passages.parquet")
    write_json(out, "index.json", {"passages": len(rows)})


def add_adapter(serving, model: str, version: str, seed: int, promote: bool):
    """A trained-looking adapter of `model` and its promotion decision, recorded as the latest materializations."""
    from resources.storage import write_json

    store, instance = serving["store"], serving["instance"]
    record(instance, store, AssetKey([model, "lora_adapter"]), version, lambda out: random_adapter(serving["base"], out, seed))
    decision = serving["decision"](version, promote, [f"test decision {promote}"])
    record(instance, store, AssetKey([model, "promotion_decision"]), f"d-{version}",
           lambda out: write_json(out, "decision.json", decision.to_dict()),
           metadata={"adapter_version": MetadataValue.text(version), "decision": MetadataValue.text(decision.verdict)})


def deploy(serving, model: str, **config):
    job = serving["project"].definitions.resolve_job_def(f"{model}_deploy_adapter")
    return job.execute_in_process(instance=serving["instance"], raise_on_error=False, op_selection=[f"{model}__deployed_endpoint"],
                                  run_config={"ops": {f"{model}__deployed_endpoint": {"config": config}}} if config else None)


def ask(serving, key, model, prompt="How long do API tokens last?", max_tokens=12):
    return httpx.post(f"{serving['gateway'].url}/v1/chat/completions", timeout=120, headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                            "temperature": 0})


def endpoint_metadata(result):
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "deployed_endpoint"]
    return event.materialization.metadata


def test_two_models_side_by_side_through_one_vllm_and_one_gateway_each_with_its_own_key(serving):
    from orchestration.workflows import add_key
    from resources.requestlog import RequestLog, requests

    add_adapter(serving, "support", "adapter-a", 1, True)
    add_adapter(serving, "policy", "adapter-p", 2, True)
    support, policy = deploy(serving, "support"), deploy(serving, "policy")
    assert support.success and policy.success
    [early] = serving["prestarted"]  # the deployments waited for the server started early; none was started again
    assert early.port == serving["vllm"].port and serving["vllm"]._running_pid() == early._running_pid() is not None
    assert endpoint_metadata(support)["vllm_url"].value == endpoint_metadata(policy)["vllm_url"].value  # one vLLM
    assert {"base", "support-adapter-a", "policy-adapter-p"} <= {m["id"] for m in serving["vllm"].served_models()}
    champion = serving["instance"].get_latest_materialization_event(AssetKey(["support", "champion"]))
    assert champion.asset_materialization.metadata["adapter_version"].value == "adapter-a"

    support_key = add_key(serving["project"], "support-team", ["support"])
    policy_key = add_key(serving["project"], "policy-team", ["policy"])
    answer = ask(serving, support_key, "support")
    assert answer.status_code == 200 and answer.json()["tuneforge"]["adapter_version"] == "adapter-a"
    # the tuned model answers through the gateway, with retrieval (the default), exactly as transformers + PEFT
    # does given the grounded prompt the evaluation builds (greedy, fp32): one prompt for serving and evaluation
    from resources.knowledge.prompt import grounded_messages

    sources = answer.json()["tuneforge"]["sources"]
    assert [s["id"] for s in sources][:1] == ["kb-tokens"] and sources[0]["section"] == "API tokens > Expiry"
    by_id = {c: {"chunk_id": c, "title": t, "section": sec, "text": x} for c, t, sec, x in PASSAGES}
    grounded = grounded_messages([{"role": "user", "content": "How long do API tokens last?"}], [by_id[s["id"]] for s in sources])
    path_a = str(serving["store"].partition_dir("support/lora_adapter", "adapter-a"))
    assert answer.json()["choices"][0]["message"]["content"].strip() == local_answer(serving["base"], path_a, grounded, 12)
    bare = httpx.post(f"{serving['gateway'].url}/v1/chat/completions", timeout=120, headers={"Authorization": f"Bearer {support_key}"},
                      json={"model": "support", "messages": [{"role": "user", "content": "How long do API tokens last?"}],
                            "max_tokens": 12, "temperature": 0, "tuneforge": {"grounding": False}}).json()
    assert bare["tuneforge"]["sources"] == []
    assert bare["choices"][0]["message"]["content"].strip() == local_answer(serving["base"], path_a, "How long do API tokens last?", 12)
    other = ask(serving, policy_key, "policy")
    assert other.status_code == 200 and other.json()["tuneforge"]["adapter_version"] == "adapter-p"
    assert other.json()["choices"][0]["message"]["content"] != answer.json()["choices"][0]["message"]["content"]
    assert ask(serving, support_key, "policy").status_code == 404  # one model's key: the other is not there
    assert ask(serving, policy_key, "support").status_code == 404
    listed = httpx.get(f"{serving['gateway'].url}/v1/models", headers={"Authorization": f"Bearer {policy_key}"}).json()
    assert [m["id"] for m in listed["data"]] == ["policy"]
    log = RequestLog(serving["project"].definitions.resources["request_log"].database_url)
    rows = {r["id"]: r["model"] for r in log.rows(requests)}
    assert rows[answer.json()["id"]] == "support" and rows[other.json()["id"]] == "policy"


@pytest.mark.parametrize("engine", ["auto", "vllm"])
def test_the_evaluation_answers_through_the_models_own_vllm_as_served(serving, engine):
    """With a vLLM running for the base model (`tuneforge run` starts it early), the base model's rows are answered
    by it (`auto`), and with `engine: vllm` the candidate's too — loaded as a LoRA under the name the deployment
    will serve, the grounded prompt rendered by vLLM's own template — and every answer is the one transformers +
    PEFT gives for the same prompt (greedy, fp32). A candidate loaded for evaluation is not routed."""
    import pandas as pd

    from resources.evaluation.evaluator import Evaluator
    from resources.knowledge.prompt import grounded_messages

    version = f"adapter-e-{engine}"
    add_adapter(serving, "support", version, 5, True)
    questions = [("g1", "How long do API tokens last?", "API tokens expire after 90 days.", "kb-tokens"),
                 ("g2", "How many boards does the Free plan allow?", "3 boards per workspace.", "kb-boards")]
    record(serving["instance"], serving["store"], AssetKey(["support", "golden_dataset"]), "g", lambda out: pd.DataFrame(
        [{"id": i, "prompt": q, "answer": a, "source_doc_id": d} for i, q, a, d in questions]).to_parquet(out / "examples.parquet"))
    trained = [{"id": "t1", "messages": [{"role": "user", "content": "Which plans exist?"},
                                         {"role": "assistant", "content": "Free, Team and Enterprise."}]}]
    record(serving["instance"], serving["store"], AssetKey(["support", "instruction_dataset"]), "i",  # contamination
           lambda out: pd.DataFrame(trained).to_parquet(out / "examples.parquet"))
    project = serving["project"]
    if engine != "auto":
        project = project_for(project.workdir, project.models, evaluator=Evaluator(max_new_tokens=12, engine=engine),
                              vllm=serving["vllm"], gateway=serving["gateway"])
    job = project.definitions.resolve_job_def("support_evaluate_adapter")
    result = job.execute_in_process(instance=serving["instance"], raise_on_error=False,
                                    op_selection=["support__eval_report", "support__safety_report"])
    assert result.success, [e.event_specific_data.error.message for e in result.all_events if e.is_step_failure]
    events = {e.asset_key.path[-1]: e.materialization for e in result.get_asset_materialization_events()}
    served = f"vllm {serving['vllm'].base_url} (float32)"
    expected = {"base": served, "candidate": served if engine == "vllm" else "transformers (adapter merged)"}
    scores = serving["store"].read_json("support/eval_report", events["eval_report"].tags["dagster/data_version"], "scores.json")
    assert {k: scores["engine"][k] for k in expected} == expected and events["eval_report"].metadata["engine"].value["base"] == served
    assert {"base", "base+retrieval", "candidate", "candidate+retrieval"} <= set(scores["scores"])
    loaded = f"support-{version[:12]}"
    assert (loaded in {m["id"] for m in serving["vllm"].served_models()}) == (engine == "vllm")
    assert all(r["upstream"] != loaded for r in serving["gateway"].routes().values())

    table = serving["store"].read_table("support/eval_report", events["eval_report"].tags["dagster/data_version"],
                                        "examples.parquet")
    path = str(serving["store"].partition_dir("support/lora_adapter", version))
    by_text = {x: {"chunk_id": c, "title": t, "section": sec, "text": x} for c, t, sec, x in PASSAGES}
    for role, adapter in (("base", None), ("candidate", path)):
        for row in table[table["model"] == role + "+retrieval"].itertuples():
            grounded = grounded_messages([{"role": "user", "content": row.prompt}], [by_text[t] for t in row.retrieved])
            assert row.answer == local_answer(serving["base"], adapter, grounded, 12), (role, row.prompt)
        for row in table[table["model"] == role].itertuples():
            assert row.answer == local_answer(serving["base"], adapter, row.prompt, 12), (role, row.prompt)
    assert serving["store"].read_json("support/safety_report", events["safety_report"].tags["dagster/data_version"],
                                      "safety.json")["engine"] == expected["candidate"]


def test_the_served_base_model_as_teacher_end_to_end(serving, tmp_path):
    """The qa strategy with the real vLLM (serving the embedded base model) as its teacher: mechanics, not quality
    (a 135M model writes poor questions): every passage is asked, every candidate is counted, a re-run is served
    from the cache."""
    from resources.knowledge.examples import qa_examples
    from resources.knowledge.policy import KnowledgePolicy
    from resources.knowledge.teacher import TeacherModel

    chunks = [{"chunk_id": c, "doc_id": c, "kind": "text", "title": t, "section": sec, "text": f"## {sec}\n\n{x}",
               "start": 0, "batch": "b"} for c, t, sec, x in PASSAGES]
    teacher = TeacherModel(base_url=f"{serving['vllm'].base_url}/v1", model="base", api_key=serving["vllm"].api_key,
                           max_tokens=96, max_concurrency=2, cache_dir=str(tmp_path / "cache"))
    session = teacher.session()
    build = qa_examples(chunks, KnowledgePolicy(strategies=["qa"], qa_pairs_per_chunk=2), session)
    usage = session.usage.to_dict()
    judged = build.counts["qa_generated"]
    assert usage["calls"] == len(chunks) + judged and usage["completion_tokens"] > 0 and usage["failed"] == 0
    dropped = sum(v for k, v in build.counts.items() if k.startswith("qa_dropped_"))
    unanswered = sum(v for k, v in build.counts.items() if k in ("qa_dropped_malformed_json", "qa_dropped_refused",
                                                                  "qa_dropped_empty_list"))
    assert build.counts["qa_kept"] + dropped - unanswered == judged  # every pair kept or dropped with a reason
    again = teacher.session()
    assert [e["messages"] for e in qa_examples(chunks, KnowledgePolicy(strategies=["qa"], qa_pairs_per_chunk=2),
                                               again).examples] == [e["messages"] for e in build.examples]
    assert again.usage.calls == 0 and again.usage.cached == usage["calls"]


def test_the_printed_curl_works_when_pasted(serving):
    """The curl in the UI metadata, pasted into a shell where TUNEFORGE_API_KEY is set, reaches the tuned model."""
    from orchestration.workflows import add_key

    add_adapter(serving, "support", "adapter-a", 1, True)
    result = deploy(serving, "support")
    curl = endpoint_metadata(result)["curl"].value.strip("`\n ")
    key = add_key(serving["project"], "curl-user", ["support"])
    out = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=120,
                         env={"PATH": os.environ["PATH"], "TUNEFORGE_API_KEY": key})
    body = json.loads(out.stdout)
    assert body["model"] == "support" and body["choices"][0]["message"]["content"], out.stdout
    assert "$TUNEFORGE_API_KEY" in curl and key not in curl and shlex.split(curl)[0] == "curl"


def test_roll_back_to_an_earlier_adapter_by_version(serving):
    from orchestration.workflows import add_key

    add_adapter(serving, "support", "adapter-a", 1, True)
    assert deploy(serving, "support").success
    add_adapter(serving, "support", "adapter-c", 3, True)
    assert deploy(serving, "support").success
    key = add_key(serving["project"], "rollback-user", ["support"])
    assert ask(serving, key, "support").json()["tuneforge"]["adapter_version"] == "adapter-c"
    rolled = deploy(serving, "support", adapter_version="adapter-a")
    assert rolled.success and endpoint_metadata(rolled)["rollback"].value is True
    assert ask(serving, key, "support").json()["tuneforge"]["adapter_version"] == "adapter-a"
    champion = serving["instance"].get_latest_materialization_event(AssetKey(["support", "champion"]))
    assert champion.asset_materialization.metadata["adapter_version"].value == "adapter-a"


def test_an_adapter_the_gate_did_not_pass_is_not_deployed(serving):
    add_adapter(serving, "support", "adapter-bad", 4, False)
    result = deploy(serving, "support")
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "its promotion decision is to block" in failure.event_specific_data.error.message


def test_a_chat_template_mismatch_fails_loudly(serving, tmp_path):
    import shutil

    from resources.serving.deploy import check_template_and_eos
    from resources.serving.vllm_server import ServingError

    serving["vllm"].ensure_running(serving["base"], "base")
    tampered = tmp_path / "tampered"
    random_adapter(serving["base"], tmp_path / "adapter", 5)
    shutil.copytree(tmp_path / "adapter", tampered)
    config = json.loads((tampered / "tokenizer_config.json").read_text())
    template_file = tampered / "chat_template.jinja"
    if template_file.exists():
        template_file.write_text("{% for m in messages %}### {{ m['content'] }}\n{% endfor %}")
    else:
        config["chat_template"] = "{% for m in messages %}### {{ m['content'] }}\n{% endfor %}"
        (tampered / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ServingError, match="chat template mismatch"):
        check_template_and_eos(serving["vllm"], str(tampered), serving["base"])


TRAIN_WORKER = ROOT / "tests" / "workers" / "train_adapter.py"


def test_a_new_file_retrains_and_the_run_deploys_what_it_trained_while_another_run_trains(tmp_path, smol_model_path):
    """Drop a file in the inbox, tick the inbox sensor, ingest and build the datasets, tick the retraining sensor and
    run what it requests (train the real SmolLM2 for 2 steps -> evaluate -> gate -> deploy on vLLM -> audit). Right
    after that run's lora_adapter step, another run (its own process) trains a newer adapter. The first run still
    evaluates, gates and deploys its own adapter — and Dagster's recorded inputs say so — and the lineage of the
    endpoint names the dropped file's sha256."""
    import hashlib
    import shutil

    from dagster import AssetSelection, Definitions, HookContext, build_sensor_context, define_asset_job, success_hook

    from orchestration import workflows
    from resources.evaluation.evaluator import Evaluator
    from resources.governance.lineage import LineageReader, source_files, to_markdown

    golden = tmp_path / "golden.jsonl"  # the loop, not the scores: six of the sample's golden questions
    golden.write_text("".join((SAMPLE / "support" / "golden.jsonl").read_text().splitlines(keepends=True)[:6]))
    spec = sample_model("support", tmp_path / "data", copy_data=False, golden=[str(golden)],
                        # 2 training steps cannot be expected to beat the base model: this test is about the loop,
                        # so the policy keeps only the safety limits (the gate's own tests cover blocking)
                        promotion={"min_gain_over_base": -1.0, "max_runaway_rate": 1.0, "require_significant_gain": False,
                                   "decide_on_insufficient_evidence": True, "max_hallucination_increase": 1.0,
                                   "max_contamination": 1.0},
                        training={"max_steps": 2, "eval_steps": 1, "max_length": 256}, safety={"red_team": None,
                                                                                           "canaries": str(SAMPLE / "canaries.json")})
    dropped = tmp_path / "data" / "support" / "inbox" / "support_qa.csv"
    shutil.copy(SAMPLE / "support" / "inbox" / "support_qa.csv", dropped)
    sha = hashlib.sha256(dropped.read_bytes()).hexdigest()
    servers = stack(tmp_path)
    project = project_for(tmp_path, [spec], evaluator=Evaluator(max_new_tokens=16), **servers)
    instance = workflows.open_instance(project)
    other_runs = []

    @success_hook(name="another_run_trains_meanwhile")
    def another_run(context: HookContext):
        if context.op.name == "support__lora_adapter":  # after this run's adapter, before its evaluation
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            done = subprocess.run([sys.executable, str(TRAIN_WORKER), str(tmp_path), spec.model_dump_json()],
                                  capture_output=True, text=True, env=env, timeout=900)
            other_runs.append(done)

    try:
        batches = workflows.ingest(project, instance, spec, lambda _: None)
        assert list(batches) == ["support_qa.csv"] and batches["support_qa.csv"].success
        workflows.run_job(project, instance, spec, "build_datasets")[0].raise_for_failure()
        sensor = project.definitions.resolve_sensor_def("support_retraining_sensor")
        with build_sensor_context(instance=instance) as context:
            result = sensor(context)
        [request] = result.run_requests
        assert request.run_key.startswith("dataset@")

        retrain = project.definitions.resolve_job_def("support_retrain")
        racing = define_asset_job("support_retrain_racing", selection=AssetSelection.assets(*retrain.asset_layer.executable_asset_keys),
                                  hooks={another_run})
        defs = Definitions.merge(project.definitions, Definitions(jobs=[racing]))
        run = defs.resolve_job_def("support_retrain_racing").execute_in_process(
            instance=instance, raise_on_error=False,
            tags={**request.tags, "dagster/sensor_name": sensor.name, "dagster/run_key": request.run_key})
        assert run.success, [e.event_specific_data.error.message for e in run.all_events if e.is_step_failure]
        [other] = other_runs
        trained = [line.split()[1] for line in other.stdout.splitlines() if line.startswith("TRAINED ")]
        assert other.returncode == 0 and trained, other.stderr[-3000:]

        events = {e.asset_key.path[-1]: e for e in run.get_asset_materialization_events()}
        mine = events["lora_adapter"].materialization.tags["dagster/data_version"]
        newer = trained[-1]
        latest_adapter = instance.get_latest_materialization_event(AssetKey(["support", "lora_adapter"]))
        assert newer != mine and latest_adapter.asset_materialization.tags["dagster/data_version"] == newer
        for asset in ("eval_report", "safety_report"):
            m = events[asset].materialization
            assert m.metadata["adapter_version"].value == mine, asset  # evaluated what it trained
            assert m.tags["dagster/input_data_version/support/lora_adapter"] == mine  # and Dagster records so
            assert m.metadata["inputs"].value["support/lora_adapter"]["data_version"] == mine
        assert events["promotion_decision"].materialization.metadata["adapter_version"].value == mine
        assert endpoint_metadata(run)["adapter_version"].value == mine  # deployed what it trained
        assert servers["gateway"].routes()["support"]["adapter_version"] == mine

        with build_sensor_context(instance=instance, cursor=result.cursor) as context:
            assert not sensor(context).run_requests  # trained on this version: fires once

        report = LineageReader(instance).report(model="support")
        files = source_files(report)
        assert [f["sha256"] for f in files] == [sha] and files[0]["path"] == "support_qa.csv"
        assert report["batches"][0]["raw_documents"]["triggered_by"].startswith("sensor support_inbox_sensor")
        assert report["adapter"]["data_version"] == mine and report["adapter"]["triggered_by"].startswith("sensor support_retraining_sensor")
        assert report["promotion_gate"]["passed"] and report["promotion_decision"]["metadata"]["decision"] == "promote"
        assert report["base_model"]["metadata"]["model"] == "embedded:SmolLM2-135M-Instruct"  # the base model is named
        assert report["base_model"]["metadata"]["weights_sha256"] == report["adapter"]["metadata"]["base_model_sha256"]
        assert sha in to_markdown(report) and "- model: embedded:SmolLM2-135M-Instruct" in to_markdown(report)
        assert sha in events["governance_audit"].materialization.metadata["raw_file_sha256"].value
        adapter_folder = project.definitions.resources["store"].partition_dir("support/lora_adapter", mine)
        assert (adapter_folder / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
        assert events["lora_adapter"].materialization.metadata["loss_chart"].value.startswith("![loss curve](data:image/png")
        assert events["eval_report"].materialization.metadata["scores_chart"].value.startswith("![scores by metric](data:image/png")
    finally:
        servers["gateway"].stop()
        servers["vllm"].stop_all()
        instance.dispose()


DEPLOY_WORKER = ROOT / "tests" / "workers" / "deploy_adapter.py"


def test_a_deployment_killed_mid_way_reruns_to_a_working_endpoint(serving, tmp_path):
    """kill -9 the run worker while vLLM is starting for a deployment; the re-run adopts the server that was
    starting (no second vLLM on the port), finishes the deployment, and the endpoint answers."""
    from resources.serving.gateway.keys import KeyRing
    from resources.serving.gateway_server import GatewayServer
    from resources.serving.vllm_server import VllmServer

    add_adapter(serving, "support", "adapter-a", 1, True)
    state = tmp_path / "state"
    vllm = {"python": str(ROOT / ".venv-vllm" / "bin" / "python"), "port": free_port(), "state_dir": str(state),
            "kv_cache_gib": 1, "max_model_len": 1024}
    gateway = {"port": free_port(), "state_dir": str(state)}
    project = serving["project"]
    cfg = json.dumps({"workdir": str(project.workdir), "spec": project.model("support").model_dump(mode="json"),
                      "vllm": vllm, "gateway": gateway})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen([sys.executable, str(DEPLOY_WORKER), cfg], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, start_new_session=True, env=env)
    pid_file = state / f"vllm-{vllm['port']}.pid"
    deadline = time.time() + 120
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert pid_file.exists(), "the deployment never started vLLM"
    os.killpg(worker.pid, signal.SIGKILL)  # the run worker dies; vLLM (its own session) keeps starting
    worker.wait()
    orphan = int(pid_file.read_text())
    try:
        rerun = subprocess.run([sys.executable, str(DEPLOY_WORKER), cfg], capture_output=True, text=True, env=env)
        assert rerun.stdout.strip().endswith("OK"), rerun.stderr[-3000:]
        assert int(pid_file.read_text()) == orphan  # the server that was starting was adopted, not duplicated
        ring = KeyRing.load(GatewayServer(**gateway).keys_file)
        key = ring.add("killed-tests", ["support"])
        ring.save(GatewayServer(**gateway).keys_file)
        answer = httpx.post(f"http://127.0.0.1:{gateway['port']}/v1/chat/completions", timeout=120,
                            headers={"Authorization": f"Bearer {key}"},
                            json={"model": "support", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
        assert answer.status_code == 200 and answer.json()["tuneforge"]["adapter_version"] == "adapter-a"
    finally:
        GatewayServer(**gateway).stop()
        VllmServer(**vllm).stop_all()


def test_a_run_that_deploys_nothing_leaves_no_vllm_running(tmp_path, smol_model_path):
    """`tuneforge run` starts the vLLM it will deploy to early, in the background; when no model reaches
    deployment (here: an empty inbox, so no datasets) it stops that server again instead of leaving it running."""
    from orchestration import workflows

    servers = stack(tmp_path)
    project = project_for(tmp_path, [sample_model("support", tmp_path / "data", copy_data=False)], **servers)
    said: list[str] = []
    result = workflows.run_project(project, until="deployment", log=said.append)
    assert any("starting vLLM" in line and "in the background" in line for line in said)
    [run] = result.models
    assert run.endpoint is None and run.error  # the empty inbox stopped it before training, and says so
    assert servers["vllm"]._running_pid() is None and not servers["vllm"].healthy()


def test_training_evaluation_and_the_served_endpoint_give_the_model_the_same_token_ids(serving, tmp_path, redactor):
    """One grounded prompt, three consumers: the token ids the training collator makes of a raft example (TRL's
    SFTTrainer as tuneforge builds it), the ids the evaluator generates from, and what vLLM's /tokenize makes of
    the messages the gateway sends upstream for the same question (retrieved from the same knowledge index)."""
    import pandas as pd

    from resources.datasets.export import save_splits
    from resources.evaluation.generation import prompt_text
    from resources.knowledge.prompt import grounded_messages
    from resources.retrieval.index import KnowledgeIndexer
    from resources.safety.guards import Guards
    from resources.safety.probes import load_lexicon
    from resources.serving.deploy import BASE_ALIAS
    from resources.serving.gateway.app import GatewaySettings, create_app
    from resources.serving.gateway.keys import KeyRing
    from resources.training.config import FineTuneConfig
    from resources.training.sft_main import _datasets, _load, _trainer
    from servers.openai_server import build_app, serve
    from transformers import AutoTokenizer

    question, k = "How long do API tokens last?", 2
    index_dir = str(serving["store"].partition_dir("support/knowledge_index", "i"))

    # the gateway: retrieval on, what it sends upstream captured by a scripted model server
    keys = KeyRing()
    key = keys.add("parity", ["support"], requests_per_minute=1000)
    keys.save(tmp_path / "keys.yaml")
    (tmp_path / "routes.json").write_text(json.dumps({"models": {"support": {
        "upstream": "echo", "adapter_version": "v1", "knowledge_index_dir": index_dir, "retrieval": True,
        "retrieval_passages": k}}}))
    upstream = build_app()
    guards = Guards(redactor.engine(), [], load_lexicon(ROOT / "resources" / "safety" / "toxicity_lexicon.txt"))
    with serve(upstream) as upstream_url:
        settings = GatewaySettings(upstream_url=upstream_url.removesuffix("/v1"), routes_file=str(tmp_path / "routes.json"),
                                   keys_file=str(tmp_path / "keys.yaml"), database_url=f"sqlite:///{tmp_path / 'r.db'}")
        with serve(create_app(settings, guards=guards), suffix="") as url:
            reply = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=60,
                               json={"model": "support", "messages": [{"role": "user", "content": question}]})
    assert reply.status_code == 200, reply.text
    sent = upstream.state.bodies[-1]["messages"]
    vllm = serving["vllm"].for_base(serving["base"])
    vllm.ensure_running(serving["base"], served_name=BASE_ALIAS)  # the one the fixture started (or starts it)
    served_ids = vllm.chat_template_ids(BASE_ALIAS, sent)

    # the evaluator: the same passages from the same index, the same grounded prompt, rendered as it generates
    passages = KnowledgeIndexer().load(index_dir).passages([question], k)[0]
    messages = grounded_messages([{"role": "user", "content": question}], passages)
    assert messages == sent  # the gateway and the evaluation build one prompt
    tokenizer = AutoTokenizer.from_pretrained(serving["base"])
    eval_ids = tokenizer(prompt_text(tokenizer, messages), add_special_tokens=False)["input_ids"]

    # training: a raft example of that prompt through the collator tuneforge trains with
    save_splits(pd.DataFrame([{"id": "r1", "split": split, "source_doc_id": "d", "batch": "b", "origin": "knowledge:raft",
                               "messages": messages + [{"role": "assistant", "content": "They expire after 90 days [1]."}]}
                              for split in ("train", "validation")]),
                ["train", "validation"], tmp_path / "ds", {"source_doc_id": "string", "batch": "string", "origin": "string"})
    config = FineTuneConfig(max_steps=1, packing=False)
    train_ds, eval_ds = _datasets(str(tmp_path / "ds"), config)
    train_tokenizer, model = _load(serving["base"], config, "fp32", "sdpa")
    trainer = _trainer(config, model, train_tokenizer, train_ds, eval_ds, tmp_path / "work", False, lambda _: None, "fp32")
    row = trainer.train_dataset[0]
    # the prompt the model reads: the tokens before the first one it learns from (label -100: no loss)
    train_ids = row["input_ids"][:next(i for i, label in enumerate(row["labels"]) if label != -100)]

    assert train_ids == eval_ids == served_ids, (len(train_ids), len(eval_ids), len(served_ids))
    assert "API tokens expire after 90 days" in tokenizer.decode(served_ids)  # the retrieved passage is in it
