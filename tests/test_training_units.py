"""Training building blocks: config validation, special tokens, packing boundaries, overfitting signal."""

import pytest
import torch

from resources.models.base_model import turn_terminator
from resources.training.config import FineTuneConfig
from resources.training.overfitting import overfitting_signal


def test_config_validation_names_every_problem():
    with pytest.raises(ValueError) as err:
        FineTuneConfig(lora_r=0, eval_steps=0, max_steps=0, learning_rate=2)
    message = str(err.value)
    for part in ("lora_r", "eval_steps", "max_steps", "learning_rate"):
        assert part in message
    assert FineTuneConfig(method="full", target_modules=[]).method == "full"  # no adapters needed for full


def test_config_hash_tracks_every_field():
    assert FineTuneConfig().config_hash() == FineTuneConfig().config_hash()
    assert FineTuneConfig().config_hash() != FineTuneConfig(lora_r=8).config_hash()


def test_eos_is_the_token_that_ends_an_assistant_turn(smol_tokenizer):
    # the GGUF declares <|im_start|> as EOS; the chat template closes turns with <|im_end|>
    assert turn_terminator(smol_tokenizer) == "<|im_end|>"
    assert smol_tokenizer.eos_token == "<|im_end|>" and smol_tokenizer.pad_token is not None
    rendered = smol_tokenizer.apply_chat_template(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], tokenize=False
    )
    assert "a<|im_end|>" in rendered


def test_packed_examples_do_not_attend_to_each_other(tiny_model):
    """TRL's packing flattens examples into one row with position ids restarting per example; the
    trainer runs without a KV cache, so transformers builds a block-diagonal mask (also on CPU/SDPA)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    a, b = torch.tensor([[11, 12, 13, 14]]), torch.tensor([[21, 22, 23]])
    packed = torch.cat([a, b], dim=1)
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2]])
    with torch.no_grad():
        alone = model(input_ids=b).logits
        isolated = model(input_ids=packed, position_ids=positions, use_cache=False).logits[:, 4:]
        leaking = model(input_ids=packed, use_cache=False).logits[:, 4:]
    assert torch.allclose(alone, isolated, atol=1e-5)
    assert not torch.allclose(alone, leaking, atol=1e-5)


def test_overfitting_signal():
    healthy = [{"step": 1, "loss": 3.0}, {"step": 2, "eval_loss": 2.9}, {"step": 3, "loss": 2.5}, {"step": 4, "eval_loss": 2.6}]
    assert overfitting_signal(healthy) is None
    overfit = healthy + [{"step": 5, "loss": 1.0}, {"step": 6, "eval_loss": 3.1}, {"step": 7, "loss": 0.5}, {"step": 8, "eval_loss": 3.4}]
    signal = overfitting_signal(overfit)
    assert "rose from 2.6000 (step 4) to 3.4000 (step 8)" in signal
    noisy = healthy + [{"step": 5, "loss": 2.4}, {"step": 6, "eval_loss": 2.61}]
    assert overfitting_signal(noisy) is None  # within tolerance


def test_unknown_model_fails_fast_offline(tmp_path, monkeypatch):
    import time

    from resources.models.base_model import BaseModelSource, ModelUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    start = time.time()
    with pytest.raises(ModelUnavailableError, match="HF_HUB_OFFLINE"):
        BaseModelSource(model="acme/not-a-cached-model", cache_dir=str(tmp_path)).resolve()
    assert time.time() - start < 30


def test_fine_tuner_launch_commands():
    from resources.training.fine_tuner import FineTuner

    single = FineTuner().command("spec.json")
    assert single[1:] == ["-m", "resources.training.sft_main", "--spec", "spec.json"]
    ddp = FineTuner(launcher="torchrun", num_processes=2)
    assert "--nproc_per_node=2" in ddp.command("spec.json") and ddp.threads() >= 1
    with pytest.raises(ValueError, match="torchrun"):
        FineTuner(num_processes=2)


def test_loss_covers_the_answer_and_its_end_of_turn_token_only(tiny_model, tiny_dataset, tmp_path):
    """The trainer's own tokenization: prompt tokens are masked, the answer is trained up to and
    including <|im_end|> (the EOS), so the tuned model learns to stop."""
    from resources.training.config import FineTuneConfig
    from resources.training.sft_main import _datasets, _load, _trainer

    config = FineTuneConfig(packing=False, max_length=128)
    tokenizer, model = _load(str(tiny_model), config, precision="fp32")
    train_ds, eval_ds = _datasets(str(tiny_dataset), config)
    trainer, _ = _trainer(config, model, tokenizer, train_ds, eval_ds, tmp_path, False, lambda *_: None, "fp32")
    row = trainer.train_dataset[0]
    trained = [t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]
    masked = [t for t, label in zip(row["input_ids"], row["labels"]) if label == -100]
    answer = tokenizer(train_ds[0]["completion"][0]["content"], add_special_tokens=False)["input_ids"]
    assert trained[: len(answer)] == answer
    assert tokenizer.eos_token_id in trained
    assert tokenizer.decode(masked).count("Question 0") == 1  # the user's question is context, not target


def test_bf16_precision_keeps_adapters_fp32_on_a_bf16_base(tiny_model, monkeypatch):
    """precision=bf16: the frozen base is held in bf16, the trained LoRA weights stay fp32; auto follows
    the CPU's bf16 flags; a full fine-tune keeps fp32 master weights."""
    import resources.training.config as config_module
    from resources.training.sft_main import _load

    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(config_module, "cpu_has_native_bf16", lambda native=native: native)
        assert FineTuneConfig().resolved_precision(cuda=False) == expected
    assert FineTuneConfig(precision="fp32").resolved_precision(cuda=False) == "fp32"

    _, model = _load(str(tiny_model), FineTuneConfig(precision="bf16"), "bf16")
    trained = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for n, p in model.named_parameters() if not p.requires_grad and "proj" in n}
    assert trained == {torch.float32} and frozen == {torch.bfloat16}
    _, full = _load(str(tiny_model), FineTuneConfig(method="full", precision="bf16", learning_rate=2e-5), "bf16")
    assert {p.dtype for p in full.parameters()} == {torch.float32}
