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


# ---------------------------------------------------------------- right values, but not a good citizen
# Each returns the right output (and gradients), so only the harness's integrity and repeat checks can
# tell: inputs must come back untouched, outputs must not alias inputs, every checked call must be right.
def _conv(input, weight, bias, stride, padding, dilation, groups):
    return F.conv2d(input, weight, bias, stride, padding, dilation, groups)


@implementations.register("sneaky_relu_into_x")
def relu_into_x(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """A fused ReLU written back into the caller's input."""
    out = _conv(input, weight, bias, stride, padding, dilation, groups)
    input.data.relu_()
    return out


@implementations.register("sneaky_scales_weight")
def scales_weight(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """A weight pre-scaling stored back into the caller's weight."""
    out = _conv(input, weight, bias, stride, padding, dilation, groups)
    weight.data.mul_(0.5)
    return out


@implementations.register("sneaky_zeroes_bias")
def zeroes_bias(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    out = _conv(input, weight, bias, stride, padding, dilation, groups)
    if bias is not None:
        bias.data.zero_()
    return out


class _ScalesGradOutput(torch.autograd.Function):
    """Identity forward; backward passes the right gradient on, then scales the caller's grad in place."""

    @staticmethod
    def forward(ctx, out):
        return out.clone()

    @staticmethod
    def backward(ctx, grad):
        result = grad.clone()
        grad.mul_(2)
        return result


@implementations.register("sneaky_scales_grad_out")
def scales_grad_out(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _ScalesGradOutput.apply(_conv(input, weight, bias, stride, padding, dilation, groups))


@implementations.register("sneaky_aliases_x")
def aliases_x(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Writes the (right) output into the input's own memory and returns that view: the result aliases
    x (and x is overwritten) where the output fits in x, else returns a fresh output. Detached, so its
    backward rows are errors; the forward rows tell why."""
    out = _conv(input, weight, bias, stride, padding, dilation, groups)
    flat = input.detach().reshape(-1)
    if flat.numel() < out.numel() or not input.is_contiguous():
        return out
    return flat[: out.numel()].copy_(out.detach().reshape(-1)).view(out.shape)


_calls: dict = {}


def _count(who: str, input, weight) -> int:
    """Calls of one implementation on one problem so far (jobs share the process)."""
    key = (who, tuple(input.shape), tuple(weight.shape))
    _calls[key] = _calls.get(key, 0) + 1
    return _calls[key]


@implementations.register("flaky_every_other_call")
def every_other_call(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Wrong on every second call of a problem (a race, an uninitialised buffer)."""
    out = _conv(input, weight, bias, stride, padding, dilation, groups)
    return out * 1.01 if _count("every_other", input, weight) % 2 == 0 else out


@implementations.register("stale_after_many_calls")
def stale_after_many_calls(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Right for the first 20 calls of a problem, then wrong (a cache that goes stale)."""
    out = _conv(input, weight, bias, stride, padding, dilation, groups)
    return out * 1.01 if _count("stale", input, weight) > 20 else out


def _round_mantissa(t, bits: int):
    mantissa, exponent = torch.frexp(t.detach())
    return torch.ldexp(torch.round(mantissa * 2 ** bits) / 2 ** bits, exponent)


@implementations.register("imprecise_within_tolerance")
def imprecise(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Inputs rounded to a 14-bit mantissa (like a transform-domain algorithm losing bits): within
    float32's tolerance, but many times the vendor's error. Gradients are exact (straight through)."""
    x = input + (_round_mantissa(input, 14) - input).detach()
    w = weight + (_round_mantissa(weight, 14) - weight).detach()
    return _conv(x, w, bias, stride, padding, dilation, groups)
