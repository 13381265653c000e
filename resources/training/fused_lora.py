"""LoRA projections computed as one autograd op each: `y = x W^T + s (x A^T) B^T` over a frozen base weight.

peft computes a LoRA projection as separate tensor ops: the base linear, `lora_B(lora_A(x))`, a multiply by the
scaling and an add, and autograd sums the input's gradient from the two paths in a further pass. On a CPU every
one of those ops reads and writes a full (tokens x out_features) tensor. Here the adapter's low-rank product
is accumulated into the base output inside the matmul (`addmm_`, alpha = scaling), and in the backward pass
the input gradient is built the same way, so no extra full-size tensor is written
(beyond the copies a non-contiguous input or autocast's casts need). The adapter keeps
peft's parameters, state dict and saved format; the result and the gradients are the same (tested).
1.07x tokens/s for LoRA training on CPU, fp32 and bf16 (A/B in one process).

`fuse(model)` switches peft's `lora.Linear` layers to this path. A call it does not cover (a merged or
disabled adapter, several active adapters, dropout, DoRA and other variants, a LoRA bias, a trainable or
quantized base layer, hooks on the layers, extra forward arguments) runs peft's own forward.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from peft.tuners.lora.layer import Linear


class FrozenBaseLora(torch.autograd.Function):
    """(x, W, bias, A, B, s) -> x W^T + bias + s (x A^T) B^T, gradients for x, A and B only (W frozen)."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling):
        flat = x.reshape(-1, x.shape[-1])
        low_rank = flat @ lora_a.t()
        out = torch.addmm(bias, flat, weight.t()) if bias is not None else flat @ weight.t()
        out.addmm_(low_rank, lora_b.t(), alpha=scaling)
        ctx.save_for_backward(flat, low_rank, weight, lora_a, lora_b)
        ctx.scaling, ctx.input_shape = scaling, x.shape
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        flat, low_rank, weight, lora_a, lora_b = ctx.saved_tensors
        needs_x, _, _, needs_a, needs_b, _ = ctx.needs_input_grad
        grad = grad_out.reshape(-1, grad_out.shape[-1])
        grad_x = grad_a = grad_b = None
        if needs_x or needs_a:
            grad_low_rank = (grad @ lora_b).mul_(ctx.scaling)
            if needs_x:
                grad_x = (grad @ weight).addmm_(grad_low_rank, lora_a).view(ctx.input_shape)
            if needs_a:
                grad_a = grad_low_rank.t() @ flat
        if needs_b:
            grad_b = (grad.t() @ low_rank).mul_(ctx.scaling)
        return grad_x, None, None, grad_a, grad_b, None


def _hooked(module: torch.nn.Module) -> bool:
    """Hooks (accelerate's offloading among them) expect the module's own forward to run."""
    return bool(module._forward_hooks or module._forward_pre_hooks or "_hf_hook" in module.__dict__)


def fusable_adapter(layer, x: torch.Tensor, args=(), kwargs=None) -> str | None:
    """The one active adapter when this call is plain LoRA over a frozen nn.Linear, else None."""
    if args or kwargs or layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    base = layer.base_layer
    if (name not in layer.lora_A or name in layer.lora_variant or type(base) is not torch.nn.Linear
            or base.weight.requires_grad or (base.bias is not None and base.bias.requires_grad)
            or not isinstance(layer.lora_dropout[name], torch.nn.Identity) or layer.lora_B[name].bias is not None
            or any(_hooked(m) for m in (base, layer.lora_A[name], layer.lora_B[name]))):
        return None
    dtypes = {x.dtype, base.weight.dtype, layer.lora_A[name].weight.dtype, layer.lora_B[name].weight.dtype}
    device = x.device.type
    if torch.is_autocast_enabled(device):  # autocast casts float32 and its own dtype, nothing else
        return name if dtypes <= {torch.float32, torch.get_autocast_dtype(device)} else None
    return name if len(dtypes) == 1 else None  # mixed dtypes outside autocast: peft casts


def _fused_forward(layer, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    name = fusable_adapter(layer, x, args, kwargs)
    if name is None:
        return Linear.forward(layer, x, *args, **kwargs)
    tensors = [x, layer.base_layer.weight, layer.base_layer.bias, layer.lora_A[name].weight, layer.lora_B[name].weight]
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return FrozenBaseLora.apply(*tensors, layer.scaling[name])
    dtype = torch.get_autocast_dtype(device)  # as autocast would run each matmul: in its dtype, then autocast off
    tensors = [t.to(dtype) if t is not None else None for t in tensors]
    with torch.autocast(device, enabled=False):
        return FrozenBaseLora.apply(*tensors, layer.scaling[name])


class FusedLinear(Linear):
    """peft's LoRA Linear whose plain-LoRA calls run FrozenBaseLora; everything else is peft's."""

    forward = _fused_forward


def fuse(model) -> int:
    """Route the model's peft LoRA linear layers through FrozenBaseLora (a class swap: parameters, state dict,
    saving, merging and pickling are peft's); returns how many layers were switched."""
    count = 0
    for module in model.modules():
        if type(module) is Linear:
            module.__class__ = FusedLinear
            count += 1
    return count


def fused_layers(model, autocast_dtype: torch.dtype | None = None) -> int:
    """Layers whose calls, as configured now, take the fused path (dropout or DoRA, for example, do not), under
    autocast to `autocast_dtype` when training runs under it."""
    count = 0
    for module in model.modules():
        if isinstance(module, FusedLinear):
            weight = module.base_layer.weight
            probe = torch.empty(0, dtype=autocast_dtype or weight.dtype, device=weight.device)
            with torch.autocast(weight.device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext():
                count += fusable_adapter(module, probe) is not None
    return count
