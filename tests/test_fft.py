"""What is specific to the `fft` built-in: transform sizes, the polyphase (stride) and tap-offset
(padding, dilation) mapping, overlap-save tiles, the kernel spectrum and its adjoint, the
hand-written backward, and the dtypes it declines. The cross-implementation checks live in
test_conformance.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import implementations
from implementations import fft as fftmod

conv_fft = implementations.get("fft")


def smooth(m: int) -> bool:
    for p in (2, 3, 5):
        while m % p == 0:
            m //= p
    return m == 1


def test_fast_len_is_the_smallest_even_smooth_length():
    for n in range(1, 400):
        m = fftmod.fast_len(n)
        assert m >= n and m % 2 == 0 and smooth(m)
        assert not any(c % 2 == 0 and smooth(c) for c in range(max(n, 2), m)), (n, m)
    assert [fftmod.fast_len(n) for n in (1, 3, 28, 130, 142, 158)] == [2, 4, 30, 144, 144, 160]
    with pytest.raises(ValueError):
        fftmod.fast_len(0)


def reference(x, w, b, **kw):
    """float64 F.conv2d output and gradients (for a fixed random upstream gradient)."""
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    b64 = None if b is None else b.detach().double().requires_grad_()
    out = F.conv2d(x64, w64, b64, **kw)
    gy = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(out, [t for t in (x64, w64, b64) if t is not None], gy)
    return out, gy, grads


def check(x, w, b=None, rtol=None, **kw):
    """Forward and every gradient of `fft` against float64 F.conv2d, as relative norms."""
    rtol = rtol or (1e-12 if x.dtype == torch.float64 else 2e-5)
    ref, gy, ref_grads = reference(x, w, b, **kw)
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, b) if t is not None]
    out = conv_fft(*leaves[:2], leaves[2] if b is not None else None, **kw)
    assert out.shape == ref.shape and out.dtype == x.dtype
    grads = torch.autograd.grad(out, leaves, gy.to(x.dtype))
    for name, got, want in zip(("out", "grad_input", "grad_weight", "grad_bias"), (out, *grads), (ref, *ref_grads)):
        err = ((got.double() - want).norm() / want.norm().clamp_min(1e-300)).item()
        assert err <= rtol, f"{name}: relative error {err:.2e} > {rtol:.0e} for {kw}"


def rand(*shape, dtype=torch.float64, seed=0):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


CASES = {
    "padded": ((2, 3, 9, 10), (4, 3, 3, 3), dict(padding=1)),
    "asymmetric_padding": ((2, 3, 9, 10), (4, 3, 3, 5), dict(padding=(0, 3))),
    "strided": ((2, 3, 11, 10), (4, 3, 3, 3), dict(stride=2, padding=1)),
    "strided_uneven": ((2, 3, 13, 11), (4, 3, 5, 2), dict(stride=(3, 2), padding=(2, 1))),
    "stride_larger_than_kernel": ((1, 2, 12, 12), (3, 2, 2, 2), dict(stride=4)),
    "dilated": ((2, 3, 12, 11), (4, 3, 3, 2), dict(dilation=(2, 3), padding=(2, 1))),
    "dilated_strided": ((2, 3, 14, 13), (4, 3, 3, 3), dict(dilation=2, stride=(2, 3), padding=1)),
    "grouped": ((2, 6, 9, 9), (9, 2, 3, 3), dict(groups=3, padding=1)),
    "depthwise": ((2, 5, 9, 8), (5, 1, 3, 3), dict(groups=5, padding=1)),
    "depthwise_multiplier": ((2, 4, 9, 8), (8, 1, 5, 3), dict(groups=4, padding=(2, 1))),
    "depthwise_strided": ((2, 4, 10, 9), (4, 1, 3, 3), dict(groups=4, stride=2, padding=1)),
    "same_even": ((2, 3, 9, 8), (4, 3, 4, 2), dict(padding="same")),
    "same_even_dilated": ((2, 3, 9, 8), (4, 3, 2, 4), dict(padding="same", dilation=(3, 1))),
    "valid": ((2, 3, 9, 8), (4, 3, 3, 4), dict(padding="valid")),
    "kernel_as_large_as_input": ((2, 3, 7, 6), (2, 3, 7, 6), {}),
    "one_by_one": ((2, 8, 5, 6), (4, 8, 1, 1), {}),
}


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_float64_reference(name, bias):
    xs, ws, kw = CASES[name]
    check(rand(*xs), rand(*ws, seed=1), rand(ws[0], seed=2) if bias else None, **kw)


@pytest.mark.parametrize("name", ["strided", "grouped", "same_even", "dilated_strided"])
def test_float32_within_float32_rounding(name):
    xs, ws, kw = CASES[name]
    check(rand(*xs, dtype=torch.float32), rand(*ws, dtype=torch.float32, seed=1),
          rand(ws[0], dtype=torch.float32, seed=2), **kw)


def test_float64_is_exact_to_rounding_on_a_large_kernel():
    """Spectral methods lose nothing to the kernel size: float64 stays at ~1e-15 relative."""
    check(rand(2, 4, 40, 40), rand(4, 4, 21, 21, seed=1), rand(4, seed=2), rtol=1e-13, padding=10)


def test_unbatched_and_non_contiguous_inputs():
    x, w = rand(3, 10, 9), rand(4, 3, 3, 3, seed=1)
    torch.testing.assert_close(conv_fft(x, w, None, 1, 1), F.conv2d(x, w, None, 1, 1), rtol=1e-12, atol=1e-12)
    xb = rand(2, 3, 10, 9)
    for xi in (xb.contiguous(memory_format=torch.channels_last), xb.transpose(-1, -2).contiguous().transpose(-1, -2),
               rand(2, 3, 10, 18)[..., ::2]):
        torch.testing.assert_close(conv_fft(xi, w, None, 2, 1), F.conv2d(xi, w, None, 2, 1), rtol=1e-12, atol=1e-12)


def test_empty_batch():
    x, w = torch.zeros(0, 3, 8, 8, requires_grad=True), rand(4, 3, 3, 3, dtype=torch.float32).requires_grad_()
    out = conv_fft(x, w, None, 1, 1)
    assert out.shape == (0, 4, 8, 8)
    out.sum().backward()
    assert x.grad.shape == x.shape and w.grad.abs().sum() == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_declared_unsupported(dtype):
    assert implementations.unsupported_reason(conv_fft, "cpu", dtype)
    assert implementations.unsupported_reason(conv_fft, "cpu", torch.float32) is None
    with pytest.raises(implementations.Unsupported, match=str(dtype)):
        conv_fft(torch.zeros(1, 2, 6, 6, dtype=dtype), torch.zeros(2, 2, 3, 3, dtype=dtype))


# ----- plans: transform sizes, stride, tiles -----------------------------------------------------

def plan_for(x_shape, w_shape, **kw):
    x, w = torch.empty(x_shape, device="meta"), torch.empty(w_shape, device="meta")
    *_, p, _ = implementations.prepare(x, w, None, kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1),
                                       kw.get("groups", 1))
    return fftmod._plan(x, w, p)


def _suite_shapes():
    import pathlib
    import yaml
    for path in sorted((pathlib.Path(__file__).resolve().parents[1] / "conf" / "suite").glob("*.yaml")):
        for s in yaml.safe_load(path.read_text())["shapes"]:
            yield f"{path.stem}/{s['layer']}", s


@pytest.mark.parametrize("batch", [1, None], ids=["batch1", "suite_batch"])
def test_tiling_never_multiplies_the_transform_work(batch):
    """The tiling cost model was fitted on a 2-core CPU only, and the plan depends on shapes alone,
    so a GPU gets the same tilings. Guard against a pathological one on any device: for every
    shape of every suite, the tiles together transform at most twice the elements of one untiled
    transform (overlap and rounding up to fast lengths; 1.5x at most today)."""
    worst = []
    for name, s in _suite_shapes():
        kh, kw = s["kernel"] if isinstance(s["kernel"], list) else (s["kernel"],) * 2
        g = s.get("groups", 1)
        x = torch.empty(batch or s["n"], s["c_in"], s["h"], s["w"], device="meta")
        w = torch.empty(s["c_out"], s["c_in"] // g, kh, kw, device="meta")
        x, w, _, p, _ = implementations.prepare(x, w, None, s.get("stride", 1), s.get("padding", 0),
                                                s.get("dilation", 1), g)
        x, p = fftmod._single_tap_strides(x, p)
        plan = fftmod._plan(x, w, p)
        untiled = 1
        for axis in (plan.h, plan.w):
            untiled *= fftmod.fast_len(axis.out + max(axis.shift) - min(axis.shift))
        worst.append((plan.tiles * plan.h.n * plan.w.n / untiled, name, (plan.h.count, plan.w.count)))
    assert len(worst) > 100
    assert max(worst)[0] <= 2.0, max(worst)


def test_stride_only_computes_the_needed_outputs():
    """Stride s is a polyphase split: the transforms are about the output's size, not the input's."""
    plan = plan_for((1, 4, 64, 64), (4, 4, 3, 3), stride=2, padding=1)
    assert plan.phases == 4
    assert plan.h.n * plan.h.count <= 40 and plan.w.n * plan.w.count <= 40
    assert fftmod._phases(torch.zeros(1, 4, 64, 64), plan).shape == (1, 16, 32, 32)


def test_tiles_cover_the_output_and_transforms_hold_each_window():
    for shape, k in (((4, 16, 128, 128), 3), ((4, 16, 128, 128), 15), ((4, 16, 128, 128), 31), ((1, 8, 300, 90), 5)):
        plan = plan_for(shape, (16, shape[1], k, k), padding=k // 2)
        for axis, out in ((plan.h, shape[2]), (plan.w, shape[3])):
            assert axis.out == out and axis.count * axis.tile >= out > (axis.count - 1) * axis.tile
            assert axis.n >= axis.window and smooth(axis.n)


def test_large_kernels_use_one_tile_small_kernels_several():
    assert plan_for((4, 16, 128, 128), (16, 16, 31, 31), padding=15).tiles == 1
    assert plan_for((4, 16, 128, 128), (16, 16, 3, 3), padding=1).tiles > 1


def test_kernel_spectrum_is_built_in_bounded_blocks():
    """One 2048x2048 transform of a 64x64-channel kernel would be 8 GiB; K is built in blocks."""
    plan = plan_for((1, 64, 2048, 2048), (64, 64, 3, 3), padding=1)
    blocks = fftmod._row_blocks(plan, 64, 64)
    assert blocks[0][0] == 0 and blocks[-1][1] == plan.h.n
    assert all(a1 == b0 for (_, a1), (b0, _) in zip(blocks, blocks[1:]))
    assert max(u1 - u0 for u0, u1 in blocks) * plan.bins * 64 * 64 <= max(fftmod._BLOCK, plan.bins * 64 * 64)


def test_blocked_kernel_spectrum_matches_reference(monkeypatch):
    """Many K blocks (one H-frequency each), forward and backward."""
    monkeypatch.setattr(fftmod, "_BLOCK", 1)
    check(rand(2, 4, 12, 11), rand(6, 2, 5, 4, seed=1), rand(6, seed=2), padding=(2, 1), groups=2)
    check(rand(2, 4, 12, 11), rand(6, 4, 3, 3, seed=1), rand(6, seed=2), stride=2, padding=1)


def test_tiled_path_matches_reference(monkeypatch):
    """Force many overlap-save tiles (a prohibitive kernel-spectrum cost), strided and grouped included."""
    monkeypatch.setattr(fftmod, "_COST_KERNEL", 1e9)
    fftmod._choose.cache_clear()
    try:
        x, w = rand(2, 4, 30, 27), rand(6, 2, 5, 4, seed=1)
        plan = plan_for(x.shape, w.shape, padding=(2, 1), groups=2)
        assert plan.tiles > 1
        check(x, w, rand(6, seed=2), padding=(2, 1), groups=2)
        check(x, w, rand(6, seed=2), stride=(2, 3), dilation=(1, 2), padding=3, groups=2)
    finally:
        fftmod._choose.cache_clear()


def test_tiled_gradcheck(monkeypatch):
    monkeypatch.setattr(fftmod, "_COST_KERNEL", 1e9)
    fftmod._choose.cache_clear()
    try:
        x, w, b = rand(1, 2, 7, 6).requires_grad_(), rand(2, 2, 3, 2, seed=1).requires_grad_(), rand(2).requires_grad_()
        assert plan_for(x.shape, w.shape, padding=1).tiles > 1
        assert torch.autograd.gradcheck(lambda *t: conv_fft(*t, stride=(1, 2), padding=1), (x, w, b), fast_mode=True)
    finally:
        fftmod._choose.cache_clear()


# ----- the kernel spectrum and its adjoint -------------------------------------------------------

def test_kernel_spectrum_is_the_conjugate_spectrum_of_the_tap_image():
    """K must equal conj(rfft2) of the kernel placed at its tap offsets in a zero plane."""
    w = rand(3, 2, 3, 4)
    plan = plan_for((1, 2, 10, 12), w.shape, padding=(1, 2), dilation=(2, 1))
    fh, fw = plan.h.n, plan.w.n
    mh = fftmod._tap_dft(plan.h, fh, torch.complex128, "cpu")
    mw = fftmod._tap_dft(plan.w, plan.bins, torch.complex128, "cpu")
    k = fftmod._kernel_spectrum(w, plan, mh, mw).view(fh, plan.bins, 2, 3)
    image = torch.zeros(3, 2, fh, fw, dtype=torch.float64)
    for a, sa in enumerate(plan.h.shift):
        for b, sb in enumerate(plan.w.shift):
            image[:, :, sa, sb] += w[:, :, a, b]
    expected = torch.fft.rfft2(image).conj().permute(2, 3, 1, 0)
    torch.testing.assert_close(k, expected, rtol=1e-12, atol=1e-12)


def test_kernel_grad_reads_the_inverse_transform_at_the_taps():
    """The weight gradient is the input/grad-output cross-correlation read at each tap's offset and
    phase; `_kernel_grad` gets it from the cross-spectrum without a full inverse transform."""
    c_out, c_in, kh, kw = 3, 2, 3, 2
    plan = plan_for((1, c_in, 9, 8), (c_out, c_in, kh, kw), stride=(2, 1), padding=1, dilation=(1, 2))
    fh, fw = plan.h.n, plan.w.n
    sh, sw = plan.h.stride, plan.w.stride
    corr = rand(fh, fw, c_in * sh * sw, c_out)                      # a real cross-correlation
    cross = torch.fft.rfft2(corr, dim=(0, 1)).reshape(fh * plan.bins, c_in * sh * sw, c_out)
    mh = fftmod._tap_dft(plan.h, fh, torch.complex128, "cpu")
    mw = fftmod._tap_dft(plan.w, plan.bins, torch.complex128, "cpu")
    got = fftmod._kernel_grad(cross, plan, (c_out, c_in, kh, kw), mh, mw)
    want = torch.empty(c_out, c_in, kh, kw, dtype=torch.float64)
    for a in range(kh):
        for b in range(kw):
            channels = torch.arange(c_in) * sh * sw + plan.h.phase[a] * sw + plan.w.phase[b]
            want[:, :, a, b] = corr[plan.h.shift[a], plan.w.shift[b], channels].T
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


# ----- CUDA --------------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["strided", "grouped", "same_even", "dilated_strided"])
def test_cuda_matches_reference(name):
    xs, ws, kw = CASES[name]
    x, w, b = rand(*xs).cuda(), rand(*ws, seed=1).cuda(), rand(ws[0], seed=2).cuda()
    out = conv_fft(x, w, b, **kw)
    assert out.device.type == "cuda"
    torch.testing.assert_close(out, F.conv2d(x, w, b, **kw), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride, padding", [(2, 0), ((2, 1), (1, 0)), ((1, 3), 2), (3, 1)])
def test_strided_one_tap_axes_carry_no_idle_phases(stride, padding):
    """A 1x1 stride-2 conv (ResNet's downsample) reads one pixel in four: the input is subsampled
    first, so the plan has one phase instead of four, and values and gradients stay exact."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 11, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 6, 1, 1, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    xs, p = fftmod._single_tap_strides(x.detach(), implementations.prepare(x, w, b, stride, padding)[3])
    assert fftmod._plan(xs, w, p).phases == 1
    out = implementations.get("fft")(x, w, b, stride, padding)
    ref = F.conv2d(x, w, b, stride, padding)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(out, (x, w, b), g)
    want = torch.autograd.grad(ref, (x, w, b), g)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)
