"""A plug-in that is `F.conv2d` made slower by a known factor: what `make bench-aa` plants to see
whether `compare` finds a real change (an A/B test) and stays quiet without one (A/A).

    CONVBENCH_PLANTED_FACTOR=1.3 PYTHONPATH=examples python -m harness -m plugins=[planted_slowdown] \\
        impl=planted,cudnn suite=smoke

Each call (forward and backward) times its own work and then busy-waits (factor - 1) x that long, so
the slowdown is calibrated on whatever machine runs it. The factor is read on every call from
`CONVBENCH_PLANTED_FACTOR` (default 1.0), so the same name is swept in both runs of a comparison."""
from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F

import implementations


def _factor() -> float:
    return float(os.environ.get("CONVBENCH_PLANTED_FACTOR", "1.0"))


def _stretch(t0: float) -> None:
    """Busy-wait until the work since t0 has taken `factor` times as long as it did."""
    end = t0 + _factor() * (time.perf_counter() - t0)
    while time.perf_counter() < end:
        pass


class _Planted(torch.autograd.Function):
    """F.conv2d's forward; a backward from torch.nn.grad's own gradient kernels, stretched the same way."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, dilation, groups):
        ctx.save_for_backward(x, weight)
        ctx.args, ctx.has_bias = (stride, dilation, groups), bias is not None
        return F.conv2d(x, weight, bias, stride, 0, dilation, groups)

    @staticmethod
    def backward(ctx, grad_out):
        t0 = time.perf_counter()
        x, weight = ctx.saved_tensors
        stride, dilation, groups = ctx.args
        gx = torch.nn.grad.conv2d_input(x.shape, weight, grad_out, stride, 0, dilation, groups)
        gw = torch.nn.grad.conv2d_weight(x, weight.shape, grad_out, stride, 0, dilation, groups)
        gb = grad_out.sum((0, 2, 3)) if ctx.has_bias else None
        _stretch(t0)
        return gx, gw, gb, None, None, None


@implementations.register("planted")
def planted(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """F.conv2d, CONVBENCH_PLANTED_FACTOR times as slow (forward and backward)."""
    t0 = time.perf_counter()
    x, weight, bias, p, unbatched = implementations.prepare(input, weight, bias, stride, padding, dilation, groups)
    out = _Planted.apply(F.pad(x, p.pad_lrtb), weight, bias, p.stride, p.dilation, p.groups)
    out = out.squeeze(0) if unbatched else out
    _stretch(t0)
    return out
