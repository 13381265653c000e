"""The training process: supervised fine-tuning with TRL's SFTTrainer (transformers + peft + accelerate).

Launched by `FineTuner` through Dagster Pipes as its own process — `python -m resources.training.sft_main`
for one process, `torchrun --nproc_per_node N -m resources.training.sft_main` for DDP — or run by hand
with the same spec file. Rank 0 streams progress into the Dagster run and reports the materialization.

    python -m resources.training.sft_main --spec spec.json

The spec (JSON) holds `config` (FineTuneConfig fields), `base_model_path`, `dataset_path` (a DatasetDict
with train/validation `messages`), `output_dir` (final artifact, written atomically), `work_dir`
(checkpoints: a killed run resumes from the last one), `threads` and `manifest` (lineage to save).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from resources.training.history import history as _history


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True)
    spec = json.loads(Path(parser.parse_args(argv).spec).read_text())

    from resources.offline import apply_offline_defaults

    apply_offline_defaults()
    rank = int(os.environ.get("RANK", "0"))
    with ExitStack() as stack:
        pipes = _open_pipes(stack) if rank == 0 else None
        log = _logger(pipes, rank)
        result = train(spec, log)
        if pipes is not None:
            pipes.report_asset_materialization(metadata=result["metadata"], data_version=result["data_version"])
    return 0


def train(spec: dict, log) -> dict:
    import torch

    from resources.training.config import FineTuneConfig
    from resources.training.fused_lora import fused_layers

    config = FineTuneConfig(**spec["config"])
    torch.set_num_threads(int(spec.get("threads") or os.cpu_count() or 1))
    cuda = torch.cuda.is_available()
    _check_requirements(config, cuda)
    _check_sharding(cuda)

    output_dir, work_dir = Path(spec["output_dir"]), Path(spec["work_dir"])
    work_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = _last_checkpoint(work_dir)
    log(f"{'resuming from ' + checkpoint.name if checkpoint else 'starting'}: method={config.method}, "
        f"threads={torch.get_num_threads()}, world_size={os.environ.get('WORLD_SIZE', '1')}")

    precision = config.resolved_precision(cuda)
    tokenizer, model = _load(spec["base_model_path"], config, precision, config.resolved_attention(cuda))
    attention = model.config._attn_implementation  # as loaded (a PeftModel shares its base model's config)
    fused = fused_layers(model, torch.bfloat16 if precision == "bf16" else None)
    four_bit = _four_bit_layers(model) if config.method == "qlora" else 0
    log(f"precision: {precision} (requested {config.precision}), attention: {attention}, "
        f"fused LoRA layers: {fused}" + (f", 4-bit base layers: {four_bit}" if config.method == "qlora" else ""))
    train_ds, eval_ds = _datasets(spec["dataset_path"], config)
    trainer = _trainer(config, model, tokenizer, train_ds, eval_ds, work_dir, cuda, log, precision)
    planned = _planned_steps(trainer, config)
    if 0 < config.step_cap < planned:
        trainer.args.max_steps = config.step_cap  # read when training starts: schedule and stop follow the cap
        log(f"step cap: {config.step_cap} of the {planned} steps the training block plans")

    state_file = work_dir / "tuneforge_state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    if "base_eval_loss" not in state and len(eval_ds):
        state["base_eval_loss"] = trainer.evaluate()["eval_loss"]  # adapters start at zero: the base model's loss
        if trainer.is_world_process_zero():
            state_file.write_text(json.dumps(state))
        log(f"base model validation loss {state['base_eval_loss']:.4f}")

    start_epoch = (json.loads((checkpoint / "trainer_state.json").read_text()).get("epoch") or 0) if checkpoint else 0
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    wall = time.perf_counter() - start
    final_eval = _final_eval_loss(trainer) if len(eval_ds) else None

    # the whole curve, also across a resume: the checkpoint restores the Trainer's log history (the base
    # model's loss, logged before training started, is kept beside the checkpoints)
    history = _history(trainer.state.log_history, state.get("base_eval_loss"))
    stats = _throughput(trainer, history, wall, config, start_epoch)
    stats.update(
        base_eval_loss=state.get("base_eval_loss"),
        final_eval_loss=final_eval,
        eval_examples=len(eval_ds),
        resumed_from=checkpoint.name if checkpoint else None,
        world_size=trainer.accelerator.num_processes,  # the processes that trained together, as accelerate set them up
        precision=precision,
        attention=attention,
        fused_lora_layers=fused,
        four_bit_layers=four_bit,
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        peak_cuda_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
    )
    final = work_dir / "final"
    if trainer.is_fsdp_enabled:  # gather the shards into one full state dict: a standard adapter folder comes out
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(final))  # on every rank: FSDP and DeepSpeed gather their shards, rank 0 writes
    if trainer.is_world_process_zero():
        _save(final, config, spec, output_dir, history, stats)
        log(f"saved {config.method} artifact to {output_dir}")
    return {"metadata": _metadata(stats, history, spec, output_dir), "data_version": spec["manifest"]["version"]}


# -- pieces ------------------------------------------------------------------------------------


def _check_requirements(config, cuda: bool) -> None:
    """Fail at once, naming what is missing, when the config asks for hardware or packages that are not here."""
    from importlib.util import find_spec

    needs = []  # (what asks, package, module, how to install it, what to use instead)
    if config.method == "qlora":
        needs.append(("method 'qlora' (a 4-bit base)", "bitsandbytes", "bitsandbytes", "pip install 'tuneforge[gpu]'",
                      "use method 'lora' (same adapter format)"))
    if config.attention == "flash_attention_2":
        needs.append(("attention 'flash_attention_2'", "flash-attn", "flash_attn", "pip install flash-attn",
                      "use attention 'auto'"))
    for wanted, package, module, install, instead in needs:
        if not cuda:
            raise RuntimeError(f"{wanted} needs a CUDA GPU and the {package} package; this machine has none: "
                               f"{instead}, or run on a GPU node.")
        if find_spec(module) is None:
            raise RuntimeError(f"{wanted} needs the {package} package, which is not installed: {install} in the GPU "
                               f"node's environment (image), or {instead}.")


def _check_sharding(cuda: bool) -> None:
    """FSDP and DeepSpeed (asked for by `accelerate launch` with such a config) shard the model over GPUs."""
    for name, flag in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED")):
        if os.environ.get(flag, "false").lower() == "true" and not cuda:
            raise RuntimeError(f"{name} shards the model over GPUs; this machine has none: use "
                               "FineTuner(launcher='torchrun') for data-parallel training on CPU, or run on GPU nodes.")


def _final_eval_loss(trainer) -> float:
    """Validation loss of the model training ended with, without evaluating again what was just evaluated: with
    the best checkpoint loaded at the end, its loss is the best metric; when the last step was evaluated, that
    loss; otherwise a last evaluation."""
    state = trainer.state
    if trainer.args.load_best_model_at_end and state.best_metric is not None:
        return float(state.best_metric)
    last = next((row for row in reversed(state.log_history) if "eval_loss" in row), None)
    if last is not None and last.get("step") == state.global_step:
        return float(last["eval_loss"])
    return trainer.evaluate()["eval_loss"]


def _load(base_path: str, config, precision: str, attention: str = "sdpa"):
    import torch
    from transformers import AutoModelForCausalLM

    from resources.models.base_model import load_tokenizer
    from resources.training.attention import register

    register()
    tokenizer = load_tokenizer(base_path)  # EOS = the token that ends an assistant turn, so the model learns to stop
    # a frozen base may live in bf16 (adapters stay fp32: peft's autocast_adapter_dtype); trained full
    # weights stay fp32 masters under bf16 autocast
    frozen_bf16 = precision == "bf16" and config.method in ("lora", "qlora")
    # auto leaves plain SDPA to transformers, which falls back to eager for models without SDPA support
    auto_sdpa = config.attention == "auto" and attention == "sdpa"
    kwargs = {"dtype": torch.bfloat16 if frozen_bf16 else torch.float32,
              "attn_implementation": None if auto_sdpa else attention}
    if config.method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16 if precision == "bf16" else torch.float32,
        )
        if torch.cuda.is_available():  # each DDP rank quantizes its copy onto its own GPU (not all onto GPU 0)
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    try:
        model = AutoModelForCausalLM.from_pretrained(base_path, **kwargs)
    except ValueError:  # an architecture without SDPA support: auto leaves the choice to transformers (eager)
        if config.attention != "auto" or attention != "per_example_sdpa":
            raise
        model = AutoModelForCausalLM.from_pretrained(base_path, **{**kwargs, "attn_implementation": None})
    if config.method in ("lora", "qlora"):
        from peft import get_peft_model, prepare_model_for_kbit_training

        if config.method == "qlora":
            # the config decides on gradient checkpointing (peft's helper would turn it on regardless)
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=config.gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False})
            _keep_4bit_layers_trainable(model)
        model = get_peft_model(model, config.lora_config())
        if config.fused_lora:
            from resources.training.fused_lora import fuse

            fuse(model)
        if frozen_bf16:
            # peft casts each adapter's input up to the fp32 adapter weights; under bf16 autocast the matmul
            # casts it straight back: skip the round trip (1.08x tokens/s on CPU)
            for module in model.modules():
                if hasattr(module, "cast_input_dtype_enabled"):
                    module.cast_input_dtype_enabled = False
    return tokenizer, model


def _keep_4bit_layers_trainable(model) -> None:
    """bitsandbytes' CPU backend repacks a 4-bit weight for its inference kernel the first time the layer runs
    in eval mode, for good, and that kernel has no backward pass: after the first evaluation (tuneforge
    evaluates the base model before training) the gradient would stop at every frozen 4-bit layer. Training
    keeps the trainable layout. (CUDA has no such repacking.)"""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and module.weight.device.type == "cpu":
            module.support_avx512bf16_for_cpu = False


def _four_bit_layers(model) -> int:
    """The base model's linear layers held in 4 bits (qlora: bitsandbytes' Linear4bit under the adapters)."""
    import bitsandbytes as bnb

    return sum(isinstance(module, bnb.nn.Linear4bit) for module in model.modules())


def _datasets(path: str, config):
    """Conversational prompt/completion pairs: the prompt is every message before the last one, the
    completion is the final assistant answer (the loss is computed on it alone unless loss_on='all')."""
    from datasets import load_from_disk

    data = load_from_disk(path)

    def split(example):
        messages = example["messages"]
        return {"prompt": messages[:-1], "completion": messages[-1:]}

    out = []
    for name in ("train", "validation"):
        ds = data[name]
        if config.loss_on == "completion":
            ds = ds.map(split, remove_columns=ds.column_names)
        else:
            ds = ds.select_columns(["messages"])
        out.append(ds)
    if not len(out[0]):
        raise ValueError(f"{path}: the training split is empty")
    return out


def _planned_steps(trainer, config) -> int:
    """The optimizer steps the training block plans: max_steps, else the epochs over the (packed) training batches."""
    import math

    if config.max_steps > 0:
        return config.max_steps
    per_epoch = max(1, math.ceil(len(trainer.get_train_dataloader()) / config.gradient_accumulation_steps))
    return math.ceil(per_epoch * config.num_train_epochs)


def _trainer(config, model, tokenizer, train_ds, eval_ds, work_dir: Path, cuda: bool, log, precision: str):
    from transformers import EarlyStoppingCallback
    from trl import SFTTrainer

    from resources.training.trainer import CpuSFTTrainer, ProgressCallback, training_args

    has_eval = len(eval_ds) > 0
    args = training_args(config, work_dir, cuda, precision, has_eval)
    callbacks = [ProgressCallback(log)]
    if has_eval and config.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    return (SFTTrainer if cuda else CpuSFTTrainer)(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds if has_eval else None,
        processing_class=tokenizer, callbacks=callbacks,
    )


def _throughput(trainer, history, wall: float, config, start_epoch: float = 0) -> dict:
    """Real tokens per second (of this process's training: after a resume, from the checkpoint on) and packing
    efficiency (real tokens / block capacity) of the train split."""
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    real = sum(lengths)
    capacity = len(lengths) * config.max_length if config.packing else sum(max(lengths) for _ in lengths)
    steps = trainer.state.global_step
    epochs_done = trainer.state.epoch or 0
    tokens_seen = real * (epochs_done - start_epoch)  # every rank sees its shard; together, the split once per epoch
    return {
        "steps": steps,
        "epochs": round(epochs_done, 3),
        "train_loss": next((r["loss"] for r in reversed(history) if "loss" in r), None),
        "best_eval_loss": trainer.state.best_metric,
        "wall_time_s": round(wall, 1),
        "train_tokens_per_epoch": real,
        "packing_efficiency": round(real / capacity, 4) if capacity else None,
        "tokens_per_s": round(tokens_seen / wall, 1) if wall > 0 else None,
        "early_stopped": bool(trainer.args.max_steps <= 0 and epochs_done + 1e-6 < config.num_train_epochs),
    }


def _save(saved: Path, config, spec, output_dir: Path, history, stats) -> None:
    """The artifact: what `Trainer.save_model` wrote to `saved` (a PEFT adapter folder or a full checkpoint,
    with the tokenizer), the config and the reproducibility manifest, published atomically at `output_dir`."""
    import accelerate
    import datasets
    import peft
    import torch
    import transformers
    import trl

    from resources.atomic import atomic_directory

    with atomic_directory(output_dir) as tmp:
        shutil.copytree(saved, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("training_args.bin"))
        (tmp / "tuneforge_config.json").write_text(json.dumps(config.model_dump(), indent=2, sort_keys=True))
        manifest = {
            **spec["manifest"],
            "config_hash": config.config_hash(),
            "seed": config.seed,
            "libraries": {m.__name__: m.__version__ for m in (torch, transformers, peft, trl, accelerate, datasets)},
            "python": platform.python_version(),
            "stats": stats,
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / "tuneforge_manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        (tmp / "training_history.json").write_text(json.dumps(history, indent=2))


def _metadata(stats: dict, history: list[dict], spec: dict, output_dir: Path) -> dict:
    rows = {}
    for row in history:
        entry = rows.setdefault(row["step"], {})
        entry.update({k: row[k] for k in ("loss", "eval_loss") if k in row})
    table = "| step | train loss | validation loss |\n|---|---|---|\n" + "\n".join(
        f"| {s} | {r.get('loss', '')} | {r.get('eval_loss', '')} |" for s, r in sorted(rows.items())
    )
    metadata = {
        "loss_curve": {"raw_value": table, "type": "md"},
        "history": {"raw_value": history, "type": "json"},
        "base_model_sha256": {"raw_value": spec["manifest"]["base_model"]["weights_sha256"], "type": "text"},
        "dataset_version": {"raw_value": spec["manifest"]["dataset_version"], "type": "text"},
    }
    for key, value in stats.items():
        if isinstance(value, bool):
            metadata[key] = {"raw_value": value, "type": "bool"}
        elif isinstance(value, int):
            metadata[key] = {"raw_value": value, "type": "int"}
        elif isinstance(value, float):
            metadata[key] = {"raw_value": value, "type": "float"}
        elif value is not None:
            metadata[key] = {"raw_value": str(value), "type": "text"}
    return metadata


def _last_checkpoint(work_dir: Path) -> Path | None:
    """The newest complete checkpoint (a run killed mid-save leaves an incomplete one behind)."""
    complete = [p for p in work_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(complete, key=lambda p: int(p.name.split("-")[-1]), default=None)


def _open_pipes(stack: ExitStack):
    from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

    # Launched by Dagster (PipesSubprocessClient, PipesK8sClient, ...) or by hand without it.
    return stack.enter_context(open_dagster_pipes()) if DAGSTER_PIPES_CONTEXT_ENV_VAR in os.environ else None


def _logger(pipes, rank: int):
    def log(message: str) -> None:
        if pipes is not None:
            pipes.log.info(message)
        elif rank == 0:
            print(message, file=sys.stderr, flush=True)

    return log


if __name__ == "__main__":
    sys.exit(main())
