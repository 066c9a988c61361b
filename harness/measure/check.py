"""Correctness against a float64 `F.conv2d` reference.

Errors are norm-wise relative (||got - ref|| / ||ref||) so one tolerance per dtype fits every shape:
elementwise relative error blows up where the reference is near zero. The tolerance scales with the
dtype's precision; it leaves room for long reductions (a weight gradient sums N*Hout*Wout products)
but a result that is wrong by 0.1% fails in float32."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Optional

import torch

from harness.table.schema import clip

from .cases import Case
from .devices import same_device
from .integrity import InputGuard, as_bits, shared_memory

# About 800 eps for float32 / float64 (reductions over millions of terms), about 10 eps for the
# 16-bit types, whose eps is already coarse.
TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 5e-2,
}
# torch's own operator and autograd call, bound when this module is imported: in a worker that is
# before any plug-in (harness.measure.worker), so one that replaces F.conv2d, torch.conv2d or
# torch.autograd.grad later cannot change what the rows are judged against.
_CONV2D = torch._C._VariableFunctions.conv2d  # what F.conv2d is, both padding overloads
_GRAD = torch.autograd.grad


def tolerance(dtype: torch.dtype) -> float:
    return TOLERANCE[dtype]


@dataclass
class Verdict:
    """The outcome of checking one pass's tensors (of one call, or the worst of several: `RepeatedChecks`)."""
    correct: bool
    rel_err: float
    max_abs_err: float
    message: str = ""
    calls: int = 1                           # checked calls behind this verdict
    deterministic: Optional[bool] = None     # bitwise-equal results across them (None: one call)
    repeat_max_diff: Optional[float] = None  # largest |difference| between their results


class NotATensor(TypeError):
    """The implementation returned something other than a tensor: an error, not a wrong value."""


def reference(case: Case) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """torch's conv2d in float64 on the case's own values: the output and the input/weight/bias
    gradients. MPS has no float64, so its reference runs on the CPU."""
    dev = "cpu" if case.x.device.type == "mps" else case.x.device
    leaves = {"input": case.x, "weight": case.weight}
    if case.bias is not None:
        leaves["bias"] = case.bias
    leaves = {k: v.detach().to(dev, torch.float64).requires_grad_() for k, v in leaves.items()}
    with warnings.catch_warnings():  # 'same' with an even kernel: PyTorch warns about a padded copy
        warnings.simplefilter("ignore", UserWarning)
        out = _CONV2D(leaves["input"], leaves["weight"], leaves.get("bias"), **case.kwargs)
    grads = _GRAD(out, list(leaves.values()), case.grad_out.to(dev, torch.float64))
    return out.detach(), dict(zip(leaves, grads))


def _compare_one(name: str, got, ref: torch.Tensor, dtype: torch.dtype, device: torch.device,
                 norm: Optional[float] = None):
    """(rel_err, max_abs_err, problem or None) for one tensor; `norm` replaces the reference's own
    norm as the error's scale (an analytically zero reference, see `zero_references`)."""
    if not isinstance(got, torch.Tensor):
        raise NotATensor(f"{name}: returned {type(got).__name__}, not a tensor")
    if tuple(got.shape) != tuple(ref.shape):
        return float("inf"), float("nan"), f"{name}: shape {tuple(got.shape)}, expected {tuple(ref.shape)}"
    if got.dtype != dtype:
        return float("inf"), float("nan"), f"{name}: dtype {got.dtype}, expected {dtype}"
    if not same_device(got.device, device):
        return float("inf"), float("nan"), f"{name}: on {got.device}, expected {device}"
    g = got.detach().to(ref.device, torch.float64)
    finite = torch.isfinite(g)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        return float("inf"), float("nan"), f"{name}: {bad} of {g.numel()} values are NaN or Inf"
    diff = g - ref
    max_abs = float(diff.abs().max()) if diff.numel() else 0.0
    ref_norm = float(torch.linalg.vector_norm(ref)) if norm is None else norm
    rel = float(torch.linalg.vector_norm(diff)) / ref_norm if ref_norm > 0 else max_abs
    return rel, max_abs, None


ZERO_REFERENCE = 1e-12  # a float64 reference this small against all of a pass's tensors together is rounding noise


def zero_references(refs: dict[str, torch.Tensor]) -> tuple[set[str], float]:
    """(names of analytically zero references, the norm of all references together). A gradient whose
    float64 reference is rounding noise (a network's attention key bias: softmax ignores a constant
    shift) has no relative error to speak of, noise over noise; its error is measured against all
    the pass's tensors' norm instead (`check_tensors(..., zero_against_all=True)`)."""
    norms = {k: float(torch.linalg.vector_norm(r)) for k, r in refs.items()}
    scale = sum(n * n for n in norms.values()) ** 0.5
    if len(refs) < 2 or scale == 0:
        return set(), scale
    return {k for k, n in norms.items() if n <= ZERO_REFERENCE * scale}, scale


def check_tensors(named: dict[str, object], refs: dict[str, torch.Tensor], dtype: torch.dtype,
                  device: torch.device, zero_against_all: bool = False) -> Verdict:
    """Check every tensor of a pass; the worst one decides. Raises NotATensor for non-tensors.
    `zero_against_all` (a whole network's gradients): an analytically zero reference's error is
    relative to all references' norm (`zero_references`)."""
    tol = tolerance(dtype)
    zero, scale = zero_references(refs) if zero_against_all else (set(), 0.0)
    rels, maxes, problems = [], [], []
    for name, ref in refs.items():
        got = named.get(name)
        if got is None:
            problems.append(f"{name}: no gradient (is the result detached from the inputs?)")
            rels.append(float("inf"))
            continue
        rel, max_abs, problem = _compare_one(name, got, ref, dtype, device, scale if name in zero else None)
        rels.append(rel)
        maxes.append(max_abs)
        if problem is None and not rel <= tol:  # `not <=` also catches NaN
            problem = (f"{name}: error {rel:.3g} of all gradients' norm > tolerance {tol:.3g} (its reference is zero)"
                       if name in zero else
                       f"{name}: relative error {rel:.3g} > tolerance {tol:.3g} (max abs error {max_abs:.3g})")
        if problem:
            problems.append(problem)
    worst_rel = max(rels) if rels else 0.0
    worst_abs = max(maxes) if maxes else float("nan")
    return Verdict(not problems, worst_rel, worst_abs, "; ".join(problems))


# ------------------------------------------------------------------------------ repeated calls
def repeat_difference(first: torch.Tensor, later: torch.Tensor) -> tuple[bool, float]:
    """(bitwise equal, largest |difference| over elements finite in both) of two results of one call."""
    if first.shape != later.shape or first.dtype != later.dtype:
        return False, float("inf")
    a, b = first.detach(), later.detach().to(first.device)
    equal = bool(torch.equal(as_bits(a), as_bits(b)))
    if equal or a.numel() == 0:
        return equal, 0.0
    a, b = a.to(torch.float64), b.to(torch.float64)
    both = torch.isfinite(a) & torch.isfinite(b)
    return False, float((a - b)[both].abs().max()) if bool(both.any()) else float("nan")


def call_labels(calls: int) -> tuple[list[str], Optional[str]]:
    """(labels of the checked calls made before the timing, label of the one after it or None):
    1 -> the first call only; 2 -> the first and one after the timed runs; n >= 3 -> the first, a
    second, n - 3 more, and one after the timed runs."""
    before = ["first call"] + (["second call"] if calls >= 3 else []) + [f"call {i}" for i in range(3, calls)]
    return before, ("call after the timed runs" if calls >= 2 else None)


@dataclass
class RepeatedChecks:
    """Every checked call of one pass: each is judged against the reference (`check_tensors`), its
    inputs must be untouched (`InputGuard`) and its outputs not alias them, and its results are
    compared bitwise with the first call's. The worst call decides the verdict; a call whose results
    differ from the first only within tolerance stays correct, but `deterministic` says so."""
    refs: dict[str, torch.Tensor]
    dtype: torch.dtype
    device: torch.device
    guard: InputGuard
    problems: list[tuple[str, str]] = field(default_factory=list)  # (when, problem)
    verdicts: list[Verdict] = field(default_factory=list)
    _first: Optional[dict] = None        # copies of the first call's results
    _first_live: Optional[dict] = None   # the first call's results themselves (are they overwritten later?)
    _equal: bool = True
    _max_diff: float = 0.0

    def check(self, label: str, got: dict[str, object]) -> None:
        """Judge one call's results (raises NotATensor, like `check_tensors`)."""
        v = check_tensors(got, self.refs, self.dtype, self.device)
        problems = ([v.message] if v.message else []) + self.guard.changes() + shared_memory(got, self.guard.live)
        tensors = {k: t for k, t in got.items() if isinstance(t, torch.Tensor)}
        if self._first is None:
            self._first = {k: t.detach().clone() for k, t in tensors.items()}
            self._first_live = tensors
        else:
            for k, t in tensors.items():
                equal, diff = repeat_difference(self._first[k], t) if k in self._first else (False, float("inf"))
                self._equal &= equal
                self._max_diff = max(self._max_diff, diff) if diff == diff else diff
            for k, t in self._first_live.items():
                n = int((as_bits(t) != as_bits(self._first[k])).sum())
                if n:  # e.g. a reused internal buffer returned as the result
                    problems.append(f"{k} of the first call changed afterwards ({n} elements): the result "
                                    "is memory the implementation writes again later")
                    self._first_live = {}
                    break
        if problems:
            v.correct = False
            self.problems += [(label, p) for p in problems]
        self.verdicts.append(v)

    def check_untouched_since(self, when: str) -> None:
        """Inputs modified between checked calls (during the timing) are reported with `when`."""
        changes = self.guard.changes(when)
        if changes:
            self.problems += [("", p) for p in changes]
            if self.verdicts:
                self.verdicts[-1].correct = False

    def message(self) -> str:
        """Each distinct problem once, with the calls it happened in: 'x was modified in place by the
        call: 196 of 384 elements changed (first call, second call, call after the timed runs)'."""
        calls: dict[str, list[str]] = {}
        for label, problem in self.problems:
            calls.setdefault(problem, [])
            if label:
                calls[problem].append(label)
        n = len(self.verdicts)
        return "; ".join(f"{p} [{', '.join(labels)}; {n} calls checked]" if labels else p for p, labels in calls.items())

    def verdict(self) -> Verdict:
        """The worst call decides; repeat columns compare every call with the first."""
        vs = self.verdicts
        message = self.message()
        return Verdict(correct=all(v.correct for v in vs) and not self.problems,
                       rel_err=max(v.rel_err for v in vs),
                       max_abs_err=max((v.max_abs_err for v in vs), key=lambda m: -1 if m != m else m),
                       message=clip(message, 1000),
                       calls=len(vs),
                       deterministic=self._equal if len(vs) > 1 else None,
                       repeat_max_diff=self._max_diff if len(vs) > 1 else None)
