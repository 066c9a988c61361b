"""Deliberately broken implementations: the harness must turn each into a row, not a crash."""
import torch
import torch.nn.functional as F

import implementations


@implementations.register("broken_raises")
def raises(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    raise RuntimeError("deliberate failure")


@implementations.register("broken_values")
def wrong_values(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return F.conv2d(input, weight, bias, stride, padding, dilation, groups) * 1.01


@implementations.register("broken_hangs")
def hangs(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    while True:
        pass


@implementations.register("broken_shape")
def wrong_shape(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return F.conv2d(input, weight, bias, stride, padding, dilation, groups)[..., 1:]


@implementations.register("broken_dtype")
def wrong_dtype(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return F.conv2d(input, weight, bias, stride, padding, dilation, groups).double()


@implementations.register("broken_nan")
def nan(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    out = F.conv2d(input, weight, bias, stride, padding, dilation, groups)
    return out + torch.where(out > 0.5, torch.nan, 0.0)


@implementations.register("broken_detached")
def detached(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return F.conv2d(input, weight, bias, stride, padding, dilation, groups).detach()


@implementations.register("broken_swallows")
def swallows_timeout(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Catches Exception around a hang: the budget must still stop it."""
    try:
        while True:
            pass
    except Exception:
        return F.conv2d(input, weight, bias, stride, padding, dilation, groups)
