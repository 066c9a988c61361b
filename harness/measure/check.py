"""Correctness against a float64 `F.conv2d` reference.

Errors are norm-wise relative (||got - ref|| / ||ref||) so one tolerance per dtype fits every shape:
elementwise relative error blows up where the reference is near zero. The tolerance scales with the
dtype's precision; it leaves room for long reductions (a weight gradient sums N*Hout*Wout products)
but a result that is wrong by 0.1% fails in float32."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .cases import Case
from .devices import same_device

# About 800 eps for float32 / float64 (reductions over millions of terms), about 10 eps for the
# 16-bit types, whose eps is already coarse.
TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 5e-2,
}
GRAD_NAMES = ("input", "weight", "bias")


def tolerance(dtype: torch.dtype) -> float:
    return TOLERANCE[dtype]


@dataclass
class Verdict:
    """The outcome of checking one pass's tensors."""
    correct: bool
    rel_err: float
    max_abs_err: float
    message: str = ""


class NotATensor(TypeError):
    """The implementation returned something other than a tensor: an error, not a wrong value."""


def reference(case: Case) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """F.conv2d in float64 on the case's own values: the output and the input/weight/bias gradients.
    MPS has no float64, so its reference runs on the CPU."""
    dev = "cpu" if case.x.device.type == "mps" else case.x.device
    leaves = {"input": case.x, "weight": case.weight}
    if case.bias is not None:
        leaves["bias"] = case.bias
    leaves = {k: v.detach().to(dev, torch.float64).requires_grad_() for k, v in leaves.items()}
    with warnings.catch_warnings():  # 'same' with an even kernel: PyTorch warns about a padded copy
        warnings.simplefilter("ignore", UserWarning)
        out = F.conv2d(leaves["input"], leaves["weight"], leaves.get("bias"), **case.kwargs)
    grads = torch.autograd.grad(out, list(leaves.values()), case.grad_out.to(dev, torch.float64))
    return out.detach(), dict(zip(leaves, grads))


def _compare_one(name: str, got, ref: torch.Tensor, dtype: torch.dtype, device: torch.device):
    """(rel_err, max_abs_err, problem or None) for one tensor."""
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
    ref_norm = float(torch.linalg.vector_norm(ref))
    rel = float(torch.linalg.vector_norm(diff)) / ref_norm if ref_norm > 0 else max_abs
    return rel, max_abs, None


def check_tensors(named: dict[str, object], refs: dict[str, torch.Tensor], dtype: torch.dtype,
            device: torch.device) -> Verdict:
    """Check every tensor of a pass; the worst one decides. Raises NotATensor for non-tensors."""
    tol = tolerance(dtype)
    rels, maxes, problems = [], [], []
    for name, ref in refs.items():
        got = named.get(name)
        if got is None:
            problems.append(f"{name}: no gradient (is the result detached from the inputs?)")
            rels.append(float("inf"))
            continue
        rel, max_abs, problem = _compare_one(name, got, ref, dtype, device)
        rels.append(rel)
        maxes.append(max_abs)
        if problem is None and not rel <= tol:  # `not <=` also catches NaN
            problem = f"{name}: relative error {rel:.3g} > tolerance {tol:.3g} (max abs error {max_abs:.3g})"
        if problem:
            problems.append(problem)
    worst_rel = max(rels) if rels else 0.0
    worst_abs = max(maxes) if maxes else float("nan")
    return Verdict(not problems, worst_rel, worst_abs, "; ".join(problems))
