"""Checks of what a call refuses: arguments F.conv2d rejects must be rejected too, with an exception
F.conv2d's callers already catch (its type, or a subclass), and when several things are wrong the one
F.conv2d names first is the one named. The tables hold convbench's own messages as well
(`implementations.prepare`, which tests/test_errors.py holds to them); the conformance checks ask only
what F.conv2d itself guarantees."""
from __future__ import annotations

import torch
import torch.nn.functional as F

X = (1, 4, 5, 5)
W = (2, 4, 3, 3)
# Deliberately stricter than F.conv2d, so not asked of other implementations: integer convolutions are
# out of scope (the fft path would silently return floats; F.conv2d accepts them on CPU in recent
# versions), and F.conv2d lets a CPU input meet a 'meta' weight where a real mismatch is meant.
STRICTER_THAN_PYTORCH = {"integer_input", "device_mismatch_meta"}


def _t(device: str):
    gen = torch.Generator().manual_seed(0)

    def t(*shape, dtype=torch.float32, device=device):
        if not dtype.is_floating_point:
            return torch.ones(*shape, dtype=dtype, device=device)
        return torch.randn(*shape, generator=gen, dtype=dtype).to(device)
    return t


def invalid_arguments(device: str = "cpu") -> list[tuple]:
    """(id, args, kwargs, exception type, regex of convbench's message) per invalid call."""
    t = _t(device)
    return [
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


def several_problems(device: str = "cpu") -> dict[str, tuple]:
    """Calls with several problems at once: name -> (args, kwargs)."""
    t = _t(device)
    T, D = t, torch.float64
    return {
        "groups0 + negative padding": ((T(*X), T(*W)), dict(groups=0, padding=-1)),
        "stride0 + negative padding": ((T(*X), T(*W)), dict(stride=0, padding=-1)),
        "dilation0 + stride0": ((T(*X), T(*W)), dict(stride=0, dilation=0)),
        "bias dtype + 2-D input": ((T(5, 5), T(*W), T(2, dtype=D)), {}),
        "bad padding string + 2-D input": ((T(5, 5), T(*W)), dict(padding="full")),
        "bad padding string + bias dtype": ((T(*X), T(*W), T(2, dtype=D)), dict(padding="full")),
        "groups0 + 3-D weight": ((T(*X), T(2, 4, 3)), dict(groups=0)),
        "3-D weight": ((T(*X), T(2, 4, 3)), {}),
        "2-D weight + groups0": ((T(*X), T(2, 4)), dict(groups=0)),
        "same + 3-D weight + groups0": ((T(*X), T(2, 4, 3)), dict(groups=0, padding="same")),
        "same + 5-D weight": ((T(*X), T(2, 4, 3, 3, 1)), dict(padding="same")),
        "weight dtype + negative padding": ((T(*X), T(*W, dtype=D)), dict(padding=-1)),
        "weight dtype + channels": ((T(*X), T(2, 3, 3, 3, dtype=D)), {}),
        "weight dtype + kernel too large": ((T(*X), T(2, 4, 7, 7, dtype=D)), {}),
        "channels + bias shape": ((T(*X), T(2, 3, 3, 3), T(3)), {}),
        "bias shape + kernel too large": ((T(*X), T(2, 4, 7, 7), T(3)), {}),
        "groups not dividing out channels + channels": ((T(*X), T(3, 2, 3, 3)), dict(groups=2)),
        "same + stride + dilation0": ((T(*X), T(*W)), dict(padding="same", stride=2, dilation=0)),
        "same + weight smaller than groups": ((T(*X), T(*W)), dict(padding="same", groups=3)),
        "same + bias dtype + channels": ((T(*X), T(2, 3, 3, 3), T(2, dtype=D)), dict(padding="same")),
        "bias dtype + weight dtype": ((T(*X), T(*W, dtype=D), T(2, dtype=torch.float16)), {}),
        "empty kernel": ((T(*X), T(2, 4, 0, 3)), {}),
        "stride of three + stride0": ((T(*X), T(*W)), dict(stride=(0, 1, 1))),
    }


def _theirs(args, kwargs):
    try:
        F.conv2d(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - F.conv2d's exception is what we compare with
        return exc
    return None


def rejects(fn, args, kwargs) -> None:
    """`fn` rejects what F.conv2d rejects, with an exception of F.conv2d's type (or a subclass)."""
    theirs = _theirs(args, kwargs)
    assert theirs is not None, "F.conv2d accepts this call: the table is wrong"
    try:
        fn(*args, **kwargs)
    except Exception as ours:  # noqa: BLE001 - any exception is judged below
        assert isinstance(ours, type(theirs)), (f"raised {type(ours).__name__}: {ours}; F.conv2d raises "
                                                f"{type(theirs).__name__}, which callers catch")
        return
    raise AssertionError(f"accepted arguments F.conv2d rejects ({type(theirs).__name__}: {theirs})")


def first_problem(fn, args, kwargs) -> None:
    """With several problems, the error names the one F.conv2d reports first, in its words."""
    theirs = _theirs(args, kwargs)
    assert theirs is not None, "F.conv2d accepts this call: the table is wrong"
    try:
        fn(*args, **kwargs)
    except Exception as ours:  # noqa: BLE001 - the message is judged below
        phrase = str(theirs).split(", but got")[0]
        assert phrase in str(ours), f"raised {type(ours).__name__}: {ours!s}; F.conv2d says first: {phrase}"
        return
    raise AssertionError(f"accepted arguments F.conv2d rejects ({type(theirs).__name__}: {theirs})")
