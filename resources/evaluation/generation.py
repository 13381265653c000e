"""Batched greedy generation with the model's own chat template (what serving will use)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Generation:
    text: str
    new_tokens: int
    stopped: bool  # ended on EOS (not cut off by max_new_tokens)


def load_for_generation(base_path: str, adapter_path: str | None = None, merge: bool = False):
    """The base model, with a PEFT adapter on it (merged into the weights with `merge`: the same function, and
    about a fifth faster to generate with on CPU); or, for a full fine-tune, the tuned checkpoint itself."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter_path or base_path)
    tokenizer.padding_side = "left"  # decoder-only batches are padded on the left
    full = adapter_path is not None and not (Path(adapter_path) / "adapter_config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(adapter_path if full else base_path)
    if adapter_path and not full:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path)
        if merge:
            model = model.merge_and_unload()
    return tokenizer, model.eval()


def prompt_text(tokenizer, prompt, system: str | None = None) -> str:
    """What the model is given for one prompt (a user message, or a whole conversation such as the grounded
    prompt): the chat template rendered with the assistant's turn opened; tokenized without special tokens."""
    messages = ([{"role": "system", "content": system}] if system else []) + \
        (list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": prompt}])
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def generate(tokenizer, model, prompts: list, max_new_tokens: int = 96, batch_size: int = 8,
             system: str | None = None) -> list[Generation]:
    """Greedy answers; each prompt is a user message (a string) or a whole conversation (a list of messages, e.g.
    the grounded prompt)."""
    import torch

    eos = tokenizer.eos_token_id
    texts = [prompt_text(tokenizer, p, system) for p in prompts]
    # batches of similar length: left padding is computed like any token, so mixed lengths waste the prefill
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[Generation | None] = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = tokenizer([texts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            ids = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                                 pad_token_id=tokenizer.pad_token_id)
        for i, row in zip(chunk, ids[:, batch["input_ids"].shape[1] :]):
            tokens = row.tolist()
            stopped = eos in tokens
            if stopped:
                tokens = tokens[: tokens.index(eos)]
            tokens = [t for t in tokens if t != tokenizer.pad_token_id]
            out[i] = Generation(tokenizer.decode(tokens, skip_special_tokens=True).strip(), len(tokens), stopped)
    return out
