"""Fused LoRA projections: the same outputs, gradients and adapter files as peft's own forward."""

import torch

from resources.training.config import FineTuneConfig
from resources.training.fused_lora import FrozenBaseLora, fuse


def test_the_fused_op_has_exact_gradients_for_input_and_adapters_with_and_without_bias():
    torch.manual_seed(0)
    for bias in (None, torch.randn(6, dtype=torch.float64)):
        x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
        weight = torch.randn(6, 5, dtype=torch.float64)
        a = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
        b = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
        expected = x @ weight.t() + (bias if bias is not None else 0) + 0.5 * (x @ a.t()) @ b.t()
        assert torch.allclose(FrozenBaseLora.apply(x, weight, bias, a, b, 0.5), expected)
        assert torch.autograd.gradcheck(lambda x, a, b: FrozenBaseLora.apply(x, weight, bias, a, b, 0.5), (x, a, b))


def _trained_like(model, seed=1):
    """LoRA B starts at zero (the adapter is a no-op); give every adapter weight a value, as after training."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.05)
    return model


def _counting_calls(monkeypatch) -> list:
    calls, original = [], FrozenBaseLora.apply
    monkeypatch.setattr(FrozenBaseLora, "apply", lambda *args: calls.append(1) or original(*args))
    return calls


def _loss_and_grads(model, batch):
    model.zero_grad()
    embeddings = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_()
    out = model(inputs_embeds=embeddings, labels=batch["input_ids"], use_cache=False)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.logits.detach(), grads, embeddings.grad


def test_fused_training_step_matches_peft(tiny_model, monkeypatch):
    """Same logits, same adapter gradients, same gradient into the activations, same saved adapter."""
    from resources.training.sft_main import _load

    batch = {"input_ids": torch.tensor([[11, 12, 13, 14, 15, 16, 17, 18], [21, 22, 23, 24, 25, 26, 27, 28]])}
    _, fused = _load(str(tiny_model), FineTuneConfig(precision="fp32"), "fp32")
    _, plain = _load(str(tiny_model), FineTuneConfig(precision="fp32", fused_lora=False), "fp32")
    switched = [m for m in fused.modules() if "_peft_forward" in m.__dict__]
    assert len(switched) == 2 * 7  # every projection of both layers
    assert not any("_peft_forward" in m.__dict__ for m in plain.modules())
    _trained_like(fused), _trained_like(plain)

    calls = _counting_calls(monkeypatch)
    logits, grads, into = _loss_and_grads(fused, batch)
    assert len(calls) == 2 * 7  # the fused op ran for every projection
    ref_logits, ref_grads, ref_into = _loss_and_grads(plain, batch)
    assert torch.allclose(logits, ref_logits, atol=1e-5)
    assert grads.keys() == ref_grads.keys() and len(grads) == 2 * 7 * 2
    for name in grads:
        assert torch.allclose(grads[name], ref_grads[name], atol=1e-6, rtol=1e-4), name
    assert torch.allclose(into, ref_into, atol=1e-6, rtol=1e-4)
    assert fused.state_dict().keys() == plain.state_dict().keys()  # the adapter files do not change


def test_calls_it_does_not_cover_run_peft_forward(tiny_model):
    """A disabled adapter gives the base model's output; a merged one the same output as unmerged; dropout
    (random masks) goes through peft, which the fused path never takes."""
    from resources.training.fused_lora import _fusable_adapter
    from resources.training.sft_main import _load

    ids = torch.tensor([[11, 12, 13, 14, 15]])
    _, model = _load(str(tiny_model), FineTuneConfig(precision="fp32"), "fp32")
    _trained_like(model)
    with torch.no_grad():
        tuned = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        layer = next(m for m in model.modules() if "_peft_forward" in m.__dict__)
        layer.merge()
        assert _fusable_adapter(layer, (), {}) is None
        merged = model(input_ids=ids).logits
        layer.unmerge()
    assert not torch.allclose(tuned, base, atol=1e-3)
    assert torch.allclose(merged, tuned, atol=1e-5)

    _, dropped = _load(str(tiny_model), FineTuneConfig(precision="fp32", lora_dropout=0.1), "fp32")
    layer = next(m for m in dropped.modules() if "_peft_forward" in m.__dict__)
    assert _fusable_adapter(layer, (), {}) is None


def test_fused_bf16_autocast_matches_peft_and_keeps_fp32_adapter_gradients(tiny_model, monkeypatch):
    from resources.training.sft_main import _load

    calls = _counting_calls(monkeypatch)
    batch = {"input_ids": torch.tensor([[11, 12, 13, 14, 15, 16, 17, 18]])}
    results = []
    for fused_lora in (True, False):
        _, model = _load(str(tiny_model), FineTuneConfig(precision="bf16", fused_lora=fused_lora), "bf16")
        _trained_like(model)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results.append(_loss_and_grads(model, batch))
    (logits, grads, _), (ref_logits, ref_grads, _) = results
    assert len(calls) == 2 * 7  # the fused model only
    assert logits.dtype == torch.bfloat16 and torch.allclose(logits.float(), ref_logits.float(), atol=0.05)
    for name in grads:
        assert grads[name].dtype == torch.float32
        assert torch.allclose(grads[name], ref_grads[name], atol=1e-3, rtol=0.05), name


def test_fused_lora_is_part_of_the_config_hash():
    assert FineTuneConfig().config_hash() != FineTuneConfig(fused_lora=False).config_hash()


def test_fuse_is_idempotent(tiny_model):
    from resources.training.sft_main import _load

    _, model = _load(str(tiny_model), FineTuneConfig(precision="fp32"), "fp32")
    assert fuse(model) == 0  # already switched by _load: nothing is wrapped twice
