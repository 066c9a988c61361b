"""Judging a result: a float64 `F.conv2d` reference on float64 copies of the *same* (already rounded)
inputs, so the only error measured is the implementation's own. Tolerances are relative to the
reference's norm and grow with the dtype's epsilon and the length of the sum behind each element."""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from .cases import Case

# Relative-norm tolerance floors per dtype; `tolerance` raises them for long reductions.
RTOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def reference(x, w, b, kwargs, grad_out=None):
    """F.conv2d in float64 on float64 copies of the inputs: (out, grad_x, grad_w, grad_b)."""
    x64 = x.detach().to(torch.float64).contiguous().requires_grad_()
    w64 = w.detach().to(torch.float64).contiguous().requires_grad_()
    b64 = b.detach().to(torch.float64).requires_grad_() if b is not None else None
    with warnings.catch_warnings():  # 'same' with an even kernel warns about a padded copy
        warnings.simplefilter("ignore", UserWarning)
        out = F.conv2d(x64, w64, b64, **kwargs)
    if grad_out is None:
        return out.detach(), None, None, None
    out.backward(grad_out.to(torch.float64))
    return out.detach(), x64.grad, w64.grad, (b64.grad if b64 is not None else None)


def tolerance(dtype: torch.dtype, reduction: int) -> float:
    """Relative-norm tolerance: a per-dtype floor, raised to 4·eps·sqrt(n) for a sum of n terms."""
    return max(RTOL[dtype], 4 * torch.finfo(dtype).eps * math.sqrt(max(reduction, 1)))


def assert_matches(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, reduction: int,
                   what: str) -> None:
    """`actual` (in `dtype`) against a float64 reference, relative to the reference's scale."""
    assert actual is not None, f"{what}: no value (gradient not computed?)"
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype} != {dtype}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    if expected.numel() == 0:
        return
    tol = tolerance(dtype, reduction)
    a, e = actual.detach().to(torch.float64).cpu(), expected.detach().to(torch.float64).cpu()
    ref_norm = e.norm().item()
    # Inputs are unit-scale by construction, so an RMS of 1 is the natural floor for the scale: it
    # keeps an all-zero reference (an output that only sees padding) from dividing by zero.
    scale = max(ref_norm, math.sqrt(e.numel()))
    rel = (a - e).norm().item() / scale
    assert rel <= tol, f"{what}: ||out - ref|| / ||ref|| = {rel:.3g} > {tol:.3g} (||ref|| = {ref_norm:.3g})"
    rms = scale / math.sqrt(max(e.numel(), 1))
    torch.testing.assert_close(a, e, rtol=tol, atol=10 * tol * rms, msg=lambda m: f"{what}: {m}")


def reductions(case: Case, out_shape) -> dict[str, int]:
    """Number of terms summed into one element of each tensor (drives the tolerance)."""
    c_out, c_g, kh, kw = case.weight
    groups = case.kwargs.get("groups", 1)
    n = case.input[0] if len(case.input) == 4 else 1
    ho, wo = out_shape[-2], out_shape[-1]
    return {"out": c_g * kh * kw, "grad_input": (c_out // groups) * kh * kw,
            "grad_weight": n * ho * wo, "grad_bias": n * ho * wo}
