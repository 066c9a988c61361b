"""Built-ins with a hand-written backward share one wrapper: it saves only the input and the
weight (never the big intermediates, which the backward recomputes), derives the bias gradient,
and skips autograd's bookkeeping entirely when no gradient is wanted."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch.autograd.function import once_differentiable

from .params import ConvParams

Forward = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor], ConvParams], torch.Tensor]
# backward(grad_out, x, weight, p, need_x, need_w) -> (grad_x or None, grad_weight or None)
Backward = Callable[..., tuple]


def with_backward(forward: Forward, backward: Backward, name: str) -> Forward:
    """`forward(x, weight, bias, p)` made differentiable with `backward` (first-order gradients)."""

    def _forward(ctx, x, weight, bias, p):
        ctx.p = p
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight)
        return forward(x, weight, bias, p)

    @once_differentiable
    def _backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx, gw = backward(grad_out, x, weight, ctx.p, need_x, need_w)
        gb = grad_out.sum((0, 2, 3)) if need_b and ctx.has_bias else None
        return gx, gw, gb, None

    function = type(name, (torch.autograd.Function,), {
        "forward": staticmethod(_forward), "backward": staticmethod(_backward),
        "__doc__": f"{name}: a hand-written first-order backward around {forward.__module__}'s forward."})

    def run(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], p: ConvParams) -> torch.Tensor:
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
            return function.apply(x, weight, bias, p)
        return forward(x, weight, bias, p)

    return run
