"""Fused LoRA projections: the same outputs, gradients and adapter files as peft's own forward."""

import io

import torch

from resources.training.config import FineTuneConfig
from resources.training.fused_lora import FrozenBaseLora, FusedLinear, fusable_adapter, fuse, fused_layers

IDS = torch.tensor([[11, 12, 13, 14, 15, 16, 17, 18], [21, 22, 23, 24, 25, 26, 27, 28]])


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
        # a non-contiguous 2-D input, and an input that needs no gradient
        xt = torch.randn(5, 4, dtype=torch.float64).t().requires_grad_()
        assert torch.autograd.gradcheck(lambda x, a, b: FrozenBaseLora.apply(x, weight, bias, a, b, 0.5), (xt, a, b))
        assert torch.autograd.gradcheck(lambda a, b: FrozenBaseLora.apply(x.detach(), weight, bias, a, b, 0.5), (a, b))


def _load(tiny_model, **fields):
    from resources.training.sft_main import _load

    precision = fields.setdefault("precision", "fp32")
    _, model = _load(str(tiny_model), FineTuneConfig(**fields), precision)
    torch.manual_seed(1)  # LoRA B starts at zero (a no-op adapter): give every adapter weight a value
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.05)
    return model


def _counting_calls(monkeypatch) -> list:
    calls, original = [], FrozenBaseLora.apply
    monkeypatch.setattr(FrozenBaseLora, "apply", lambda *args: calls.append(1) or original(*args))
    return calls


def _loss_and_grads(model, autocast: bool = False, from_embeddings: bool = True):
    """As the Trainer runs a step: forward (and loss) under autocast when asked, backward outside it."""
    model.zero_grad()
    inputs = {"input_ids": IDS}
    if from_embeddings:  # the activations' gradient, checked too
        inputs = {"inputs_embeds": model.get_input_embeddings()(IDS).detach().requires_grad_()}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(**inputs, labels=IDS, use_cache=False)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.logits.detach(), grads, inputs["inputs_embeds"].grad if from_embeddings else None


def test_fused_training_step_matches_peft(tiny_model, monkeypatch):
    """Same logits, same adapter gradients, same gradient into the activations, same saved adapter; the first
    layer's input (from frozen embeddings) needs no gradient, which the fused op skips."""
    fused, plain = _load(tiny_model), _load(tiny_model, fused_lora=False)
    assert sum(isinstance(m, FusedLinear) for m in fused.modules()) == 2 * 7  # every projection of both layers
    assert fused_layers(fused) == 2 * 7 and not any(isinstance(m, FusedLinear) for m in plain.modules())

    calls = _counting_calls(monkeypatch)
    for from_embeddings in (True, False):
        calls.clear()
        logits, grads, into = _loss_and_grads(fused, from_embeddings=from_embeddings)
        assert len(calls) == 2 * 7  # the fused op ran for every projection
        ref_logits, ref_grads, ref_into = _loss_and_grads(plain, from_embeddings=from_embeddings)
        assert torch.allclose(logits, ref_logits, atol=1e-5)
        assert grads.keys() == ref_grads.keys() and len(grads) == 2 * 7 * 2
        for name in grads:
            assert torch.allclose(grads[name], ref_grads[name], atol=1e-6, rtol=1e-4), name
        if from_embeddings:
            assert torch.allclose(into, ref_into, atol=1e-6, rtol=1e-4)
    state, ref_state = fused.state_dict(), plain.state_dict()
    assert state.keys() == ref_state.keys() and all(torch.equal(state[k], ref_state[k]) for k in state)


def test_fused_bf16_autocast_matches_peft_and_keeps_fp32_adapter_gradients(tiny_model, monkeypatch):
    calls = _counting_calls(monkeypatch)
    fused = _load(tiny_model, precision="bf16")
    assert fused_layers(fused, torch.bfloat16) == 2 * 7
    logits, grads, _ = _loss_and_grads(fused, autocast=True)
    assert len(calls) == 2 * 7
    ref_logits, ref_grads, _ = _loss_and_grads(_load(tiny_model, precision="bf16", fused_lora=False), autocast=True)
    assert len(calls) == 2 * 7  # peft's model never takes the fused path
    assert logits.dtype == torch.bfloat16 and torch.allclose(logits.float(), ref_logits.float(), atol=0.05)
    for name in grads:
        assert grads[name].dtype == torch.float32
        assert torch.allclose(grads[name], ref_grads[name], atol=1e-3, rtol=0.05), name


def test_calls_it_does_not_cover_run_peft_forward(tiny_model):
    """A disabled adapter gives the base model's output; a merged one the same output as unmerged; dropout
    (random masks) and hooked layers go through peft and are not counted as fused."""
    model = _load(tiny_model)
    layer = next(m for m in model.modules() if isinstance(m, FusedLinear))
    probe = torch.empty(0)
    with torch.no_grad():
        tuned = model(input_ids=IDS).logits
        with model.disable_adapter():
            base = model(input_ids=IDS).logits
        layer.merge()
        assert fusable_adapter(layer, probe) is None
        merged = model(input_ids=IDS).logits
        layer.unmerge()
    assert not torch.allclose(tuned, base, atol=1e-3)
    assert torch.allclose(merged, tuned, atol=1e-5)

    seen = []
    handle = layer.base_layer.register_forward_hook(lambda *_: seen.append(1))
    with torch.no_grad():
        hooked = model(input_ids=IDS).logits
    handle.remove()
    assert seen and torch.allclose(hooked, tuned, atol=1e-5)  # the hook ran: peft's forward, same result
    assert fusable_adapter(layer, probe.double()) is None  # mixed dtypes outside autocast: peft casts

    dropped = _load(tiny_model, lora_dropout=0.1)
    assert fused_layers(dropped) == 0


def test_a_fused_model_pickles_and_fusing_is_idempotent(tiny_model):
    model = _load(tiny_model)
    assert fuse(model) == 0  # already switched by _load: nothing is switched twice
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        assert torch.equal(restored(input_ids=IDS).logits, model(input_ids=IDS).logits)
    assert fused_layers(restored) == 2 * 7


def test_fused_lora_is_part_of_the_config_hash():
    assert FineTuneConfig().config_hash() != FineTuneConfig(fused_lora=False).config_hash()
