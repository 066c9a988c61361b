"""Checks of what one call computes: the output and every gradient against float64 `F.conv2d`, in every
memory layout, call form and autograd mode a caller may use. Each check is `check(fn, case, dtype,
device, seed)`: it returns when the implementation conforms and raises AssertionError saying what is
wrong otherwise (`Unsupported` passes through: the runner records a skip)."""
from __future__ import annotations

import torch

from harness.measure.integrity import InputGuard

from .cases import Case, make_tensors
from .compare import assert_matches, reductions, reference


def values(fn, case: Case, dtype: torch.dtype, device: str, seed: int = 0) -> None:
    """Forward value, shape, dtype, device; then grad_input, grad_weight, grad_bias."""
    x, w, b = make_tensors(case, dtype, device, seed)
    gen = torch.Generator().manual_seed(seed + 1)  # the reference comes first: a call that modifies its
    shape = reference(x, w, b, case.kwargs)[0].shape  # inputs is then judged on what it was given
    grad_out = torch.randn(shape, generator=gen, dtype=torch.float64).to(device, dtype)
    ref, gx, gw, gb = reference(x, w, b, case.kwargs, grad_out)
    guard = InputGuard(x=x, weight=w, bias=b, grad_out=grad_out)
    out = fn(x, w, b, **case.kwargs)
    assert isinstance(out, torch.Tensor), f"returned a {type(out).__name__}, not a tensor"
    changed = guard.changes()  # a wrong value would otherwise be all it says
    assert not changed, "; ".join(changed)
    assert out.device == x.device, f"output on {out.device}, input on {x.device}"
    red = reductions(case, ref.shape)
    assert_matches(out, ref, dtype, red["out"], "forward")
    assert out.requires_grad, "the output does not require grad: the result is detached from the inputs"
    out.backward(grad_out)
    changed = guard.changes("by the backward")
    assert not changed, "; ".join(changed)
    assert_matches(x.grad, gx, dtype, red["grad_input"], "grad_input")
    assert_matches(w.grad, gw, dtype, red["grad_weight"], "grad_weight")
    if b is not None:
        assert_matches(b.grad, gb, dtype, red["grad_bias"], "grad_bias")


def layouts(fn, case: Case, dtype: torch.dtype, device: str, seed: int = 0) -> None:
    """channels_last and non-contiguous copies of the same tensors give the same output and grads."""
    x, w, b = make_tensors(case, dtype, device, seed)
    results = []
    for fmt in ("contiguous", "channels_last", "transposed"):
        if fmt == "channels_last":
            xi = x.detach().contiguous(memory_format=torch.channels_last)
            wi = w.detach().contiguous(memory_format=torch.channels_last)
        elif fmt == "transposed":
            xi = x.detach().transpose(-1, -2).contiguous().transpose(-1, -2)
            wi = w.detach().transpose(0, 1).contiguous().transpose(0, 1)
        else:
            xi, wi = x.detach(), w.detach()
        xi.requires_grad_(), wi.requires_grad_()
        out = fn(xi, wi, b, **case.kwargs)
        out.backward(torch.ones_like(out))
        results.append((fmt, out.detach().contiguous(), xi.grad.contiguous(), wi.grad.contiguous()))
    tol = 1e-12 if dtype == torch.float64 else 10 * torch.finfo(dtype).eps
    base = results[0]
    for fmt, out, gx, gw in results[1:]:
        for name, a, e in (("out", out, base[1]), ("grad_input", gx, base[2]), ("grad_weight", gw, base[3])):
            torch.testing.assert_close(a, e, rtol=tol, atol=tol, msg=lambda m: f"{fmt} {name} differs from contiguous: {m}")


def call_forms(fn, case: Case, dtype: torch.dtype, device: str, seed: int = 0) -> None:
    """F.conv2d's signature: positional and keyword calls are the same call."""
    x, w, b = make_tensors(case, dtype, device, seed)
    k = dict(dict(stride=1, padding=0, dilation=1, groups=1), **case.kwargs)
    pos = fn(x, w, b, k["stride"], k["padding"], k["dilation"], k["groups"])
    kw = fn(input=x, weight=w, bias=b, stride=k["stride"], padding=k["padding"], dilation=k["dilation"],
            groups=k["groups"])
    torch.testing.assert_close(pos, kw, rtol=0, atol=0, msg=lambda m: f"positional and keyword calls differ: {m}")
    assert_matches(pos, reference(x, w, b, k)[0], dtype, reductions(case, pos.shape)["out"], "positional call")


def grad_outputs(fn, case: Case, dtype: torch.dtype, device: str, seed: int = 0) -> None:
    """Real losses hand backward expanded (sum/mean), channels_last or transposed gradients."""
    for kind in ("expanded", "channels_last", "transposed"):
        x, w, b = make_tensors(case, dtype, device, seed=seed + 7)
        out = fn(x, w, b, **case.kwargs)
        ref, *_ = reference(x, w, b, case.kwargs)
        g = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 3))
        g = g.to(device, out.dtype)
        if kind == "expanded":  # what out.sum() * 0.5 hands back: a zero-stride view
            grad_out = torch.full((), 0.5, dtype=out.dtype, device=device).expand(out.shape)
        elif kind == "channels_last" and g.dim() == 4:
            grad_out = g.contiguous(memory_format=torch.channels_last)
        else:
            grad_out = g.transpose(-1, -2).contiguous().transpose(-1, -2)
        out.backward(grad_out)
        _, gx, gw, gb = reference(x, w, b, case.kwargs, grad_out.contiguous())
        red = reductions(case, ref.shape)
        for name, t, e in (("grad_input", x, gx), ("grad_weight", w, gw), ("grad_bias", b, gb)):
            if t is not None:
                assert_matches(t.grad, e, dtype, red[name], f"{kind} grad_out: {name}")


def requires_grad(fn, case: Case, dtype: torch.dtype, device: str, seed: int = 0) -> None:
    """Gradients for exactly the tensors that ask for them; none computed, none invented."""
    for wanted in ("x", "w", "b", "xw", "wb", ""):
        x, w, b = make_tensors(case, dtype, device, seed=seed + 5)
        for name, t in (("x", x), ("w", w), ("b", b)):
            if t is not None:
                t.requires_grad_(name in wanted)
        out = fn(x, w, b, **case.kwargs)
        asked = any(t is not None and t.requires_grad for t in (x, w, b))
        assert out.requires_grad == asked, f"requires_grad={wanted!r}: output.requires_grad is {out.requires_grad}"
        ref, gx, gw, gb = reference(x, w, b, case.kwargs, torch.ones_like(out))
        red = reductions(case, ref.shape)
        assert_matches(out, ref, dtype, red["out"], f"requires_grad={wanted!r} forward")
        if not asked:
            continue
        out.backward(torch.ones_like(out))
        for name, t, e, r in (("x", x, gx, "grad_input"), ("w", w, gw, "grad_weight"), ("b", b, gb, "grad_bias")):
            if t is None:
                continue
            if name in wanted:
                assert_matches(t.grad, e, dtype, red[r], f"requires_grad={wanted!r} grad {name}")
            else:
                assert t.grad is None, f"a gradient for {name}, which does not require one"


def no_grad(fn, case: Case, dtype: torch.dtype, device: str, seed: int = 0) -> None:
    """Under torch.no_grad and torch.inference_mode: the right values, and nothing requiring grad."""
    x, w, b = make_tensors(case, dtype, device, seed)
    ref = reference(x, w, b, case.kwargs)[0]
    for ctx in (torch.no_grad, torch.inference_mode):
        with ctx():
            out = fn(x, w, b, **case.kwargs)
        assert not out.requires_grad, f"the output requires grad under {ctx.__name__}"
        assert_matches(out, ref, dtype, reductions(case, ref.shape)["out"], f"under {ctx.__name__}")


def batch(fn, case: Case, dtype: torch.dtype, device: str, seed: int = 0) -> None:
    """Each image's result depends on that image only (batch chunking and offset errors): the batched
    call equals one call per image, and both match the reference."""
    values(fn, case, dtype, device, seed)
    x, w, b = make_tensors(case, dtype, device, seed)
    whole = fn(x, w, b, **case.kwargs)
    tol = 1e-12 if dtype == torch.float64 else 10 * torch.finfo(dtype).eps
    for i in range(x.shape[0]):
        torch.testing.assert_close(whole[i], fn(x[i], w, b, **case.kwargs), rtol=tol, atol=tol,
                                   msg=lambda m: f"image {i} of the batch differs from the image alone: {m}")


def gradcheck(fn, case: Case, dtype: torch.dtype, device: str, seed: int = 0, nondet_tol: float = 1e-12) -> None:
    """Finite differences in float64 against the implementation's own backward (`dtype` is float64).
    `nondet_tol`: how far two backward calls may differ (PyTorch OpInfo's GRADCHECK_NONDET_TOL; bitwise
    reproducibility is the `deterministic` check's)."""
    x, w, b = make_tensors(case, torch.float64, device, seed)
    inputs = (x, w, b) if b is not None else (x, w)

    def f(*t):
        return fn(t[0], t[1], t[2] if len(t) == 3 else None, **case.kwargs)

    torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, nondet_tol=nondet_tol)
