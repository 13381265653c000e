"""Fine-tuning for real: TRL in its own process through Dagster Pipes, checkpoint resume after a
kill -9, two-process DDP on CPU, and the real SmolLM2 weights."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from dagster import AssetKey

from helpers import ROOT, project_for, record, sample_model
from resources.training.fine_tuner import FineTuner
from resources.training.merge import merge_adapter

pytestmark = pytest.mark.slow

QUICK = {"max_steps": 4, "eval_steps": 2, "logging_steps": 1, "max_length": 128, "gradient_accumulation_steps": 2}


def training_project(tmp_path, tiny_model, tiny_dataset, instance, **training):
    """A model on the tiny base whose instruction dataset (the tiny one) is recorded as materialized."""
    spec = sample_model("support", tmp_path / "data", copy_data=False, base_model=str(tiny_model),
                        training={**QUICK, **training}, serving={"serve_merged": True})
    project = project_for(tmp_path, [spec], fine_tuner=FineTuner(work_dir=str(tmp_path / "work")))
    record(instance, project.definitions.resources["store"], AssetKey(["support", "instruction_dataset"]), "v-test",
           lambda out: shutil.copytree(tiny_dataset, out / "hf"))
    return project


def train_job(project, instance, selection=None, **kwargs):
    job = project.definitions.resolve_job_def("support_train_adapter")
    return job.execute_in_process(instance=instance, raise_on_error=False, op_selection=selection, **kwargs)


def spec_for(tmp_path, tiny_model, tiny_dataset, **config):
    return {
        "config": {**QUICK, **config},
        "base_model_path": str(tiny_model),
        "dataset_path": str(tiny_dataset),
        "output_dir": str(tmp_path / "out" / "adapter"),
        "manifest": {"version": "v1", "dataset_version": "v-test", "base_model": {"weights_sha256": "0" * 64}},
    }


def run_trainer(tuner: FineTuner, spec: dict, work: Path, **popen):
    work.mkdir(parents=True, exist_ok=True)
    spec = {**spec, "work_dir": str(work), "threads": tuner.threads()}
    (work / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": str(tuner.threads())}
    return subprocess.Popen(tuner.command(work / "spec.json"), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def manifest_of(output: Path) -> dict:
    return json.loads((output / "tuneforge_manifest.json").read_text())


def test_lora_adapter_through_dagster_pipes(tmp_path, tiny_model, tiny_dataset, dagster_instance):
    project = training_project(tmp_path, tiny_model, tiny_dataset, dagster_instance)
    store = project.definitions.resources["store"]
    result = train_job(project, dagster_instance)
    assert result.success
    metadata = {e.materialization.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()}
    adapter_meta = metadata["lora_adapter"]
    assert adapter_meta["steps"].value == 4 and adapter_meta["reused"].value is False
    assert "| step | train loss | validation loss |" in adapter_meta["loss_curve"].value
    assert adapter_meta["loss_chart"].value.startswith("![loss curve](data:image/png;base64,")  # a picture in the UI
    assert adapter_meta["final_eval_loss"].value > 0 and adapter_meta["tokens_per_s"].value > 0
    assert adapter_meta["wall_time_s"].value > 0 and adapter_meta["peak_rss_mb"].value > 100  # a torch process
    assert 0.5 < adapter_meta["packing_efficiency"].value <= 1
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "adapter_generalises"
    # the check reads what was trained: the same losses, and its verdict follows from them
    assert check.metadata["final_eval_loss"].value == adapter_meta["final_eval_loss"].value
    assert check.metadata["beats_base"].value == (adapter_meta["final_eval_loss"].value < adapter_meta["base_eval_loss"].value)

    version = adapter_meta["artifact"].value
    output = store.partition_dir("support/lora_adapter", version)
    assert (output / "adapter_config.json").is_file() and (output / "adapter_model.safetensors").is_file()
    assert (output / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"  # the same picture beside the artifact
    manifest = manifest_of(output)
    assert manifest["dataset_version"] == "v-test" and manifest["model"] == "support"
    assert manifest["base_model"]["weights_sha256"] == metadata["base_model"]["weights_sha256"].value
    assert {"torch", "transformers", "peft", "trl"} <= set(manifest["libraries"])
    assert manifest["config_hash"] and manifest["seed"] == 42 and manifest["code"]["asset_code_version"] == "1"
    assert not (tmp_path / "work" / version).exists()  # checkpoints removed once the artifact is saved
    merged = store.partition_dir("support/merged_model", metadata["merged_model"]["artifact"].value)
    assert (merged / "config.json").is_file() and json.loads((merged / "merged.json").read_text())["adapter_version"] == version

    logs = [e.user_message for e in dagster_instance.all_logs(result.run_id)]
    assert any("step 2/4" in m for m in logs), "trainer progress must stream into the Dagster run"

    again = train_job(project, dagster_instance, selection=["support__lora_adapter"])
    [event] = again.get_asset_materialization_events()
    assert event.materialization.metadata["reused"].value is True  # same config + data + base: no retraining


def test_killed_training_resumes_from_its_last_checkpoint(tmp_path, tiny_model, tiny_dataset):
    tuner, work = FineTuner(), tmp_path / "work"
    spec = spec_for(tmp_path, tiny_model, tiny_dataset, max_steps=12, eval_steps=3, early_stopping_patience=0)
    process = run_trainer(tuner, spec, work, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and not list(work.glob("checkpoint-*/trainer_state.json")):
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # kill -9, mid-training
    process.wait()
    done = sorted(int(p.parent.name.split("-")[1]) for p in work.glob("checkpoint-*/trainer_state.json"))
    assert done and done[-1] < 12 and not Path(spec["output_dir"]).exists()

    resumed = run_trainer(tuner, spec, work)
    output, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, output[-3000:]
    stats = manifest_of(Path(spec["output_dir"]))["stats"]
    resumed_at = int(stats["resumed_from"].split("-")[1])
    assert resumed_at >= done[-1] and stats["steps"] == 12
    # the loss curve covers the whole run, from the base model's loss at step 0, not only the resumed part
    history = json.loads((Path(spec["output_dir"]) / "training_history.json").read_text())
    assert [r["step"] for r in history if "loss" in r] == list(range(1, 13))
    assert [r["step"] for r in history if "eval_loss" in r] == [0, 3, 6, 9, 12]  # base, every 3 steps (the last is the final)
    # tokens/s counts the tokens this process trained on (from the checkpoint on) over its own wall time
    trained = stats["train_tokens_per_epoch"] * stats["epochs"] * (12 - resumed_at) / 12
    assert abs(stats["tokens_per_s"] * stats["wall_time_s"] - trained) <= 0.1 * trained


def test_a_trainer_killed_under_dagster_is_retried_and_resumes(tmp_path, tiny_model, tiny_dataset, dagster_instance):
    """kill -9 of the trainer process while the asset materializes: the asset's retry policy runs it again in the
    same Dagster run, and the retry resumes from the last checkpoint instead of starting over."""
    import threading

    project = training_project(tmp_path, tiny_model, tiny_dataset, dagster_instance, max_steps=8, eval_steps=2,
                               early_stopping_patience=0)
    work = tmp_path / "work"
    assert train_job(project, dagster_instance, selection=["support__base_model"]).success
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(result=train_job(
        project, dagster_instance, selection=["support__lora_adapter"])))
    thread.start()

    def trainer_pids():
        pids = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                args = cmdline.read_bytes().split(b"\0")
            except OSError:
                continue
            if b"resources.training.sft_main" in args and any(str(work).encode() in a for a in args):
                pids.append(int(cmdline.parent.name))
        return pids

    deadline = time.time() + 600
    while time.time() < deadline and not list(work.glob("*/checkpoint-*/trainer_state.json")):
        assert thread.is_alive(), "the run ended before its first checkpoint"
        time.sleep(0.2)
    [pid] = trainer_pids()
    os.kill(pid, signal.SIGKILL)  # kill -9, mid-training
    thread.join(timeout=900)

    result = outcome["result"]
    assert result.success
    [event] = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["resumed_from"].value.startswith("checkpoint-") and metadata["steps"].value == 8
    logs = [e.user_message for e in dagster_instance.all_logs(result.run_id)]
    assert any("resuming from checkpoint-" in m for m in logs)


def test_early_stopping_ends_a_diverging_run_and_keeps_the_best_checkpoint(tmp_path, tiny_model, tiny_dataset):
    """A learning rate far too high makes validation loss rise: training stops after `early_stopping_patience`
    evaluations without improvement, well before its epochs are done, and the best checkpoint is what is saved."""
    from resources.training.sft_main import train

    spec = {**spec_for(tmp_path, tiny_model, tiny_dataset, max_steps=-1, num_train_epochs=20, eval_steps=1,
                       early_stopping_patience=2, learning_rate=0.3, warmup_ratio=0.0, lr_scheduler="constant"),
            "work_dir": str(tmp_path / "w"), "threads": 1}
    train(spec, log=lambda _: None)
    stats = manifest_of(Path(spec["output_dir"]))["stats"]
    history = json.loads((Path(spec["output_dir"]) / "training_history.json").read_text())
    evals = [r["eval_loss"] for r in history if "eval_loss" in r][1:]  # during training (not the base model)
    assert stats["early_stopped"] and stats["epochs"] < 20
    best = evals.index(min(evals))
    assert len(evals) == best + 1 + 2  # stopped after two evaluations without improvement
    assert stats["final_eval_loss"] == pytest.approx(min(evals), rel=1e-4)  # the best checkpoint was kept


def test_two_process_ddp_on_cpu(tmp_path, tiny_model, tiny_dataset):
    tuner = FineTuner(launcher="torchrun", num_processes=2)
    # fp32 on CPU: attention="auto" attends each packed example on its own
    spec = spec_for(tmp_path, tiny_model, tiny_dataset, max_steps=3, eval_steps=3, precision="fp32")
    process = run_trainer(tuner, spec, tmp_path / "work")
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    stats = manifest_of(Path(spec["output_dir"]))["stats"]
    assert stats["world_size"] == 2 and stats["steps"] == 3
    assert stats["precision"] == "fp32" and stats["attention"] == "per_example_sdpa"
    assert "world_size=2" in output


def test_accelerate_launcher_trains_and_refuses_sharding_without_gpus(tmp_path, tiny_model, tiny_dataset):
    """launcher='accelerate' for real: `accelerate launch` with the shipped CPU config trains and saves the adapter;
    with the FSDP config on this GPU-less machine the trainer stops at once saying why."""
    from helpers import ROOT

    tuner = FineTuner(launcher="accelerate", accelerate_config=str(ROOT / "config" / "training" / "cpu.yaml"))
    spec = spec_for(tmp_path, tiny_model, tiny_dataset, max_steps=2, eval_steps=2, precision="fp32")
    process = run_trainer(tuner, spec, tmp_path / "work")
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    assert (Path(spec["output_dir"]) / "adapter_model.safetensors").is_file()
    assert manifest_of(Path(spec["output_dir"]))["stats"]["steps"] == 2

    tuner = FineTuner(launcher="accelerate", accelerate_config=str(ROOT / "config" / "training" / "fsdp.yaml"))
    spec = spec_for(tmp_path / "fsdp", tiny_model, tiny_dataset, max_steps=2)
    process = run_trainer(tuner, spec, tmp_path / "work-fsdp")
    output, _ = process.communicate(timeout=900)
    assert process.returncode != 0
    assert "FSDP shards the model over GPUs; this machine has none" in output
    assert not Path(spec["output_dir"]).exists()


def test_qlora_without_cuda_fails_with_a_clear_message(tmp_path, tiny_model, tiny_dataset):
    from resources.training.sft_main import train

    spec = {**spec_for(tmp_path, tiny_model, tiny_dataset, method="qlora"), "work_dir": str(tmp_path / "w")}
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        train(spec, log=lambda _: None)
    spec = {**spec_for(tmp_path, tiny_model, tiny_dataset, attention="flash_attention_2"), "work_dir": str(tmp_path / "w")}
    with pytest.raises(RuntimeError, match="'flash_attention_2' needs a CUDA GPU"):
        train(spec, log=lambda _: None)


def test_qlora_trains_adapters_over_a_4bit_base(tmp_path, tiny_quantizable_model, tiny_dataset, monkeypatch):
    """QLoRA's own path for real -- the base loaded in 4-bit NF4 by bitsandbytes, peft's
    prepare_model_for_kbit_training and Linear4bit adapters, TRL training, the adapter saved -- run on
    bitsandbytes' CPU backend. The one fake: the CUDA requirement is lifted (no GPU here; tuneforge itself
    refuses qlora on a CPU, as the test above shows)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from resources.training import sft_main

    tiny_model = tiny_quantizable_model

    monkeypatch.setattr(sft_main, "_check_requirements", lambda config, cuda: None)
    spec = {**spec_for(tmp_path, tiny_model, tiny_dataset, method="qlora", max_steps=6, eval_steps=3, precision="fp32",
                       learning_rate=2e-3), "work_dir": str(tmp_path / "w"), "threads": 1}
    result = sft_main.train(spec, log=lambda _: None)
    assert result["metadata"]["four_bit_layers"]["raw_value"] == 2 * 7  # q k v o gate up down, in both layers
    stats = manifest_of(Path(spec["output_dir"]))["stats"]
    assert stats["four_bit_layers"] == 14 and stats["fused_lora_layers"] == 0  # a quantized base takes peft's forward
    assert stats["final_eval_loss"] < stats["base_eval_loss"]

    # a standard PEFT adapter: it loads onto the full-precision base (serving) and merges into it (merged_model)
    merged = merge_adapter(str(tiny_model), spec["output_dir"], tmp_path / "merged", dtype="float32")
    ids = torch.tensor([[1, 42, 99, 7, 300]])
    with torch.no_grad():
        plain = AutoModelForCausalLM.from_pretrained(tiny_model).eval()(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model)
        via_adapter = PeftModel.from_pretrained(base, spec["output_dir"]).eval()(input_ids=ids).logits
        via_merged = AutoModelForCausalLM.from_pretrained(merged).eval()(input_ids=ids).logits
    assert not torch.allclose(plain, via_adapter, atol=1e-4)
    assert torch.allclose(via_adapter, via_merged, atol=1e-4)


def test_merged_model_matches_the_adapter(tmp_path, tiny_model, tiny_dataset):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    spec = spec_for(tmp_path, tiny_model, tiny_dataset, max_steps=2, learning_rate=0.05)
    process = run_trainer(FineTuner(), spec, tmp_path / "work")
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    merged = merge_adapter(str(tiny_model), spec["output_dir"], tmp_path / "merged", dtype="float32")
    ids = torch.tensor([[1, 42, 99, 7, 300]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(tiny_model)
        via_adapter = PeftModel.from_pretrained(base, spec["output_dir"]).eval()(input_ids=ids).logits
        via_merged = AutoModelForCausalLM.from_pretrained(merged).eval()(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_model).eval()(input_ids=ids).logits
    assert torch.allclose(via_adapter, via_merged, atol=1e-4)
    assert not torch.allclose(plain, via_merged, atol=1e-4)


def test_real_smollm2_adapter_trains_reloads_and_changes_output(tmp_path, tiny_dataset):
    """The embedded default model, for real: a few steps, a PEFT adapter that reloads and changes the output."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from resources.models.base_model import BaseModelSource

    resolved = BaseModelSource().resolve()
    assert resolved.parameters > 100_000_000 and resolved.eos_token == "<|im_end|>"
    spec = spec_for(tmp_path, resolved.path, tiny_dataset, max_steps=2, eval_steps=2, learning_rate=1e-3)
    spec["manifest"]["base_model"]["weights_sha256"] = resolved.weights_sha256
    process = run_trainer(FineTuner(), spec, tmp_path / "work")
    output, _ = process.communicate(timeout=1200)
    assert process.returncode == 0, output[-3000:]
    stats = manifest_of(Path(spec["output_dir"]))["stats"]
    assert stats["final_eval_loss"] < stats["base_eval_loss"]

    ids = torch.tensor([[1, 4093, 314, 253, 1345, 2]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(resolved.path).eval()
        before = base(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(base, spec["output_dir"]).eval()
        after = tuned(input_ids=ids).logits
    assert not torch.allclose(before, after, atol=1e-3)


def test_full_fine_tune_saves_a_complete_checkpoint(tmp_path, tiny_model, tiny_dataset):
    from transformers import AutoModelForCausalLM

    spec = spec_for(tmp_path, tiny_model, tiny_dataset, method="full", max_steps=2, learning_rate=1e-3, target_modules=[])
    process = run_trainer(FineTuner(), spec, tmp_path / "work")
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    out = Path(spec["output_dir"])
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    tuned = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    changed = [n for (n, a), (_, b) in zip(base.named_parameters(), tuned.named_parameters()) if not torch.equal(a, b)]
    assert len(changed) > 5  # all weights train, not a handful of adapter matrices
    assert json.loads((out / "tuneforge_config.json").read_text())["method"] == "full"

    # merged_model of a full fine-tune: the tuned checkpoint in 16 bits; evaluation loads the checkpoint itself
    from resources.evaluation.generation import load_for_generation

    merged = AutoModelForCausalLM.from_pretrained(merge_adapter(str(tiny_model), str(out), tmp_path / "merged"))
    assert {p.dtype for p in merged.parameters()} == {torch.bfloat16}
    assert all(torch.equal(a.to(torch.bfloat16), b) for a, b in zip(tuned.parameters(), merged.parameters()))
    _, evaluated = load_for_generation(str(tiny_model), str(out))
    assert all(torch.equal(a, b) for a, b in zip(tuned.parameters(), evaluated.parameters()))


def test_the_gpu_check_runs_every_step_and_records_it(tmp_path, smol_tokenizer):
    """`make gpu-check` is for a GPU machine (none here); with --allow-cpu the same script runs every step on the
    CPU, on the SmolLM2-shaped stand-in it uses where the GGUF cannot be carried: LoRA, full, merge, generation
    pass and are timed, QLoRA is skipped (it needs CUDA), and the JSON says so. Its working folder (about 1 GB of
    models and checkpoints) is gone afterwards."""
    smol_tokenizer.save_pretrained(tmp_path / "tokenizer")
    out, scratch = tmp_path / "gpu_check.json", tmp_path / "scratch"
    scratch.mkdir()
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "run", "--allow-cpu", "--stand-in",
                           "--tokenizer", str(tmp_path / "tokenizer"), "--steps", "2", "--layers", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    steps = result["steps"]
    assert result["passed"] and result["device"].startswith("cpu") and "random weights" in result["model"]
    assert all(steps[s]["passed"] for s in ("lora", "full", "merge", "generate")), steps
    assert steps["qlora"]["passed"] is None and "CUDA" in steps["qlora"]["skipped"]
    assert steps["lora"]["steps"] == 2 and steps["lora"]["tokens_per_s"] > 0 and steps["generate"]["questions"] > 0
    assert not any(scratch.iterdir()), list(scratch.iterdir())  # nothing left behind


def test_a_step_cap_shortens_an_epoch_plan_and_leaves_a_shorter_one(tmp_path, tiny_model, tiny_dataset):
    """`tuneforge run --max-steps N` is a cap: a block planning 5 epochs trains N steps; a block planning fewer steps
    than N is left as it is."""
    tuner = FineTuner()
    capped = spec_for(tmp_path / "a", tiny_model, tiny_dataset, max_steps=-1, num_train_epochs=5, step_cap=2,
                      precision="fp32")
    process = run_trainer(tuner, capped, tmp_path / "a" / "work")
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    assert "step cap: 2 of the " in output and manifest_of(Path(capped["output_dir"]))["stats"]["steps"] == 2
    within = spec_for(tmp_path / "b", tiny_model, tiny_dataset, max_steps=2, step_cap=50, precision="fp32")
    process = run_trainer(tuner, within, tmp_path / "b" / "work")
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    assert "step cap" not in output and manifest_of(Path(within["output_dir"]))["stats"]["steps"] == 2
