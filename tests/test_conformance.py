"""Every built-in against a float64 `F.conv2d` reference: forward output and every gradient.

The reference runs on float64 copies of the *same* (already rounded) inputs, so the only error
measured is the implementation's own. Tolerances are relative to the reference's norm and grow
with the dtype's epsilon and the length of the sum behind each output element.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import implementations



IMPLS = implementations.names()
BUILTINS = ("cudnn", "fft", "loop", "unfold", "winograd", "winograd_f2")
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# Relative-norm tolerance floors per dtype; `tolerance` raises them for long reductions.
RTOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def test_builtins_are_registered():
    assert set(BUILTINS) <= set(IMPLS)


def _not_3x3_stride1(case: "Case") -> bool:
    k = case.kwargs
    return (case.weight[2:] != (3, 3) or k.get("stride", 1) not in (1, (1, 1))
            or k.get("dilation", 1) not in (1, (1, 1)))


# Built-ins that cover only some shapes: impl -> "this case must be refused" (raise Unsupported).
# Written out here, not asked of the implementation, so a wrong refusal (or a missing one) fails.
SHAPE_LIMITS = {"winograd": _not_3x3_stride1, "winograd_f2": _not_3x3_stride1}


def refuses(impl: str, case: "Case") -> bool:
    return impl in SHAPE_LIMITS and SHAPE_LIMITS[impl](case)


def supported_case(impl: str, case: "Case") -> "Case":
    """`case`, or for an implementation that must refuse it, the same tensors and options with a 3x3
    kernel at stride 1 and dilation 1 (so single-case tests still exercise every built-in)."""
    if not refuses(impl, case):
        return case
    kwargs = dict(case.kwargs, stride=1, dilation=1)
    if kwargs.get("padding", 0) != "same":
        kwargs["padding"] = 1
    return Case(case.name + "_as_3x3", case.input, case.weight[:2] + (3, 3), case.bias, kwargs, case.layout)


# ----------------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class Case:
    """One conv2d call: shapes, keyword arguments and how the input tensor is laid out in memory."""

    name: str
    input: tuple[int, ...]
    weight: tuple[int, int, int, int]
    bias: bool
    kwargs: dict = field(default_factory=dict)
    layout: str = "contiguous"  # contiguous | channels_last | transposed | sliced

    def __repr__(self) -> str:
        return self.name


CASES = [
    # PyTorch's own conv2d OpInfo sample inputs (common_methods_invocations.sample_inputs_conv2d).
    Case("opinfo_stride2_pad2", (1, 3, 4, 4), (3, 3, 3, 3), True, dict(stride=(2, 2), padding=2)),
    Case("opinfo_groups2_dil4", (2, 4, 8, 8), (2, 2, 3, 3), True,
         dict(stride=(3, 2), padding=(2, 1), groups=2, dilation=(4, 4))),
    Case("opinfo_k2x3_dil2x3", (1, 4, 5, 5), (1, 4, 2, 3), True, dict(stride=2, padding=1, dilation=(2, 3))),
    Case("opinfo_nobias_k3x4", (1, 2, 4, 3), (4, 2, 3, 4), False, dict(stride=2, padding=1)),
    Case("opinfo_valid_stride2", (1, 4, 5, 5), (1, 4, 2, 3), True, dict(stride=2, padding="valid")),
    Case("opinfo_same_dil3", (1, 4, 5, 5), (1, 4, 2, 3), True, dict(stride=1, padding="same", dilation=3)),
    Case("opinfo_depthwise", (2, 4, 6, 6), (4, 1, 3, 3), True, dict(groups=4)),
    Case("opinfo_depthwise_mult2", (2, 4, 6, 6), (8, 1, 3, 3), True, dict(groups=4)),
    Case("opinfo_depthwise_stride3x2", (2, 4, 6, 6), (4, 1, 3, 3), True, dict(groups=4, stride=(3, 2))),
    Case("opinfo_depthwise_dil2", (2, 4, 5, 5), (4, 1, 2, 2), True, dict(groups=4, dilation=(2, 2))),
    Case("opinfo_groups2_k3x2", (2, 4, 6, 5), (6, 2, 3, 2), True, dict(groups=2)),
    Case("opinfo_defaults_nobias", (1, 4, 5, 5), (3, 4, 3, 3), False, {}),
    # Argument forms: the same convolution with ints and with tuples.
    Case("int_args", (2, 3, 7, 7), (4, 3, 3, 3), True, dict(stride=2, padding=1, dilation=1, groups=1)),
    Case("tuple_args", (2, 3, 7, 7), (4, 3, 3, 3), True,
         dict(stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=1)),
    Case("positional_defaults", (2, 3, 5, 6), (2, 3, 2, 2), True, {}),
    # 'same' with an odd total padding: PyTorch puts the extra row/column at the bottom/right.
    Case("same_even_kernel", (1, 2, 6, 7), (3, 2, 4, 2), True, dict(padding="same")),
    Case("same_even_kernel_dilated", (2, 2, 9, 8), (2, 2, 2, 4), True, dict(padding="same", dilation=(3, 2))),
    Case("same_even_grouped_nobias", (1, 4, 5, 6), (6, 2, 2, 2), False, dict(padding="same", groups=2)),
    Case("same_odd_kernel_dilated", (1, 3, 7, 7), (2, 3, 3, 3), True, dict(padding="same", dilation=2)),
    Case("valid_explicit", (2, 3, 6, 5), (2, 3, 3, 2), False, dict(padding="valid", dilation=(1, 2))),
    # Layouts and dimensionality.
    Case("unbatched", (3, 6, 6), (4, 3, 3, 3), True, dict(padding=1)),
    Case("unbatched_same_even_groups", (4, 5, 6), (4, 2, 2, 3), True, dict(padding="same", groups=2)),
    Case("transposed_view", (2, 3, 7, 6), (4, 3, 3, 2), True, dict(stride=(1, 2), padding=(1, 0)),
         layout="transposed"),
    Case("sliced_view", (2, 3, 6, 5), (2, 3, 3, 3), True, dict(padding=1, groups=1), layout="sliced"),
    Case("channels_last", (2, 4, 6, 7), (6, 2, 3, 3), True, dict(stride=(2, 1), padding=1, groups=2),
         layout="channels_last"),
    Case("channels_last_same_even", (1, 3, 5, 5), (2, 3, 2, 2), False, dict(padding="same"),
         layout="channels_last"),
    # 3x3 at stride 1 in every padding form (what `winograd` covers): 'same', 'valid', tuples,
    # padding beyond the kernel, outputs that are no multiple of the 4x4 (2x2) tiles, channels_last.
    Case("k3_same_ragged", (2, 3, 9, 7), (4, 3, 3, 3), True, dict(padding="same")),
    Case("k3_valid", (1, 4, 7, 10), (2, 4, 3, 3), False, dict(padding="valid")),
    Case("k3_tuple_pad_large", (2, 2, 5, 6), (3, 2, 3, 3), True, dict(padding=(3, 0))),
    Case("k3_channels_last_grouped", (2, 4, 6, 7), (6, 2, 3, 3), True, dict(padding=(1, 2), groups=2),
         layout="channels_last"),
    # Kernel/stride extremes.
    Case("kernel_1x1", (2, 5, 4, 4), (3, 5, 1, 1), True, {}),
    Case("kernel_1x1_stride2_pad1", (2, 4, 5, 5), (6, 4, 1, 1), False, dict(stride=2, padding=1)),
    Case("stride_gt_kernel", (1, 2, 9, 10), (3, 2, 2, 2), True, dict(stride=(3, 4))),
    Case("kernel_eq_padded_input", (2, 3, 4, 5), (2, 3, 6, 7), True, dict(padding=1)),
    Case("kernel_eq_input", (1, 2, 5, 4), (3, 2, 5, 4), False, {}),
    Case("dilated_kernel_eq_input", (1, 2, 5, 5), (2, 2, 3, 3), True, dict(dilation=2)),
    Case("padding_gt_kernel", (1, 2, 3, 3), (2, 2, 2, 2), True, dict(padding=(3, 2))),
    Case("empty_batch", (0, 2, 5, 5), (3, 2, 3, 3), True, dict(padding=1)),
    Case("groups3_mult_and_per_group", (1, 6, 5, 5), (9, 2, 3, 3), True, dict(groups=3, padding=(0, 1))),
]
CASE_IDS = [c.name for c in CASES]


def make_input(case: Case, dtype: torch.dtype, device: str, gen: torch.Generator) -> torch.Tensor:
    """A leaf input laid out as the case says; the values depend only on the seed, not the layout."""
    shape = case.input
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    if case.layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif case.layout == "transposed":  # strides of a transpose: W is the slow dimension
        x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    elif case.layout == "sliced":  # every other channel, every other column of a larger buffer
        big = torch.zeros(*shape[:-3], 2 * shape[-3], shape[-2], 2 * shape[-1] + 1, dtype=dtype, device=device)
        x = big[..., ::2, :, 1::2].copy_(x)
    return x.detach().requires_grad_()  # detach keeps the strides: a non-contiguous leaf


def make_tensors(case: Case, dtype: torch.dtype, device: str = "cpu", seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = make_input(case, dtype, device, gen)
    fan_in = case.weight[1] * case.weight[2] * case.weight[3]
    w = (torch.randn(case.weight, generator=gen, dtype=torch.float64) / math.sqrt(fan_in)).to(device, dtype)
    if case.layout == "channels_last":
        w = w.contiguous(memory_format=torch.channels_last)
    w.requires_grad_()
    b = torch.randn(case.weight[0], generator=gen, dtype=torch.float64).to(device, dtype).requires_grad_() \
        if case.bias else None
    return x, w, b


# ----------------------------------------------------------------------------------------------
# Reference and comparison


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


def check_case(impl: str, case: Case, dtype: torch.dtype, device: str = "cpu", seed: int = 0) -> None:
    """Forward value, shape, dtype, device; then grad_input, grad_weight, grad_bias."""
    fn = implementations.get(impl)
    x, w, b = make_tensors(case, dtype, device, seed)
    out = fn(x, w, b, **case.kwargs)
    gen = torch.Generator().manual_seed(seed + 1)
    grad_out = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(device, dtype)
    ref, gx, gw, gb = reference(x, w, b, case.kwargs, grad_out)
    assert out.device == x.device, f"output on {out.device}, input on {x.device}"
    red = reductions(case, ref.shape)
    assert_matches(out, ref, dtype, red["out"], f"{impl}/{case.name}/{dtype} forward")
    out.backward(grad_out)
    assert_matches(x.grad, gx, dtype, red["grad_input"], f"{impl}/{case.name}/{dtype} grad_input")
    assert_matches(w.grad, gw, dtype, red["grad_weight"], f"{impl}/{case.name}/{dtype} grad_weight")
    if b is not None:
        assert_matches(b.grad, gb, dtype, red["grad_bias"], f"{impl}/{case.name}/{dtype} grad_bias")


def check_unsupported(impl: str, case: Case, dtype: torch.dtype, device: str = "cpu") -> None:
    """A declared-unsupported (device, dtype) must refuse clearly, never return garbage: it raises
    `Unsupported`, or another error whose message names the dtype."""
    fn = implementations.get(impl)
    x, w, b = make_tensors(case, dtype, device)
    try:
        fn(x, w, b, **case.kwargs)
    except implementations.Unsupported:
        return
    except Exception as exc:  # noqa: BLE001 - any other error must at least say which dtype
        dtype_name = str(dtype).replace("torch.", "")
        assert dtype_name in str(exc) or str(dtype) in str(exc), f"{impl}: {exc!r} does not name {dtype_name}"
        return
    pytest.fail(f"{impl} declares {dtype} unsupported on {device} but returned a result")


def check_refuses_shape(impl: str, case: Case, dtype: torch.dtype, device: str = "cpu") -> None:
    """A shape outside an implementation's `SHAPE_LIMITS` raises `Unsupported` (the harness records
    'unsupported', not 'error'), with a reason."""
    x, w, b = make_tensors(case, dtype, device)
    with pytest.raises(implementations.Unsupported, match=r"\w"):
        implementations.get(impl)(x, w, b, **case.kwargs)


# ----------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("impl", IMPLS)
def test_forward_backward_matches_reference(impl, case, dtype):
    reason = implementations.unsupported_reason(implementations.get(impl), "cpu", dtype)
    if reason is not None:
        check_unsupported(impl, case, dtype)
    elif refuses(impl, case):
        check_refuses_shape(impl, case, dtype)
    else:
        check_case(impl, case, dtype)


def test_layout_cases_really_are_non_contiguous():
    """Guards the layout cases above against silently testing contiguous tensors."""
    for case in CASES:
        x, w, _ = make_tensors(case, torch.float32)
        if case.layout in ("transposed", "sliced"):
            assert not x.is_contiguous(), case.name
        if case.layout == "channels_last":
            assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous(), case.name
            assert not w.is_contiguous(), case.name


LAYOUT_CASES = [c for c in CASES if c.name in (
    "opinfo_stride2_pad2", "opinfo_groups2_dil4", "opinfo_same_dil3", "opinfo_depthwise_mult2", "opinfo_groups2_k3x2",
    "same_even_kernel_dilated", "kernel_1x1", "kernel_1x1_stride2_pad1", "stride_gt_kernel", "kernel_eq_padded_input")]


@pytest.mark.parametrize("case", LAYOUT_CASES, ids=[c.name for c in LAYOUT_CASES])
@pytest.mark.parametrize("impl", IMPLS)
def test_values_independent_of_memory_format(impl, case):
    """channels_last and non-contiguous copies of the same tensors give the same output and grads."""
    fn = implementations.get(impl)
    case = supported_case(impl, case)
    x, w, b = make_tensors(case, torch.float64)
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
    base = results[0]
    for fmt, out, gx, gw in results[1:]:
        for name, a, e in (("out", out, base[1]), ("grad_input", gx, base[2]), ("grad_weight", gw, base[3])):
            torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=lambda m: f"{impl} {fmt} {name}: {m}")


@pytest.mark.parametrize("impl", IMPLS)
def test_keyword_and_positional_calls_agree(impl):
    """`get(name)` has F.conv2d's signature: positional and keyword calls are the same call."""
    fn = implementations.get(impl)
    case = supported_case(impl, CASES[1])
    x, w, b = make_tensors(case, torch.float64)
    k = case.kwargs
    pos = fn(x, w, b, k["stride"], k["padding"], k["dilation"], k["groups"])
    kw = fn(input=x, weight=w, bias=b, stride=k["stride"], padding=k["padding"], dilation=k["dilation"],
            groups=k["groups"])
    torch.testing.assert_close(pos, kw, rtol=0, atol=0)
    assert_matches(pos, reference(x, w, b, k)[0], torch.float64, 1, f"{impl} positional")


GRAD_OUT_CASES = [c for c in CASES if c.name in (
    "opinfo_groups2_dil4", "same_even_kernel_dilated", "channels_last", "kernel_1x1", "unbatched",
    "groups3_mult_and_per_group")]


@pytest.mark.parametrize("case", GRAD_OUT_CASES, ids=[c.name for c in GRAD_OUT_CASES])
@pytest.mark.parametrize("impl", IMPLS)
def test_backward_with_unusual_grad_outputs(impl, case):
    """Real losses hand backward expanded (sum/mean), channels_last or transposed gradients."""
    fn = implementations.get(impl)
    case = supported_case(impl, case)
    for kind in ("expanded", "channels_last", "transposed"):
        x, w, b = make_tensors(case, torch.float64, seed=7)
        out = fn(x, w, b, **case.kwargs)
        ref, *_ = reference(x, w, b, case.kwargs)
        g = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(3))
        if kind == "expanded":  # what out.sum() * 0.5 hands back: a zero-stride view
            grad_out = torch.full((), 0.5, dtype=out.dtype).expand(out.shape)
        elif kind == "channels_last" and g.dim() == 4:
            grad_out = g.contiguous(memory_format=torch.channels_last)
        else:
            grad_out = g.transpose(-1, -2).contiguous().transpose(-1, -2)
        out.backward(grad_out)
        _, gx, gw, gb = reference(x, w, b, case.kwargs, grad_out.contiguous())
        red = reductions(case, ref.shape)
        for name, t, e in (("grad_input", x, gx), ("grad_weight", w, gw), ("grad_bias", b, gb)):
            if t is not None:
                assert_matches(t.grad, e, torch.float64, red[name], f"{impl}/{case.name} {kind} grad_out {name}")


@pytest.mark.parametrize("impl", IMPLS)
def test_only_some_inputs_require_grad(impl):
    """Gradients for exactly the tensors that ask for them; none computed, none invented."""
    fn = implementations.get(impl)
    case = supported_case(impl, next(c for c in CASES if c.name == "opinfo_groups2_dil4"))
    for wanted in ("x", "w", "b", "xw", "wb", ""):
        x, w, b = make_tensors(case, torch.float64, seed=5)
        for name, t in (("x", x), ("w", w), ("b", b)):
            t.requires_grad_(name in wanted)
        out = fn(x, w, b, **case.kwargs)
        assert out.requires_grad == bool(wanted), wanted
        ref, gx, gw, gb = reference(x, w, b, case.kwargs, torch.ones_like(out))
        assert_matches(out, ref, torch.float64, 1, f"{impl} requires_grad={wanted!r} forward")
        if not wanted:
            continue
        out.backward(torch.ones_like(out))
        for name, t, e in (("x", x, gx), ("w", w, gw), ("b", b, gb)):
            if name in wanted:
                assert_matches(t.grad, e, torch.float64, 1, f"{impl} requires_grad={wanted!r} grad {name}")
            else:
                assert t.grad is None, f"{impl}: grad for {name} though it does not require one"


@pytest.mark.parametrize("impl", IMPLS)
def test_no_grad_and_inference_mode(impl):
    fn = implementations.get(impl)
    case = supported_case(impl, next(c for c in CASES if c.name == "same_even_kernel_dilated"))
    x, w, b = make_tensors(case, torch.float32)
    ref = reference(x, w, b, case.kwargs)[0]
    for ctx in (torch.no_grad, torch.inference_mode):
        with ctx():
            out = fn(x, w, b, **case.kwargs)
        assert not out.requires_grad
        assert_matches(out, ref, torch.float32, 1, f"{impl} under {ctx.__name__}")


@pytest.mark.parametrize("impl", IMPLS)
def test_calls_are_independent(impl):
    """No state leaks between calls: inputs are not modified, an earlier output is not overwritten
    by a later call (buffer reuse), and the output does not alias the input."""
    fn = implementations.get(impl)
    for case in (CASES[1], next(c for c in CASES if c.name == "kernel_1x1"),
                 next(c for c in CASES if c.name == "channels_last")):
        case = supported_case(impl, case)
        x1, w1, b1 = make_tensors(case, torch.float32, seed=1)
        x2, w2, b2 = make_tensors(case, torch.float32, seed=2)
        before = [t.detach().clone() for t in (x1, w1, b1)]
        out1 = fn(x1, w1, b1, **case.kwargs)
        kept = out1.detach().clone()
        out2 = fn(x2, w2, b2, **case.kwargs)
        out2.sum().backward()
        for t, t0 in zip((x1, w1, b1), before):
            torch.testing.assert_close(t.detach(), t0, rtol=0, atol=0, msg=lambda m: f"{impl}: input modified: {m}")
        torch.testing.assert_close(out1.detach(), kept, rtol=0, atol=0,
                                   msg=lambda m: f"{impl}: output overwritten by a later call: {m}")
        assert out1.untyped_storage().data_ptr() != x1.untyped_storage().data_ptr()
        assert_matches(out1, reference(x1, w1, b1, case.kwargs)[0], torch.float32, 1, f"{impl} first call")


@pytest.mark.parametrize("impl", IMPLS)
def test_batch_is_images_side_by_side(impl, monkeypatch):
    """Each image's result depends on that image only (catches batch chunking/offset errors). For
    `unfold`, a tiny column budget forces one image per chunk when the module has such a knob."""
    module = getattr(implementations, impl, None)
    if hasattr(module, "CHUNK_BYTES"):
        monkeypatch.setattr(module, "CHUNK_BYTES", 1)
    if hasattr(module, "MIN_TILES"):
        monkeypatch.setattr(module, "MIN_TILES", 1)
    fn = implementations.get(impl)
    for case in (Case("batch5", (5, 3, 6, 7), (4, 3, 3, 2), True, dict(stride=(2, 1), padding=(1, 2))),
                 Case("batch5_cl_grouped", (5, 4, 6, 5), (4, 2, 2, 2), True, dict(groups=2, padding="same"),
                      layout="channels_last"),
                 Case("batch3_cl_1x1", (3, 4, 4, 4), (5, 4, 1, 1), False, {}, layout="channels_last")):
        case = supported_case(impl, case)
        check_case(impl, case, torch.float64, seed=11)
        x, w, b = make_tensors(case, torch.float64, seed=11)
        whole = fn(x, w, b, **case.kwargs)
        for i in range(x.shape[0]):
            torch.testing.assert_close(whole[i], fn(x[i], w, b, **case.kwargs), rtol=1e-12, atol=1e-12)


# Larger images: big enough that `fft` splits them into overlap-save tiles (several tiles per axis,
# strided, dilated, grouped, asymmetric 'same'), still quick for every method but `loop`, whose
# code has no size-dependent paths and which `test_medium_shapes` runs on cropped images.
LARGE_IMAGE_CASES = [
    Case("tiled_rows", (1, 4, 96, 96), (4, 4, 3, 3), True, dict(padding=1)),
    Case("tiled_both_dilated", (1, 16, 64, 64), (16, 16, 3, 3), False, dict(padding=2, dilation=2)),
    Case("tiled_strided", (1, 16, 64, 64), (16, 16, 3, 3), True, dict(stride=2, padding=1)),
    Case("tiled_same_even", (1, 8, 64, 64), (8, 8, 2, 2), True, dict(padding="same")),
    Case("tiled_grouped", (1, 16, 64, 64), (16, 8, 3, 3), True, dict(padding=1, groups=2)),
    Case("tiled_mixed", (1, 16, 64, 33), (16, 16, 3, 2), True, dict(stride=(2, 1), padding=1, dilation=(1, 2))),
    Case("tiled_batch_5x5", (2, 16, 64, 48), (8, 16, 5, 5), True, dict(padding=(2, 1)), layout="channels_last"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", LARGE_IMAGE_CASES, ids=[c.name for c in LARGE_IMAGE_CASES])
@pytest.mark.parametrize("impl", [i for i in IMPLS if i != "loop"])  # loop: a minute each; see test_medium_shapes
def test_large_images(impl, case, dtype):
    check_case(impl, supported_case(impl, case), dtype)


def test_large_image_cases_exercise_fft_tiling():
    """Guards the cases above: while `fft` plans overlap-save tiles, some of them must use several
    tiles per axis (else the tiled code paths go untested)."""
    from implementations import fft
    if not hasattr(fft, "_plan"):
        pytest.skip("fft has no tiling planner (implementations.fft._plan) to inspect")
    counts = []
    for case in LARGE_IMAGE_CASES:
        x, w, b, p, _ = implementations.prepare(torch.empty(case.input), torch.empty(case.weight), None,
                                                **case.kwargs)
        plan = fft._plan(x, w, p)
        counts.append((plan.h.count, plan.w.count))
    assert any(h > 1 for h, _ in counts) and any(w > 1 for _, w in counts), counts


MEDIUM_CASES = [
    Case("resnet_3x3", (2, 32, 28, 28), (32, 32, 3, 3), True, dict(padding=1)),
    Case("resnet_stride2_cl", (2, 32, 28, 28), (64, 32, 3, 3), False, dict(stride=2, padding=1),
         layout="channels_last"),
    Case("mobilenet_depthwise", (2, 64, 28, 28), (64, 1, 3, 3), True, dict(padding=1, groups=64)),
    Case("stem_7x7", (2, 3, 64, 64), (16, 3, 7, 7), False, dict(stride=2, padding=3)),
    Case("big_chunks", (8, 64, 32, 32), (16, 64, 3, 3), True, dict(padding=1)),
]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", MEDIUM_CASES, ids=[c.name for c in MEDIUM_CASES])
@pytest.mark.parametrize("impl", IMPLS)
def test_medium_shapes(impl, case, dtype):
    """Realistic layer sizes (large reductions, several unfold chunks, long FFTs)."""
    if impl == "loop" and case.input[-1] * case.input[-2] > 400:
        case = Case(case.name, case.input[:2] + (12, 12), case.weight, case.bias, case.kwargs, case.layout)
    check_case(impl, supported_case(impl, case), dtype)


GRADCHECK_CASES = [
    Case("strided", (1, 2, 5, 6), (2, 2, 2, 3), True, dict(stride=(2, 3), padding=1)),
    Case("dilated", (1, 2, 6, 6), (2, 2, 2, 2), False, dict(dilation=(2, 3), padding=(1, 0))),
    Case("grouped", (1, 4, 4, 4), (4, 2, 3, 3), True, dict(groups=2, padding=1)),
    Case("same_even", (1, 2, 5, 4), (2, 2, 2, 3), True, dict(padding="same", dilation=(2, 1))),
    Case("unbatched_depthwise", (3, 4, 5), (3, 1, 3, 2), True, dict(groups=3, stride=(1, 2))),
]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=[c.name for c in GRADCHECK_CASES])
@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck(impl, case):
    run_gradcheck(implementations.get(impl), supported_case(impl, case), "cpu")


def run_gradcheck(fn, case: Case, device: str, nondet_tol: float = 0.0) -> None:
    """Finite differences in float64 against the implementation's own backward. `nondet_tol`:
    how far two backward calls on the same input may differ (0: bitwise reproducible)."""
    x, w, b = make_tensors(case, torch.float64, device)
    inputs = (x, w, b) if b is not None else (x, w)

    def f(*t):
        return fn(t[0], t[1], t[2] if len(t) == 3 else None, **case.kwargs)

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, nondet_tol=nondet_tol)


def test_prepare_resolves_same_padding_like_pytorch():
    """The shared `prepare`: its per-side 'same' split and output size are F.conv2d's, for every
    kernel/dilation parity (odd totals put the extra row/column at the bottom/right)."""
    x = torch.randn(1, 1, 9, 8, dtype=torch.float64)
    for kh in range(1, 5):
        for kw in range(1, 5):
            for dh in range(1, 4):
                for dw in range(1, 3):
                    w = torch.randn(1, 1, kh, kw, dtype=torch.float64)
                    _, _, _, p, _ = implementations.prepare(x, w, None, 1, "same", (dh, dw), 1)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", UserWarning)
                        ref = F.conv2d(x, w, padding="same", dilation=(dh, dw))
                    out = F.conv2d(F.pad(x, p.pad_lrtb), w, dilation=(dh, dw))
                    assert p.output_size(9, 8) == tuple(ref.shape[-2:])
                    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12,
                                               msg=lambda m: f"k=({kh},{kw}) d=({dh},{dw}): {m}")


# Shapes where oneDNN's half-precision CPU convolutions go wrong (torch 2.13, AMX Xeon): wrong
# values, and a SIGSEGV. `cudnn` declares CPU float16/bfloat16 unsupported while oneDNN is on.
ONEDNN_HALF_BUGS = [
    Case("onednn_wrong_values", (1, 4, 4, 2), (2, 2, 2, 2), False, dict(stride=(1, 2), padding=(1, 0), groups=2)),
    Case("onednn_segfault", (3, 6, 7, 1), (9, 2, 1, 1), False, dict(stride=(1, 3), padding=2, dilation=(2, 3),
                                                                      groups=3), layout="channels_last"),
]


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("case", ONEDNN_HALF_BUGS, ids=[c.name for c in ONEDNN_HALF_BUGS])
def test_cudnn_half_on_cpu_without_onednn(case, dtype):
    """With oneDNN off, `cudnn` runs CPU half precision through PyTorch's native kernels, correctly,
    on the very shapes oneDNN gets wrong; with it on, it refuses instead of crashing."""
    fn = implementations.get("cudnn")
    if torch.backends.mkldnn.is_available():
        assert implementations.unsupported_reason(fn, "cpu", dtype) is not None
        check_unsupported("cudnn", case, dtype)
    with torch.backends.mkldnn.flags(enabled=False):
        assert implementations.unsupported_reason(fn, "cpu", dtype) is None
        check_case("cudnn", case, dtype)


# ----------------------------------------------------------------------------------------------
# The checks themselves: deliberately wrong implementations must fail them


class _ScaledWeightGrad(torch.autograd.Function):
    """Identity on the weight whose backward is off by 0.1%: a subtly wrong gradient."""

    @staticmethod
    def forward(ctx, w):
        return w.view_as(w)

    @staticmethod
    def backward(ctx, g):
        return g * 1.001


def _wrong_same_split(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Puts the odd extra 'same' row/column at the top/left instead of PyTorch's bottom/right."""
    kh, kw = weight.shape[-2:]
    total_h, total_w = kh - 1, kw - 1
    x = F.pad(input, (total_w - total_w // 2, total_w // 2, total_h - total_h // 2, total_h // 2))
    return F.conv2d(x, weight, bias, stride, 0, dilation, groups)


def _float32_inside(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Right answer, computed in float32 whatever the dtype: must fail the float64 tolerance."""
    out = F.conv2d(input.float(), weight.float(), None if bias is None else bias.float(), stride, padding,
                   dilation, groups)
    return out.to(input.dtype)


def _bad_weight_grad(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return F.conv2d(input, _ScaledWeightGrad.apply(weight), bias, stride, padding, dilation, groups)


def _bias_not_differentiated(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return F.conv2d(input, weight, None if bias is None else bias.detach(), stride, padding, dilation, groups)


@pytest.mark.parametrize("wrong, case, dtype", [
    (_wrong_same_split, "same_even_kernel", torch.float32),
    (_float32_inside, "opinfo_groups2_dil4", torch.float64),
    (_bad_weight_grad, "opinfo_depthwise_mult2", torch.float32),
    (_bias_not_differentiated, "kernel_1x1", torch.float64),
], ids=["same_split", "float32_inside", "weight_grad_off_0.1pct", "bias_grad_missing"])
def test_checks_catch_wrong_implementations(wrong, case, dtype, monkeypatch):
    from implementations import registry
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    implementations.register("wrong_for_test")(wrong)
    with pytest.raises(AssertionError):
        check_case("wrong_for_test", next(c for c in CASES if c.name == case), dtype)


# ----------------------------------------------------------------------------------------------
# Seeded fuzz over valid configurations


@st.composite
def conv_configs(draw, dtypes=(torch.float64, torch.float32), only_3x3_stride1=False):
    """A valid conv2d configuration (every drawn combination is one F.conv2d accepts); with
    `only_3x3_stride1`, the ones Winograd covers (3x3 kernel, stride 1, dilation 1)."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c_in = groups * draw(st.integers(1, 3))
    c_out = groups * draw(st.integers(1, 3))
    if only_3x3_stride1:
        kh = kw = 3
        dh = dw = sh = sw = 1
    else:
        kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ekh, ekw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if sh == sw == 1 and draw(st.booleans()):
        padding = draw(st.sampled_from(["same", "valid"]))
        total_h, total_w = (ekh - 1, ekw - 1) if padding == "same" else (0, 0)
    else:
        ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
        padding = ph if ph == pw and draw(st.booleans()) else (ph, pw)
        total_h, total_w = 2 * ph, 2 * pw
    # The padded input must hold the dilated kernel.
    min_h, min_w = max(1, ekh - total_h), max(1, ekw - total_w)
    h, w = draw(st.integers(min_h, min_h + 6)), draw(st.integers(min_w, min_w + 6))
    n = draw(st.integers(0, 3))  # 0 means unbatched (3-D input)
    bias = draw(st.booleans())
    dtype = draw(st.sampled_from(dtypes))
    layout = draw(st.sampled_from(["contiguous", "contiguous", "channels_last", "transposed", "sliced"]))
    if n == 0 and layout == "channels_last":
        layout = "contiguous"
    stride = (sh, sw) if sh != sw or draw(st.booleans()) else sh
    dilation = (dh, dw) if dh != dw or draw(st.booleans()) else dh
    shape = (c_in, h, w) if n == 0 else (n, c_in, h, w)
    case = Case("fuzz", shape, (c_out, c_in // groups, kh, kw), bias,
                dict(stride=stride, padding=padding, dilation=dilation, groups=groups), layout)
    return case, dtype, draw(st.integers(0, 2**31 - 1))


def _fuzz(impl: str, config) -> None:
    case, dtype, seed = config
    fn = implementations.get(impl)
    if implementations.unsupported_reason(fn, "cpu", dtype) is not None:
        check_unsupported(impl, case, dtype)
    elif refuses(impl, case):
        check_refuses_shape(impl, case, dtype)
    else:
        check_case(impl, case, dtype, seed=seed)


FUZZ = dict(derandomize=True, deadline=None, database=None, print_blob=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=50, **FUZZ)
@given(config=conv_configs())
def test_fuzz(impl, config):
    _fuzz(impl, config)


@pytest.mark.slow
@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=500, **FUZZ)
@given(config=conv_configs(dtypes=DTYPES))
def test_fuzz_long(impl, config):
    _fuzz(impl, config)


@pytest.mark.parametrize("impl", sorted(SHAPE_LIMITS))
@settings(max_examples=50, **FUZZ)
@given(config=conv_configs(only_3x3_stride1=True))
def test_fuzz_3x3_stride1(impl, config):
    """The general fuzz rarely draws a shape a limited built-in supports: these are all 3x3 stride 1
    (every padding form, groups, layouts, unbatched), so none may be refused."""
    assert not refuses(impl, config[0])
    _fuzz(impl, config)


@pytest.mark.slow
@pytest.mark.parametrize("impl", sorted(SHAPE_LIMITS))
@settings(max_examples=500, **FUZZ)
@given(config=conv_configs(dtypes=DTYPES, only_3x3_stride1=True))
def test_fuzz_3x3_stride1_long(impl, config):
    _fuzz(impl, config)


def test_fuzz_configs_are_valid_for_reference():
    """The fuzz strategy itself: every drawn configuration is accepted by F.conv2d."""
    @settings(max_examples=150, **FUZZ)
    @given(config=conv_configs())
    def accepted(config):
        case, dtype, seed = config
        x, w, b = make_tensors(case, torch.float64, seed=seed)
        F.conv2d(x, w, b, **case.kwargs)

    accepted()


# ----------------------------------------------------------------------------------------------
# CUDA: the same checks on the GPU, one test function (one skip without CUDA)

CUDA_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# cuDNN's float64 weight-gradient algorithms may add with atomics, so two backward calls differ in
# the last bits; PyTorch's own conv2d OpInfo gives gradcheck this much room
# (torch.testing._internal.common_utils.GRADCHECK_NONDET_TOL, 1e-12 in torch 2.13). Only `cudnn`
# calls cuDNN: the other built-ins must stay bitwise reproducible.
GRADCHECK_NONDET_TOL = 1e-12
NONDETERMINISTIC_ON_CUDA = {"cudnn"}


@pytest.fixture
def no_tf32():
    """True float32 on CUDA for the test: TF32 convolutions/matmuls are only ~1e-3 accurate,
    which no float32 tolerance here allows. The previous settings come back afterwards."""
    prev = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_conformance(no_tf32):
    failures = []
    for impl in IMPLS:
        fn = implementations.get(impl)
        for dtype in CUDA_DTYPES:
            for case in CASES:
                try:
                    if implementations.unsupported_reason(fn, "cuda", dtype) is not None:
                        check_unsupported(impl, case, dtype, device="cuda")
                    elif refuses(impl, case):
                        check_refuses_shape(impl, case, dtype, device="cuda")
                    else:
                        check_case(impl, case, dtype, device="cuda")
                except Exception as exc:  # noqa: BLE001 - collect every failure, report together
                    failures.append(f"{impl}/{case.name}/{dtype}: {type(exc).__name__}: {exc}"[:400])
    assert not failures, f"{len(failures)} CUDA failures:\n" + "\n".join(failures)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gradcheck(no_tf32):
    failures = []
    for impl in IMPLS:
        fn = implementations.get(impl)
        tol = GRADCHECK_NONDET_TOL if impl in NONDETERMINISTIC_ON_CUDA else 0.0
        for case in GRADCHECK_CASES:
            try:
                run_gradcheck(fn, supported_case(impl, case), "cuda", nondet_tol=tol)
            except Exception as exc:  # noqa: BLE001 - collect every failure, report together
                failures.append(f"{impl}/{case.name}: {exc}"[:400])
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("c, hw, n, chunk", [(256, 14, 8, 4), (64, 56, 8, 1), (512, 7, 8, 4), (256, 14, 16, 4),
                                             (64, 7, 8, 8)])
def test_winograd_chunks_hold_enough_tiles_for_matrix_sized_products(c, hw, n, chunk):
    """Small images get several per chunk (at least MIN_TILES tiles, up to half the batch): one 14x14
    image is 16 tiles, too thin a product. Large images stay within CHUNK_BYTES; small transforms
    take the whole batch by CHUNK_BYTES alone."""
    from implementations import winograd
    plan = winograd._Plan(torch.empty(n, c, hw, hw), c, (1, 1, 1, 1), 1, winograd.F4)
    assert plan.chunk == chunk
