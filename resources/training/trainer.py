"""The trainer pieces of the training process, importable and testable on their own: TRL's SFTConfig built from a
FineTuneConfig, the CPU loss (logits only where a label is) and the callback that streams progress to Dagster.

Imported by the training process (`sft_main`), which runs outside the Dagster process; it imports torch and TRL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from resources.training.history import history_row


def training_args(config, work_dir: Path, cuda: bool, precision: str, has_eval: bool) -> SFTConfig:
    """TRL's arguments for a FineTuneConfig: evaluation and checkpoints every `eval_steps`, the best checkpoint
    kept (early stopping on validation loss), bf16 autocast where the precision says so."""
    return SFTConfig(
        output_dir=str(work_dir),
        seed=config.seed,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=config.weight_decay,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_batch_size,
        per_device_eval_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_length=config.max_length,
        packing=config.packing,
        gradient_checkpointing=config.gradient_checkpointing,
        completion_only_loss=config.loss_on == "completion",
        eval_strategy="steps" if has_eval else "no",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.eval_steps,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=has_eval and config.early_stopping_patience > 0,
        prediction_loss_only=True,  # evaluation needs the loss, not every batch's logits kept in memory
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_steps=config.logging_steps,
        report_to=[],
        use_cpu=not cuda,
        bf16=precision == "bf16",  # autocast (CUDA, or CPU with AMX/AVX512-BF16)
        dataloader_num_workers=0,
        disable_tqdm=True,
        ddp_find_unused_parameters=False,
    )


class ProgressCallback(TrainerCallback):
    """Streams losses into the Dagster run log (through `log`) while training runs; rank 0 only."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = history_row({**logs, "step": state.global_step, "epoch": state.epoch})
        self.log(f"step {state.global_step}/{state.max_steps} " + " ".join(f"{k}={v}" for k, v in row.items() if k != "step"))


class CpuSFTTrainer(SFTTrainer):
    """The loss on CPU. TRL's chunked LM head saves GPU memory by recomputing the LM head in the backward
    pass and, off Triton, scores every position with plain torch ops: 1.3x slower per step here. Instead the
    model computes logits only where a label is (transformers' `logits_to_keep`; with completion-only loss
    about half the positions) and the loss is their cross-entropy over the accumulation window's label
    count, as transformers' Trainer normalises it. Not logged on CPU: TRL's per-step entropy and token
    accuracy, which come out of its head."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = True  # compute_loss divides by num_items_in_batch itself

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {**inputs, "use_cache": False}  # as TRL: no KV cache, packed examples keep their own attention
        labels = inputs.pop("labels")
        if self.aux_loss_enabled:  # MoE: the router's load-balancing loss, as TRL adds it
            inputs["output_router_logits"] = True
        targets = labels[:, 1:]
        if labels.shape[0] == 1:  # a packed (padding-free) row: logits only where a label is
            positions = (targets[0] != -100).nonzero().squeeze(1)  # the logits at p predict the label at p + 1
            outputs = model(**inputs, logits_to_keep=positions)
            logits, targets = outputs.logits[0], targets[0, positions]
        else:  # padded rows (packing off)
            outputs = model(**inputs)
            logits, targets = outputs.logits[:, :-1].flatten(0, 1), targets.flatten()
        loss = F.cross_entropy(logits.float(), targets, ignore_index=-100, reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else (targets != -100).sum()
        loss = loss / torch.as_tensor(count).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients; the count is global
        if self.aux_loss_enabled and getattr(outputs, "aux_loss", None) is not None:
            steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss / steps
        return (loss, outputs) if return_outputs else loss

