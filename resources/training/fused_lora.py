"""LoRA projections computed as one autograd op each: `y = x W^T + s (x A^T) B^T` over a frozen base weight.

peft computes a LoRA projection as separate tensor ops: the base linear, `lora_B(lora_A(x))`, a multiply by the
scaling and an add, and autograd sums the input's gradient from the two paths in a further pass. On a CPU every
one of those ops reads and writes a full (tokens x out_features) tensor. Here the adapter's low-rank product
is accumulated into the base output inside the matmul (`addmm_`, alpha = scaling), and in the backward pass
the input gradient is built the same way, so no extra full-size tensor is written. The adapter keeps
peft's parameters, state dict and saved format; the result and the gradients are the same (tested).
`make bench`: 1.07x tokens/s for LoRA training in fp32 on CPU.

`fuse(model)` switches every eligible peft `lora.Linear` to this path. A call it does not cover (a merged or
disabled adapter, several active adapters, dropout, DoRA and other variants, a LoRA bias, a trainable or
quantized base layer, extra forward arguments) runs peft's own forward.
"""

from __future__ import annotations

from types import MethodType

import torch


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
        grad = grad_out.reshape(-1, grad_out.shape[-1])
        grad_low_rank = (grad @ lora_b).mul_(ctx.scaling)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ weight).addmm_(grad_low_rank, lora_a).view(ctx.input_shape)
        grad_a = grad_low_rank.t() @ flat
        grad_b = (grad.t() @ low_rank).mul_(ctx.scaling)
        return grad_x, None, None, grad_a, grad_b, None


def _fusable_adapter(layer, args, kwargs) -> str | None:
    """The one active adapter when this call is plain LoRA over a frozen nn.Linear, else None."""
    if args or kwargs or layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    base = layer.base_layer
    if (name not in layer.lora_A or name in layer.lora_variant or type(base) is not torch.nn.Linear
            or base.weight.requires_grad or (base.bias is not None and base.bias.requires_grad)
            or not isinstance(layer.lora_dropout[name], torch.nn.Identity) or layer.lora_B[name].bias is not None):
        return None
    return name


def _forward(layer, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    name = _fusable_adapter(layer, args, kwargs)
    if name is None:
        return layer._peft_forward(x, *args, **kwargs)
    tensors = [x, layer.base_layer.weight, layer.base_layer.bias, layer.lora_A[name].weight, layer.lora_B[name].weight]
    device = x.device.type
    if torch.is_autocast_enabled(device):  # as autocast would run each matmul: in its dtype, then autocast off
        dtype = torch.get_autocast_dtype(device)
        tensors = [t.to(dtype) if t is not None else None for t in tensors]
        with torch.autocast(device, enabled=False):
            return FrozenBaseLora.apply(*tensors, layer.scaling[name])
    if len({t.dtype for t in tensors if t is not None}) != 1:  # mixed dtypes outside autocast: peft casts
        return layer._peft_forward(x, *args, **kwargs)
    return FrozenBaseLora.apply(*tensors, layer.scaling[name])


def fuse(model) -> int:
    """Route the model's peft LoRA linear layers through FrozenBaseLora; returns how many were switched."""
    from peft.tuners.lora.layer import Linear

    count = 0
    for module in model.modules():
        if type(module) is Linear and "_peft_forward" not in module.__dict__:
            module._peft_forward = module.forward
            module.forward = MethodType(_forward, module)
            count += 1
    return count
