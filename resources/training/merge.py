"""Merge a LoRA adapter into its base model, for serving engines without LoRA support."""

from __future__ import annotations

from pathlib import Path

from resources.atomic import atomic_directory


def merge_adapter(base_path: str, adapter_path: str, target: Path, dtype: str = "bfloat16") -> Path:
    """Base + adapter -> one 16-bit Hugging Face checkpoint at `target` (written atomically). A full
    fine-tune's checkpoint (no adapter in it) is already complete: it is cast to `dtype`."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype)
    if (Path(adapter_path) / "adapter_config.json").is_file():
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch_dtype)
        merged = PeftModel.from_pretrained(base, adapter_path).merge_and_unload()
    else:
        merged = AutoModelForCausalLM.from_pretrained(adapter_path, dtype=torch_dtype)
    tokenizer = AutoTokenizer.from_pretrained(adapter_path)
    with atomic_directory(target) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target
