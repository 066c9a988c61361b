"""Invalid arguments: every built-in rejects what F.conv2d rejects, with one shared message that
names the problem, and an exception type that catches like F.conv2d's (RuntimeError) and like
Python's own argument errors (ValueError/TypeError)."""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

import implementations



IMPLS = implementations.names()


def t(*shape, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, dtype=dtype, device=device) if dtype.is_floating_point \
        else torch.ones(*shape, dtype=dtype, device=device)


X = (1, 4, 5, 5)
W = (2, 4, 3, 3)

# (id, args, kwargs, exception type, regex the message must match)
ERRORS = [
    ("kernel_larger_than_input", (t(*X), t(2, 4, 6, 6)), {}, ValueError, r"padded input .*5 x 5.* kernel \(6 x 6\)"),
    ("kernel_larger_than_padded_input", (t(*X), t(2, 4, 8, 3)), dict(padding=1), ValueError,
     r"padded input .*7 x 7.* kernel \(8 x 3\)"),
    ("dilated_kernel_larger_than_input", (t(*X), t(*W)), dict(dilation=(3, 1)), ValueError,
     r"padded input .*5 x 5.* dilated kernel \(7 x 3\)"),
    ("groups_not_dividing_in_channels", (t(*X), t(3, 1, 3, 3)), dict(groups=3), ValueError,
     r"in_channels \(4\) must be divisible by groups \(3\)"),
    ("groups_not_dividing_out_channels", (t(*X), t(3, 2, 3, 3)), dict(groups=2), ValueError,
     r"out_channels \(3\) must be divisible by groups \(2\)"),
    ("groups_zero", (t(*X), t(*W)), dict(groups=0), ValueError, r"groups must be a positive integer"),
    ("stride_zero", (t(*X), t(*W)), dict(stride=0), ValueError, r"non-positive stride"),
    ("stride_negative", (t(*X), t(*W)), dict(stride=(1, -2)), ValueError, r"non-positive stride"),
    ("stride_three_values", (t(*X), t(*W)), dict(stride=(1, 1, 1)), TypeError, r"stride must be an int or a pair"),
    ("dilation_zero", (t(*X), t(*W)), dict(dilation=0), ValueError, r"dilation must be positive"),
    ("same_with_stride", (t(*X), t(*W)), dict(padding="same", stride=2), ValueError,
     r"padding='same' is not supported for strided convolutions"),
    ("same_with_stride_one_dim", (t(*X), t(*W)), dict(padding="same", stride=(1, 2)), ValueError,
     r"padding='same' is not supported for strided"),
    ("invalid_padding_string", (t(*X), t(*W)), dict(padding="full"), ValueError, r"invalid padding string 'full'"),
    ("padding_string_case", (t(*X), t(*W)), dict(padding="SAME"), ValueError, r"invalid padding string 'SAME'"),
    ("negative_padding", (t(*X), t(*W)), dict(padding=-1), ValueError, r"negative padding"),
    ("negative_padding_pair", (t(*X), t(*W)), dict(padding=(0, -2)), ValueError, r"negative padding"),
    ("weight_wrong_in_channels", (t(*X), t(2, 3, 3, 3)), {}, ValueError,
     r"weight of shape \(2, 3, 3, 3\) does not fit input with 4 channels"),
    ("weight_wrong_in_channels_grouped", (t(*X), t(4, 4, 3, 3)), dict(groups=2), ValueError,
     r"weight of shape \(4, 4, 3, 3\) does not fit .*expected weight.shape\[1\] == 2"),
    ("weight_3d", (t(*X), t(2, 4, 3)), {}, ValueError, r"weight must be 4-D"),
    ("weight_5d", (t(*X), t(2, 4, 3, 3, 1)), {}, ValueError, r"weight must be 4-D"),
    ("input_2d", (t(5, 5), t(*W)), {}, ValueError, r"expected 3-D \(unbatched\) or 4-D \(batched\) input"),
    ("input_5d", (t(1, *X), t(*W)), {}, ValueError, r"expected 3-D \(unbatched\) or 4-D"),
    ("bias_wrong_length", (t(*X), t(*W), t(3)), {}, ValueError, r"bias must have shape \(2,\).*got \(3,\)"),
    ("bias_2d", (t(*X), t(*W), t(2, 1)), {}, ValueError, r"bias must have shape \(2,\).*got \(2, 1\)"),
    ("dtype_mismatch_weight", (t(*X), t(*W, dtype=torch.float64)), {}, TypeError,
     r"dtype mismatch .*input torch.float32, weight torch.float64"),
    ("dtype_mismatch_bias", (t(*X), t(*W), t(2, dtype=torch.float64)), {}, TypeError,
     r"dtype mismatch .*bias torch.float64"),
    ("integer_input", (t(*X, dtype=torch.int64), t(*W, dtype=torch.int64)), {}, TypeError,
     r"floating-point input, got torch.int64"),
    # The device check runs without CUDA too: a 'meta' weight is on another device than a CPU input.
    ("device_mismatch_meta", (t(*X), t(*W, device="meta")), {}, RuntimeError,
     r"device mismatch .*input on cpu, weight on meta"),
]


@pytest.mark.parametrize("args, kwargs, exc, match", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
@pytest.mark.parametrize("impl", IMPLS)
def test_invalid_arguments(impl, args, kwargs, exc, match):
    fn = implementations.get(impl)
    with pytest.raises(exc, match=match) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, RuntimeError), "should also be catchable like F.conv2d's RuntimeError"
    assert str(info.value).startswith("conv2d: ")


# Deliberately stricter than F.conv2d, so left out of the check below: integer convolutions are
# out of scope (the fft path would silently return floats; F.conv2d accepts them on CPU in recent
# versions), and F.conv2d lets a CPU input meet a 'meta' weight where a real mismatch is meant.
STRICTER_THAN_PYTORCH = {"integer_input", "device_mismatch_meta"}
PYTORCH_ALSO_REJECTS = [e for e in ERRORS if e[0] not in STRICTER_THAN_PYTORCH]


@pytest.mark.parametrize("args, kwargs", [e[1:3] for e in PYTORCH_ALSO_REJECTS],
                         ids=[e[0] for e in PYTORCH_ALSO_REJECTS])
def test_pytorch_rejects_the_same_arguments(args, kwargs):
    """Guards the table above: each case really is one F.conv2d refuses."""
    with pytest.raises((RuntimeError, ValueError, TypeError)):
        F.conv2d(*args, **kwargs)


def test_every_builtin_gives_the_same_message():
    """Checking is shared, so the messages are identical across implementations."""
    for name, args, kwargs, _, _ in ERRORS:
        messages = {}
        for impl in IMPLS:
            try:
                implementations.get(impl)(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - collecting the message is the point
                messages[impl] = f"{type(exc).__name__}: {exc}"
        assert len(set(messages.values())) == 1 and len(messages) == len(IMPLS), (name, messages)


@pytest.mark.parametrize("impl", IMPLS)
def test_unbatched_input_errors_use_its_channels(impl):
    """The channel check applies to a 3-D input's first dimension."""
    with pytest.raises(ValueError, match=r"does not fit input with 3 channels"):
        implementations.get(impl)(t(3, 5, 5), t(2, 4, 3, 3))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_mismatch_cuda():
    for impl in IMPLS:
        fn = implementations.get(impl)
        with pytest.raises(RuntimeError, match=r"device mismatch .*input on cpu, weight on cuda"):
            fn(t(*X), t(*W, device="cuda"))
        with pytest.raises(RuntimeError, match=r"device mismatch .*bias on cpu"):
            fn(t(*X, device="cuda"), t(*W, device="cuda"), t(2))
