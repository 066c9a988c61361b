"""Checks of a call's manners, which values alone miss: inputs come back untouched, an output is memory
of its own (no alias of an input, not overwritten by a later call), repeated calls are all right, and
bitwise equal. These are the harness's own checks (harness.measure.check.RepeatedChecks and
harness.measure.integrity), applied to the forward and to the backward of a saved graph."""
from __future__ import annotations

import torch

from harness.measure.check import RepeatedChecks
from harness.measure.integrity import InputGuard, as_bits, shared_memory

from .cases import Case, make_tensors
from .compare import assert_matches, reductions, reference

CALLS = 3  # checked calls on the same inputs, as the harness's check.calls default


def independent(fn, case: Case, dtype: torch.dtype, device: str, seed: int = 0) -> None:
    """Two calls on different inputs: the first call's inputs untouched, its output not overwritten by the
    second call (buffer reuse), and no output sharing memory with an input."""
    x1, w1, b1 = make_tensors(case, dtype, device, seed=seed + 1)
    x2, w2, b2 = make_tensors(case, dtype, device, seed=seed + 2)
    guard = InputGuard(x=x1, weight=w1, bias=b1)
    out1 = fn(x1, w1, b1, **case.kwargs)
    problems = guard.changes() + shared_memory({"output": out1}, guard.live)
    assert not problems, "; ".join(problems)
    kept = out1.detach().clone()
    out2 = fn(x2, w2, b2, **case.kwargs)
    if out2.requires_grad:  # (a detached result is the values check's finding)
        out2.sum().backward()
    problems += guard.changes("by a later call") + shared_memory({"output": out2}, {"x": x2, "weight": w2})
    n = int((as_bits(out1) != as_bits(kept)).sum())
    if n:
        problems.append(f"the first call's output changed when the implementation was called again ({n} elements)")
    assert not problems, "; ".join(problems)
    assert_matches(out1, reference(x1, w1, b1, case.kwargs)[0], dtype, reductions(case, kept.shape)["out"], "first call")


def _repeated(fn, case: Case, dtype: torch.dtype, device: str, seed: int) -> list[RepeatedChecks]:
    """CALLS checked forward calls, then CALLS checked backward calls of the first one's graph."""
    x, w, b = make_tensors(case, dtype, device, seed)
    g = torch.randn(reference(x, w, b, case.kwargs)[0].shape, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(seed + 1)).to(device, dtype)
    ref, gx, gw, gb = reference(x, w, b, case.kwargs, g)
    refs = {"input": gx, "weight": gw, **({"bias": gb} if b is not None else {})}
    fwd = RepeatedChecks({"output": ref}, dtype, torch.device(device), InputGuard(x=x, weight=w, bias=b))
    outs = []
    for i in range(CALLS):
        outs.append(fn(x, w, b, **case.kwargs))
        fwd.check(f"call {i + 1}", {"output": outs[-1]})
    leaves = [t for t in (x, w, b) if t is not None]
    assert outs[0].requires_grad, "the output does not require grad: the result is detached from the inputs"
    bwd = RepeatedChecks(refs, dtype, torch.device(device), InputGuard(x=x, weight=w, bias=b, grad_out=g))
    for i in range(CALLS):
        grads = torch.autograd.grad(outs[0], leaves, g, retain_graph=True, allow_unused=True)
        bwd.check(f"backward {i + 1}", dict(zip(("input", "weight", "bias"), grads)))
    return [fwd, bwd]


def repeat(fn, case: Case, dtype: torch.dtype, device: str, seed: int = 0) -> None:
    """Every one of several calls on the same inputs is right (within the harness's tolerance), leaves its
    inputs untouched, returns memory of its own, and keeps the earlier results intact."""
    for what, checks in zip(("forward", "backward"), _repeated(fn, case, dtype, device, seed)):
        v = checks.verdict()
        assert v.correct, f"{what}: {v.message}"


def deterministic(fn, case: Case, dtype: torch.dtype, device: str, seed: int = 0) -> None:
    """Several calls on the same inputs give bitwise-equal outputs and gradients (differences within
    tolerance are legal, cuDNN's atomic-add backward does it on a GPU: declare it an expected failure)."""
    for what, checks in zip(("forward", "backward"), _repeated(fn, case, dtype, device, seed)):
        v = checks.verdict()
        assert v.deterministic, (f"{what}: {v.calls} calls on the same inputs are not bitwise equal "
                                 f"(largest difference {v.repeat_max_diff:.3g})")
