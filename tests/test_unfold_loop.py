"""What is specific to the `unfold` and `loop` built-ins (the cross-implementation checks live in
test_conformance.py): their hand-written backwards against autograd's, the code paths a small
conformance case never reaches (several batch chunks, NHWC, 1x1 without gather), output layouts,
and the loop's promise of no per-position allocation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import implementations
from implementations import unfold as unfold_mod

# (input shape, weight shape, kwargs): one per code path of `unfold`.
# F.conv2d warns that padding="same" with an even kernel pads a copy: expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding=.same.:UserWarning")

PATHS = {
    "3x3_padded": ((3, 4, 7, 6), (5, 4, 3, 3), dict(padding=1)),
    "strided_dilated": ((2, 3, 9, 8), (4, 3, 2, 3), dict(stride=(2, 1), dilation=(2, 2), padding=(1, 2))),
    "grouped": ((2, 6, 5, 5), (9, 2, 3, 3), dict(groups=3, padding=1)),
    "depthwise_same_even": ((2, 4, 6, 5), (8, 1, 2, 2), dict(groups=4, padding="same")),
    "1x1_direct": ((3, 5, 4, 6), (7, 5, 1, 1), {}),
    "1x1_stride2": ((3, 5, 7, 6), (7, 5, 1, 1), dict(stride=2)),
}
LAYOUTS = ("contiguous", "channels_last", "sliced")


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "sliced":  # every other column of a wider buffer: no layout at all
        big = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype)
        return big[..., ::2].copy_(x)
    return x


def _tensors(name: str, layout: str = "contiguous", seed: int = 0):
    xs, ws, kwargs = PATHS[name]
    gen = torch.Generator().manual_seed(seed)
    x = _layout(torch.randn(xs, generator=gen, dtype=torch.float64), layout).requires_grad_()
    w = torch.randn(ws, generator=gen, dtype=torch.float64).requires_grad_()
    b = torch.randn(ws[0], generator=gen, dtype=torch.float64).requires_grad_()
    return x, w, b, kwargs


def _value_and_grads(fn, x, w, b, kwargs, grad_out=None):
    out = fn(x, w, b, **kwargs)
    grad_out = torch.randn_like(out, memory_format=torch.contiguous_format) if grad_out is None else grad_out
    grads = torch.autograd.grad(out, (x, w, b), grad_out)
    return out, grads, grad_out


def _assert_same(fn, name, layout):
    """fn's output and all three gradients equal autograd's through F.conv2d (float64)."""
    x, w, b, kwargs = _tensors(name, layout)
    out, grads, grad_out = _value_and_grads(fn, x, w, b, kwargs)
    ref, ref_grads, _ = _value_and_grads(F.conv2d, x, w, b, kwargs, grad_out)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for what, g, r in zip(("input", "weight", "bias"), grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10, msg=lambda m: f"grad_{what}: {m}")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", PATHS)
def test_unfold_backward_matches_autograd(name, layout):
    _assert_same(implementations.get("unfold"), name, layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", PATHS)
def test_unfold_in_several_chunks(name, layout, monkeypatch):
    """A budget of ~one image per chunk: chunk boundaries and the short last chunk are exact."""
    x, w, b, kwargs = _tensors(name, layout)
    with torch.no_grad():
        ho, wo = F.conv2d(x, w, b, **kwargs).shape[-2:]
    per_image = x.shape[1] * w.shape[2] * w.shape[3] * ho * wo * x.element_size()
    monkeypatch.setattr(unfold_mod, "CHUNK_BYTES", per_image * (2 if x.shape[0] == 3 else 1))
    p = implementations.prepare(x, w, b, **kwargs)[3]
    plan = unfold_mod._Plan(x, w, p)
    assert plan.direct or 1 <= plan.chunk < x.shape[0]
    _assert_same(implementations.get("unfold"), name, layout)


@pytest.mark.parametrize("name", PATHS)
def test_loop_matches_autograd(name):
    _assert_same(implementations.get("loop"), name, "sliced")


@pytest.mark.parametrize("impl", ["unfold", "loop"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_output_layout_follows_f_conv2d(impl, layout):
    """channels_last in, channels_last out (as F.conv2d), grouped included; NCHW in, NCHW out."""
    for name in ("3x3_padded", "grouped", "1x1_direct"):
        x, w, b, kwargs = _tensors(name, layout)
        with torch.no_grad():
            out, ref = implementations.get(impl)(x, w, b, **kwargs), F.conv2d(x, w, b, **kwargs)
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        assert ref.is_contiguous(memory_format=fmt)
        assert out.is_contiguous(memory_format=fmt), f"{impl}/{name}: strides {out.stride()}"
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", ["unfold", "loop"])
def test_saves_only_input_and_weight(impl):
    """The graph keeps the input and weight, not the (kh*kw times larger) columns or windows."""
    x, w, b, kwargs = _tensors("3x3_padded")
    out = implementations.get(impl)(x, w, b, **kwargs)
    saved = out.grad_fn.saved_tensors
    assert [t.shape for t in saved] == [x.shape, w.shape]


@pytest.mark.parametrize("impl", ["unfold", "loop"])
def test_no_grad_path_equals_grad_path(impl):
    x, w, b, kwargs = _tensors("strided_dilated")
    with torch.no_grad():
        plain = implementations.get(impl)(x, w, b, **kwargs)
    torch.testing.assert_close(implementations.get(impl)(x, w, b, **kwargs).detach(), plain, rtol=0, atol=0)


def _allocations(fn) -> int:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return sum(1 for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.nbytes() > 0)


@pytest.mark.parametrize("pass_", ["forward", "backward"])
def test_loop_allocations_do_not_grow_with_positions(pass_):
    """The loop allocates its buffers once per call: 4x the output positions, same allocation count."""
    fn = implementations.get("loop")
    counts = []
    for hw in (4, 8):
        x = torch.randn(2, 3, hw, hw, requires_grad=True)
        w = torch.randn(4, 3, 3, 3, requires_grad=True)
        if pass_ == "forward":
            counts.append(_allocations(lambda: fn(x, w, None, padding=1)))
        else:
            out = fn(x, w, None, padding=1)
            counts.append(_allocations(lambda: torch.autograd.grad(out, (x, w), torch.ones_like(out))))
    assert counts[0] == counts[1], counts
    assert counts[1] < 16, counts  # 16 positions -> 64 positions; a per-position allocation would show


def test_unfold_1x1_needs_no_gather():
    """A 1x1 stride-1 convolution is a pure matrix multiply: nothing allocated but the output."""
    fn = implementations.get("unfold")
    for layout in ("contiguous", "channels_last"):
        x = _layout(torch.randn(2, 8, 5, 5), layout)
        w = torch.randn(6, 8, 1, 1)
        with torch.no_grad():
            assert _allocations(lambda: fn(x, w)) == 1, layout


# Long sums across matmuls in 16-bit types (issue #16, item 7): (impl, input, weight, kwargs,
# layout, unfold's CHUNK_BYTES or None). Each reaches a path that added partial results in the
# 16-bit dtype: loop's grad_weight over 56x56 positions (large_56 was 6% off in bfloat16) and its
# grad_input over 15x15 taps; unfold's grad_weight over one-image chunks (NCHW and NHWC), over the
# images of a 1x1 conv, and col2im's overlapping 7x7 windows at stride 2.
LONG_SUMS = {
    "loop_56x56": ("loop", (1, 8, 56, 56), (8, 8, 3, 3), dict(padding=1), "contiguous", None),
    "loop_k15": ("loop", (1, 8, 16, 16), (8, 8, 15, 15), dict(padding=7), "contiguous", None),
    "unfold_chunks": ("unfold", (64, 8, 16, 16), (8, 8, 3, 3), dict(padding=1), "contiguous", 1),
    "unfold_chunks_nhwc": ("unfold", (64, 8, 16, 16), (8, 8, 3, 3), dict(padding=1), "channels_last", 1),
    "unfold_1x1_images": ("unfold", (64, 8, 16, 16), (8, 8, 1, 1), {}, "contiguous", None),
    "unfold_col2im": ("unfold", (64, 8, 17, 17), (8, 8, 7, 7), dict(stride=2, padding=3), "contiguous", 1),
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("name", list(LONG_SUMS))
def test_half_precision_sums_accumulate_in_float32(name, dtype, monkeypatch):
    """float16/bfloat16 output and gradients within one unit of roundoff (eps/2) of float64
    F.conv2d, however long the sum behind them: only the final cast may round. Partial sums kept
    in the 16-bit dtype round at every addition (0.2-9 units here)."""
    impl, xs, ws, kwargs, layout, chunk = LONG_SUMS[name]
    if chunk is not None:
        monkeypatch.setattr(unfold_mod, "CHUNK_BYTES", chunk)
    gen = torch.Generator().manual_seed(0)
    x = _layout(torch.randn(xs, generator=gen, dtype=torch.float64), layout)
    w = torch.randn(ws, generator=gen, dtype=torch.float64) / (ws[1] * ws[2] * ws[3]) ** 0.5
    x16, w16 = (t.to(dtype).requires_grad_() for t in (x, w))
    out = implementations.get(impl)(x16, w16, None, **kwargs)
    grad_out = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(dtype)
    got = (out, *torch.autograd.grad(out, (x16, w16), grad_out))
    x64, w64 = (t.detach().double().requires_grad_() for t in (x16, w16))  # the same rounded values
    ref = F.conv2d(x64, w64, None, **kwargs)
    want = (ref, *torch.autograd.grad(ref, (x64, w64), grad_out.double()))
    unit = torch.finfo(dtype).eps / 2
    for what, g, r in zip(("output", "grad_input", "grad_weight"), got, want):
        assert g.dtype == dtype, f"{what}: {g.dtype}"
        err = ((g.double() - r).norm() / r.norm()).item()
        assert err <= unit, f"{name} {what}: relative error {err:.2e} > {unit:.2e} (eps/2 of {dtype})"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("impl", ["unfold", "loop"])
def test_cuda_matches_f_conv2d(impl):
    fn = implementations.get(impl)
    for name in PATHS:
        for layout in ("contiguous", "channels_last"):
            x, w, b, kwargs = _tensors(name, layout)
            x, w, b = (t.detach().cuda().requires_grad_() for t in (x, w, b))
            out, grads, grad_out = _value_and_grads(fn, x, w, b, kwargs)
            ref, ref_grads, _ = _value_and_grads(F.conv2d, x, w, b, kwargs, grad_out)
            torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
            for g, r in zip(grads, ref_grads):
                torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("impl", ["unfold", "loop"])
@pytest.mark.parametrize("name", ["3x3_padded", "strided_dilated", "1x1_direct"])
def test_partial_gradients(impl, name):
    """Only the gradients asked for are computed, and each alone equals F.conv2d's."""
    fn = implementations.get(impl)
    x, w, b, kwargs = _tensors(name)
    for wanted in ((x,), (w,), (b,), (x, b)):
        for t in (x, w, b):
            t.requires_grad_(any(t is u for u in wanted))
        out = fn(x, w, b, **kwargs)
        grad_out = torch.randn_like(out)
        got = torch.autograd.grad(out, wanted, grad_out)
        ref = torch.autograd.grad(F.conv2d(x, w, b, **kwargs), wanted, grad_out)
        for g, r in zip(got, ref):
            torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)


def test_bench_perf_script_runs(capsys):
    """`make bench-perf`'s script, on its smallest case: exits 0 and prints the ratio table."""
    from harness import perf

    threads = torch.get_num_threads()
    assert perf.main(["--only", "loop", "--batch", "1", "--rounds", "1", "--min-run-time", "0.01", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "64->64 k3 s1 14x14" in out and "forward" in out and "backward" in out
    assert torch.get_num_threads() == threads  # the script's thread count does not leak
