"""Fine-tuning hyperparameters: one documented config, validated in one place, saved with the adapter."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from dagster import Config
from pydantic import ConfigDict, Field, model_validator

from resources.host import cpu_has_native_bf16  # noqa: F401 (read here as a module global: tests replace it)

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class FineTuneConfig(Config):
    """How `lora_adapter` is trained (the Dagster launchpad shows and edits these fields)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key in a model's `training:` block is an error, not ignored

    method: Literal["lora", "qlora", "full"] = Field(
        default="lora",
        description="lora: low-rank adapters on a frozen base; qlora: the same on a 4-bit base (bitsandbytes, "
        "CUDA only); full: all weights are trained and a full checkpoint is saved.",
    )
    lora_r: int = Field(default=16, description="LoRA rank (lora/qlora).")
    lora_alpha: int = Field(default=32, description="LoRA scaling numerator; the update is scaled by alpha/r.")
    lora_dropout: float = Field(
        default=0.0,
        description="Dropout on the LoRA input. 0 by default: on CPU the dropout masks cost a fifth of each step "
        "(1.25x tokens/s without them, `make bench`), and early stopping on validation loss guards against "
        "overfitting; 0.05-0.1 for long runs on small datasets.",
    )
    target_modules: list[str] = Field(
        default=list(ALL_LINEAR), description="Module names that get adapters (default: every projection)."
    )
    fused_lora: bool = Field(
        default=True,
        description="Compute each LoRA projection over a frozen nn.Linear base as one autograd op: the adapter's "
        "low-rank product is accumulated into the base matmul's output (and likewise the input gradient) instead "
        "of peft's separate multiply and add passes over full-size tensors. Same adapter, same result; 1.07x "
        "tokens/s in fp32 on CPU (`make bench`). Layers it does not cover (dropout > 0, DoRA, quantized bases) "
        "run peft's forward either way; false runs peft's forward everywhere.",
    )
    learning_rate: float = Field(default=2e-4, description="Peak learning rate (use ~2e-5 for method=full).")
    lr_scheduler: Literal["cosine", "linear", "constant"] = Field(default="cosine", description="Learning-rate schedule.")
    warmup_ratio: float = Field(default=0.05, description="Share of steps spent warming up the learning rate.")
    weight_decay: float = Field(default=0.0, description="AdamW weight decay.")
    num_train_epochs: float = Field(default=2.0, description="Epochs over the training split (ignored if max_steps > 0).")
    max_steps: int = Field(default=-1, description="Stop after this many optimizer steps; -1 trains num_train_epochs.")
    step_cap: int = Field(
        default=-1, description="At most this many optimizer steps, whatever num_train_epochs or max_steps plan (a "
        "shorter trial run: `tuneforge run --max-steps`); a plan already within it is unchanged; -1: no cap.")
    per_device_batch_size: int = Field(
        default=2,
        description="Sequences (packed blocks when packing) per device per micro-batch. With packing the blocks of a "
        "micro-batch are flattened into one sequence; per-example attention (the CPU default) keeps its attention "
        "cost linear in the number of blocks, while a block-diagonal mask (sdpa) grows with the square of the total "
        "length. 2 blocks x 4 accumulation steps: 1.1x the fp32 tokens/s of 1 x 8 on CPU (larger matmuls), the same "
        "tokens per optimizer step.",
    )
    gradient_accumulation_steps: int = Field(default=4, description="Micro-batches accumulated per optimizer step.")
    max_length: int = Field(default=512, description="Tokens per sequence; with packing, the length of a packed block.")
    packing: bool = Field(
        default=True,
        description="Pack several examples into each block (best-fit decreasing, no padding; attention stays within "
        "each example through position ids).",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="Compute precision. bf16: matmuls in bfloat16 autocast; with lora/qlora the frozen base is held "
        "in bfloat16, while adapters, gradients and optimizer state stay fp32 (method=full keeps fp32 master weights). "
        "auto: bf16 on CUDA GPUs that support it and on CPUs with native bfloat16 matmul (Intel AMX or AVX512-BF16; "
        "1.6x the tokens/s of fp32 in the training benchmark), fp32 elsewhere. fp32: full precision everywhere.",
    )
    attention: Literal["auto", "sdpa", "per_example_sdpa", "flash_attention_2", "eager"] = Field(
        default="auto",
        description="Attention kernel (transformers' attn_implementation). per_example_sdpa: causal SDPA on each "
        "packed example separately, where sdpa computes a block-diagonal mask over the whole micro-batch (same "
        "result; 1.1x tokens/s in fp32 on CPU at one 512-token block, more with several blocks per micro-batch). "
        "auto: per_example_sdpa for packed training on CPU, sdpa elsewhere. flash_attention_2 on CUDA when the "
        "flash-attn package is installed.",
    )
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute activations in the backward pass: less memory, ~30% more compute. Off by default "
        "(TRL turns it on); turn it on for long sequences on a small GPU.",
    )
    loss_on: Literal["completion", "all"] = Field(
        default="completion",
        description="completion: loss on the final assistant answer only (prompt tokens are masked); all: every token.",
    )
    eval_steps: int = Field(default=10, description="Evaluate validation loss (and checkpoint) every N optimizer steps.")
    early_stopping_patience: int = Field(
        default=3, description="Stop after this many evaluations without a lower validation loss; 0 disables."
    )
    logging_steps: int = Field(default=5, description="Log training loss to the Dagster run every N steps.")
    save_total_limit: int = Field(default=2, description="Checkpoints kept on disk (the best one is always kept).")
    seed: int = Field(default=42, description="Seed for data order, dropout and adapter initialisation.")

    @model_validator(mode="after")
    def _validate(self) -> "FineTuneConfig":
        problems = []
        if self.method in ("lora", "qlora"):
            if self.lora_r < 1 or self.lora_alpha < 1:
                problems.append("lora_r and lora_alpha must be >= 1")
            if not self.target_modules:
                problems.append("target_modules must name at least one module for lora/qlora")
            if not 0 <= self.lora_dropout < 1:
                problems.append("lora_dropout must lie within [0, 1)")
        if self.max_steps == 0 or (self.max_steps < 0 and self.num_train_epochs <= 0):
            problems.append("train for max_steps > 0 or num_train_epochs > 0")
        for name in ("per_device_batch_size", "gradient_accumulation_steps", "eval_steps", "logging_steps", "save_total_limit"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.max_length < 16:
            problems.append("max_length must be >= 16")
        if not 0 < self.learning_rate < 1:
            problems.append("learning_rate must lie within (0, 1)")
        if not 0 <= self.warmup_ratio < 1:
            problems.append("warmup_ratio must lie within [0, 1)")
        if self.early_stopping_patience < 0:
            problems.append("early_stopping_patience must be >= 0")
        if problems:
            raise ValueError("FineTuneConfig: " + "; ".join(problems))
        return self

    def resolved_precision(self, cuda: bool) -> str:
        """'bf16' or 'fp32' on this machine (see `precision`)."""
        if self.precision != "auto":
            return self.precision
        if cuda:
            import torch

            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if cpu_has_native_bf16() else "fp32"

    def resolved_attention(self, cuda: bool) -> str:
        """The attn_implementation to load the model with (see `attention`)."""
        if self.attention != "auto":
            return self.attention
        return "per_example_sdpa" if self.packing and not cuda else "sdpa"

    def lora_config(self):
        """peft's LoraConfig for these adapters (lora/qlora)."""
        from peft import LoraConfig

        return LoraConfig(r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                          target_modules=self.target_modules, task_type="CAUSAL_LM")

    @classmethod
    def with_defaults(cls, name: str, defaults: "FineTuneConfig") -> type["FineTuneConfig"]:
        """A FineTuneConfig class whose defaults are `defaults` (a model's `training:` block), so the Dagster
        launchpad shows the model's own settings and a run may still override any field."""
        from pydantic import create_model

        fields = {field: (info.annotation, Field(default=getattr(defaults, field), description=info.description))
                  for field, info in cls.model_fields.items()}
        return create_model(f"{''.join(p.title() for p in name.split('_'))}FineTuneConfig", __base__=cls, **fields)

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:16]
