"""The built-ins against PyTorch's own OpInfo for `nn.functional.conv2d`, read from the installed torch
at run time (needs the `expecttest` package). The conformance suite (convbench.testing.opinfo, run on
every built-in by tests/test_conformance.py) checks that each `error_inputs` entry raises PyTorch's
exception type with a message matching its regex and that each `sample_inputs` / `reference_inputs`
entry gives F.conv2d's result; here, what is convbench's own: its message comes first, and the OpInfo
is really read (enough samples and errors, none skipped by a built-in without shape limits)."""
from __future__ import annotations

import pytest
import torch

import implementations

pytest.importorskip("expecttest", reason="torch.testing._internal needs expecttest (pip install -e '.[dev]')")
from convbench.testing import check_conv2d, opinfo  # noqa: E402

# The built-ins are the implementations this package registers itself (not plug-ins, not entry points).
BUILTINS = sorted(name for name in implementations.names()
                  if getattr(implementations.get(name), "__module__", "").startswith("implementations."))
ERROR_INPUTS = opinfo.error_inputs("cpu")


def test_the_builtins_and_the_opinfo_are_found():
    assert {"loop", "unfold", "fft", "cudnn"} <= set(BUILTINS) and len(ERROR_INPUTS) >= 10
    assert len(opinfo.samples("cpu", torch.float32)) > 10 and len(opinfo.samples("cpu", torch.float64)) > 10


def test_importing_the_opinfo_leaves_torch_backends_settable():
    """torch.testing._internal freezes torch.backends' flags on import; the suite undoes it, else every
    later harness run in the process (it sets cudnn.benchmark) would fail."""
    opinfo.op()
    assert not torch.backends.flags_frozen()
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = not before
    torch.backends.cudnn.benchmark = before


@pytest.mark.parametrize("impl", BUILTINS)
@pytest.mark.parametrize("index", range(len(ERROR_INPUTS)))
def test_error_inputs_give_our_message_first(impl, index):
    error = ERROR_INPUTS[index]
    with pytest.raises(error.error_type) as info:
        implementations.get(impl)(error.sample_input.input, *error.sample_input.args, **error.sample_input.kwargs)
    assert str(info.value).startswith("conv2d: "), "our own clear message comes first"


@pytest.mark.parametrize("impl", ["loop", "unfold", "fft", "cudnn"])
def test_builtins_without_limits_compute_every_sample(impl):
    r = check_conv2d(impl, devices=["cpu"], dtypes=["float32"], checks=["opinfo_samples", "opinfo_errors"])
    assert r.ok and not r.by_status("skipped") and len(r.results) > 20, r.summary()
