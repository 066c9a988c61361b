"""The built-ins against PyTorch's own OpInfo for `nn.functional.conv2d`, read from the installed torch
at run time (so the check follows torch upgrades, not a copied list; needs the `expecttest` package):
every `error_inputs` entry must raise the same exception type with a message matching PyTorch's regex,
and every `sample_inputs` / `reference_inputs` entry must give F.conv2d's result (or `Unsupported`).
Every registered built-in is covered, including ones added later."""
from __future__ import annotations

import re
import warnings

import pytest
import torch
import torch.nn.functional as F

import implementations

pytest.importorskip("expecttest", reason="torch.testing._internal needs expecttest (pip install -e '.[dev]')")
from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402

# Importing torch.testing._internal freezes torch.backends' global flags (disable_global_flags), which
# would break every later test that runs the harness in this process (it sets cudnn.benchmark): undo it.
torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True
assert not torch.backends.flags_frozen()

OP = next(op for op in op_db if op.name == "nn.functional.conv2d")
# The built-ins are the implementations this package registers itself (not plug-ins, not entry points).
BUILTINS = sorted(name for name in implementations.names()
                  if getattr(implementations.get(name), "__module__", "").startswith("implementations."))
ERROR_INPUTS = list(OP.error_inputs("cpu"))


def _call(fn, sample):
    return fn(sample.input, *sample.args, **sample.kwargs)


def test_the_builtins_are_found():
    assert {"loop", "unfold", "fft", "cudnn"} <= set(BUILTINS) and len(ERROR_INPUTS) >= 10


@pytest.mark.parametrize("impl", BUILTINS)
@pytest.mark.parametrize("index", range(len(ERROR_INPUTS)))
def test_error_inputs_raise_like_pytorch(impl, index):
    error = ERROR_INPUTS[index]
    with pytest.raises(error.error_type) as info:
        _call(implementations.get(impl), error.sample_input)
    assert re.search(error.error_regex, str(info.value)), str(info.value)
    assert str(info.value).startswith("conv2d: "), "our own clear message comes first"


def _samples(dtype):
    for source in (OP.sample_inputs, OP.reference_inputs):
        yield from source("cpu", dtype, requires_grad=False)


def _in_float64(sample):
    """The sample's tensors as float64 copies: the reference sees exactly the values the call saw."""
    def up(v):
        return v.detach().double() if isinstance(v, torch.Tensor) else v
    return up(sample.input), [up(a) for a in sample.args], sample.kwargs


# Norm-relative, as every conformance check here: OpInfo draws values up to ~9, so outputs reach
# hundreds and an elementwise atol would judge a transform-based method (winograd) by its
# cancellation near zero rather than by its error.
REL_TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.float64, marks=pytest.mark.slow)])
@pytest.mark.parametrize("impl", BUILTINS)
def test_sample_and_reference_inputs_match_f_conv2d(impl, dtype):
    fn = implementations.get(impl)
    checked = 0
    for sample in _samples(dtype):
        x, args, kwargs = _in_float64(sample)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            want = F.conv2d(x, *args, **kwargs)
        try:
            got = _call(fn, sample)
        except implementations.Unsupported:
            continue
        assert got.shape == want.shape and got.dtype == dtype, f"{impl} on {sample}"
        norm = float(want.norm())
        rel = float((got.double() - want).norm()) / norm if norm else float((got.double() - want).abs().max())
        assert rel <= REL_TOL[dtype], f"{impl} on {sample}: relative error {rel:.3g} > {REL_TOL[dtype]:g}"
        checked += 1
    assert checked > 10


# Several problems at once: the first one F.conv2d reports is the one we report, in its words.
T = torch.randn
X, W, D = (1, 4, 5, 5), (2, 4, 3, 3), torch.float64
SEVERAL = {
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


@pytest.mark.parametrize("impl", BUILTINS)
@pytest.mark.parametrize("name", list(SEVERAL))
def test_the_first_problem_is_the_one_pytorch_reports(impl, name):
    args, kwargs = SEVERAL[name]
    with pytest.raises(RuntimeError) as theirs:
        F.conv2d(*args, **kwargs)
    with pytest.raises(RuntimeError) as ours:
        implementations.get(impl)(*args, **kwargs)
    assert str(theirs.value).split(", but got")[0] in str(ours.value), (str(ours.value), str(theirs.value))
