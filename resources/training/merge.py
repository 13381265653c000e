"""Merge a LoRA adapter into its base model, for serving engines without LoRA support."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def merge_adapter(base_path: str, adapter_path: str, target: Path, dtype: str = "bfloat16") -> Path:
    """Base + adapter -> one 16-bit Hugging Face checkpoint at `target` (written atomically)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch_dtype)
    merged = PeftModel.from_pretrained(base, adapter_path).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(adapter_path)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
