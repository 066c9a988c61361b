"""Invalid arguments: every built-in rejects what F.conv2d rejects, with one shared message that
names the problem, and an exception type that catches like F.conv2d's (RuntimeError) and like
Python's own argument errors (ValueError/TypeError)."""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

import implementations
from convbench.testing import errors
from convbench.testing.errors import STRICTER_THAN_PYTORCH, invalid_arguments


IMPLS = implementations.names()


# The table lives in the conformance suite (convbench.testing.errors), which asks any implementation only
# what F.conv2d guarantees; here the built-ins are also held to convbench's own messages (the regexes).
ERRORS = invalid_arguments()
X, W = errors.X, errors.W


def t(*shape, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, dtype=dtype, device=device)


@pytest.mark.parametrize("args, kwargs, exc, match", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
@pytest.mark.parametrize("impl", IMPLS)
def test_invalid_arguments(impl, args, kwargs, exc, match):
    fn = implementations.get(impl)
    with pytest.raises(exc, match=match) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, RuntimeError), "should also be catchable like F.conv2d's RuntimeError"
    assert str(info.value).startswith("conv2d: ")


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
