"""Every built-in through convbench's conformance suite (convbench.testing, the same checks any
implementer runs in their own CI): forward output and every gradient against float64 F.conv2d over
PyTorch's OpInfo samples, convbench's cases and a seeded fuzz, layouts, call forms, autograd modes,
integrity, aliasing, repeated calls, determinism, batching, gradcheck and argument errors. What is
convbench's own stays here: the built-ins' shape limits are written out (so a wrong refusal, or a missing
one, fails), knobs that force their chunked paths, and guards on the suite's cases themselves."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import implementations
from convbench.testing import Case, parametrize_with_checks, plan, run_check
from convbench.testing.cases import CASES, LARGE_IMAGE_CASES, make_tensors
from convbench.testing.fuzz import configs

# The built-ins are the implementations this package registers itself (not plug-ins, not entry points).
IMPLS = sorted(name for name in implementations.names()
               if getattr(implementations.get(name), "__module__", "").startswith("implementations."))
FNS = [implementations.get(name) for name in IMPLS]
BUILTINS = ("cudnn", "fft", "loop", "unfold", "winograd", "winograd_f2")
CPU = ["cpu"]


def test_builtins_are_registered():
    assert set(BUILTINS) <= set(IMPLS)


def _not_3x3_stride1(case: Case) -> bool:
    k = case.kwargs
    return (case.weight[2:] != (3, 3) or k.get("stride", 1) not in (1, (1, 1))
            or k.get("dilation", 1) not in (1, (1, 1)))


# Built-ins that cover only some shapes: impl -> "this case must be refused" (raise Unsupported).
# Written out here, not asked of the implementation, so a wrong refusal (or a missing one) fails.
SHAPE_LIMITS = {"winograd": _not_3x3_stride1, "winograd_f2": _not_3x3_stride1}


def refuses(impl: str, case) -> bool:
    return impl in SHAPE_LIMITS and isinstance(case, Case) and SHAPE_LIMITS[impl](case)


def supported_case(impl: str, case: Case) -> Case:
    """`case`, or for an implementation that must refuse it, the same tensors and options with a 3x3
    kernel at stride 1 and dilation 1 (so single-case checks still exercise every built-in)."""
    if not refuses(impl, case):
        return case
    kwargs = dict(case.kwargs, stride=1, dilation=1)
    if kwargs.get("padding", 0) != "same":
        kwargs["padding"] = 1
    return Case(case.name + "_as_3x3", case.input, case.weight[:2] + (3, 3), case.bias, kwargs, case.layout)


def run_strictly(check) -> None:
    """`check()`, but a built-in may refuse (raise Unsupported) exactly the cases SHAPE_LIMITS names (and,
    if it has limits, OpInfo's samples beyond them)."""
    r = check.result()
    refused = r.status == "skipped" and r.message.startswith("raised Unsupported")
    if refuses(check.impl, check.planned.case) and not r.message.startswith("declared"):
        assert refused, f"{check.id}: must raise Unsupported for this shape, got {r.status} {r.message}"
        assert r.message.strip() != "raised Unsupported:", f"{check.id}: Unsupported without a reason"
    elif refused and not (check.impl in SHAPE_LIMITS and not isinstance(check.planned.case, Case)):
        pytest.fail(f"{check.id}: refused a case it must compute: {r.message}", pytrace=False)
    if r.status == "failed":
        pytest.fail(f"{r.id}: {r.message}\n\nreproduce:\n{r.reproduce}", pytrace=False)
    if r.status == "skipped":
        pytest.skip(r.message)


def _quick(check) -> bool:
    """`loop`'s large images take a minute each (test_loop_on_medium_shapes crops them); batching runs
    in its own test, with the chunk knobs turned down."""
    return not (check.impl == "loop" and check.spec.name == "large") and check.spec.name != "batch"


@parametrize_with_checks(FNS, devices=CPU, select=_quick)
def test_builtin_conforms(check):
    run_strictly(check)


SINGLE_CASE_CHECKS = ["layouts", "call_forms", "grad_outputs", "requires_grad", "no_grad", "independent", "repeat",
                      "deterministic", "batch", "gradcheck"]


@parametrize_with_checks([implementations.get(n) for n in sorted(SHAPE_LIMITS)], devices=CPU,
                         checks=SINGLE_CASE_CHECKS, select=lambda c: refuses(c.impl, c.planned.case))
def test_limited_builtins_on_3x3_twins(check, monkeypatch):
    """The cases a limited built-in refuses, as their 3x3 stride-1 twins: every check covers it too."""
    _small_chunks(check.impl, monkeypatch)
    run_check(check.fn, check.spec.name, supported_case(check.impl, check.planned.case),
              check.planned.dtype, check.device, check.planned.seed)


def _small_chunks(impl: str, monkeypatch) -> None:
    """A tiny column budget forces one image per chunk where the implementation has such a knob."""
    module = getattr(implementations, impl, None)
    if hasattr(module, "CHUNK_BYTES"):
        monkeypatch.setattr(module, "CHUNK_BYTES", 1)
    if hasattr(module, "MIN_TILES"):
        monkeypatch.setattr(module, "MIN_TILES", 1)


@parametrize_with_checks(FNS, devices=CPU, checks=["batch"])
def test_batch_is_images_side_by_side(check, monkeypatch):
    _small_chunks(check.impl, monkeypatch)
    run_strictly(check)


def _full_only(check) -> bool:
    """What the full suite adds to the quick one (loop's medium shapes are cropped, below)."""
    if check.spec.name == "opinfo_samples":
        return check.planned.dtype == torch.float64
    return not (check.impl == "loop" and check.spec.name == "medium")


@pytest.mark.slow
@parametrize_with_checks(FNS, devices=CPU, full=True, checks=["medium", "fuzz", "fuzz_3x3", "opinfo_samples"],
                         select=_full_only)
def test_builtin_conforms_full(check):
    run_strictly(check)


@pytest.mark.slow
@parametrize_with_checks([implementations.get("loop")], devices=CPU, full=True, checks=["medium"])
def test_loop_on_medium_shapes(check):
    """`loop` has no size-dependent code paths: realistic channels and kernels on cropped images."""
    case = check.planned.case
    case = Case(case.name, case.input[:2] + (12, 12), case.weight, case.bias, case.kwargs, case.layout)
    run_check(check.fn, "medium", case, check.planned.dtype, "cpu")


@pytest.mark.parametrize("impl", IMPLS)
def test_declared_unsupported_refuses_when_called_anyway(impl):
    """The suite skips what an implementation declares unsupported without calling it; a built-in called
    anyway must refuse clearly, never return garbage: `Unsupported`, or an error naming the dtype."""
    fn = implementations.get(impl)
    case = supported_case(impl, CASES[1])
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        if implementations.unsupported_reason(fn, "cpu", dtype) is None:
            continue
        check_unsupported(impl, case, dtype)


def check_unsupported(impl: str, case: Case, dtype: torch.dtype, device: str = "cpu") -> None:
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


def test_layout_cases_really_are_non_contiguous():
    """Guards the layout cases above against silently testing contiguous tensors."""
    for case in CASES:
        x, w, _ = make_tensors(case, torch.float32)
        if case.layout in ("transposed", "sliced"):
            assert not x.is_contiguous(), case.name
        if case.layout == "channels_last":
            assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous(), case.name
            assert not w.is_contiguous(), case.name


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
        run_check(fn, "values", case, dtype, "cpu")


# ----------------------------------------------------------------------------------------------
# The checks themselves: deliberately wrong implementations must fail them (the planted bugs of
# tests/plugins/broken_convs.py go through the whole suite in tests/test_package.py)


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
def test_checks_catch_wrong_implementations(wrong, case, dtype):
    with pytest.raises(AssertionError):
        run_check(wrong, "values", case, dtype, "cpu")
    assert not run_check(F.conv2d, "values", case, dtype, "cpu")


def test_fuzz_configs_are_valid_for_reference():
    """The fuzz itself: every drawn configuration is accepted by F.conv2d, and the draw is seeded (the
    same list every run, a longer run extending a shorter one)."""
    drawn = configs(150, (torch.float64,))
    for case, dtype, seed in drawn:
        x, w, b = make_tensors(case, torch.float64, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            F.conv2d(x, w, b, **case.kwargs)
    assert configs(20, (torch.float64,)) == drawn[:20]
    assert {c.layout for c, _, _ in drawn} == {"contiguous", "channels_last", "transposed", "sliced"}
    assert any(len(c.input) == 3 for c, _, _ in drawn) and any(c.kwargs["padding"] == "same" for c, _, _ in drawn)


def test_fuzz_3x3_configs_are_all_supported_by_the_limited_builtins():
    assert not any(refuses("winograd", c) for c, _, _ in configs(200, (torch.float32,), only_3x3_stride1=True))


# ----------------------------------------------------------------------------------------------
# CUDA: the same suite on the GPU, one test function (one skip without CUDA)

# cuDNN's float64 weight-gradient algorithms may add with atomics, so two backward calls differ in the
# last bits (gradcheck allows PyTorch's GRADCHECK_NONDET_TOL, 1e-12); only `cudnn` calls cuDNN: the
# other built-ins must stay bitwise reproducible.
CUDA_EXPECTED = {"cudnn-deterministic-": "cuDNN's atomic-add backward algorithms are not bitwise reproducible"}


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_conformance():
    failures = []
    for fn in FNS:
        for check in plan(fn, devices=["cuda"], expected_failures=CUDA_EXPECTED):
            try:
                run_strictly(check)
            except pytest.skip.Exception:
                pass
            except BaseException as exc:  # noqa: BLE001 - collect every failure, report together
                if type(exc).__name__ in ("Failed", "AssertionError"):
                    failures.append(str(exc)[:600])
                else:
                    raise
    assert not failures, f"{len(failures)} CUDA failures:\n" + "\n".join(failures)


@pytest.mark.parametrize("c, hw, n, chunk", [(256, 14, 8, 4), (64, 56, 8, 1), (512, 7, 8, 4), (256, 14, 16, 4),
                                             (64, 7, 8, 8)])
def test_winograd_chunks_hold_enough_tiles_for_matrix_sized_products(c, hw, n, chunk):
    """Small images get several per chunk (at least MIN_TILES tiles, up to half the batch): one 14x14
    image is 16 tiles, too thin a product. Large images stay within CHUNK_BYTES; small transforms
    take the whole batch by CHUNK_BYTES alone."""
    from implementations import winograd
    plan = winograd._Plan(torch.empty(n, c, hw, hw), c, (1, 1, 1, 1), 1, winograd.F4)
    assert plan.chunk == chunk
