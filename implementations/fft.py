"""`fft`: the convolution theorem, arranged so the work is a few FFTs and one batched matmul.

A linear cross-correlation is a product of spectra once the transform is at least as long as the
input window, so each output channel's spectrum is the channel sum of `X · K` per frequency,
where `K` is the spectrum of the kernel taps placed at their offsets. Choices, each measured on
the 2-core CPU against F.conv2d (128x128, 16->16 channels, batch 4):

* Stride is a polyphase split: a stride-s convolution becomes a stride-1 one on s² times more
  channels and s² fewer pixels, so only the needed outputs are computed. Dilation and padding
  only move tap offsets: no dilated zero kernel is built, and along an untiled axis no padded
  copy of the input either (the leading padding wraps onto the transform's zero fill).
* The kernel spectrum is built from its kh·kw taps with two small DFT matmuls (along W, then
  along H as one real GEMM), never by transforming zero-padded kernel planes; the weight
  gradient is the adjoint of the same two steps.
* The channel sum is a complex `bmm` with frequencies as the batch, on contiguous
  frequency-major spectra (on any other layout it loops over the small matrices: 20x slower).
  The inverse transform runs on that layout directly (dims 0, 1): permuting complex spectra back
  cost as much as the transform.
* Overlap-save tiles, picked by a small cost model: for small kernels, bands of ~32 rows make
  the kernel spectrum small and the per-frequency matrices taller (k=3: 9.6 ms against 12.9 ms
  for one 144x144 transform).
* K (c_in·c_out/groups planes of the transform, the method's largest tensor) only ever exists
  a block of ~4 MiB at a time, built next to the matmul that uses it and rebuilt in the
  backward, so memory stays bounded on huge images too.
* Transform lengths are even 2·3·5-smooth (`fast_len`): odd lengths and factors of 7 are slow.
* The backward is FFT-based by hand: grad_input is a correlation with the conjugate spectrum,
  grad_bias the DC bin, grad_weight the input/grad-output cross-spectrum read at the taps;
  only the input spectrum is kept from the forward.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import torch
import torch.nn.functional as F

from .params import ConvParams, prepare
from .registry import Unsupported, register


def _unsupported(device_type: str, dtype: torch.dtype):
    if dtype not in (torch.float32, torch.float64):
        return f"torch.fft has no {dtype} transforms of arbitrary size (only float32 and float64 are supported)"
    return None


@lru_cache(maxsize=None)
def fast_len(n: int) -> int:
    """Smallest even 2·3·5-smooth integer >= n: a transform length MKL (and cuFFT) do fast. Odd
    lengths are slow for real transforms (rfft2 at 135 took 2.4x the time of 144 here), and so
    are factors of 7 (inverse transforms at 28 and 140: 1.5-2x the time per element of 32, 144)."""
    if n < 1:
        raise ValueError(f"fast_len: n must be positive, got {n}")
    m = max(n, 2)
    while True:
        if m % 2 == 0:
            r = m
            for p in (2, 3, 5):
                while r % p == 0:
                    r //= p
            if r == 1:
                return m
        m += 1


@dataclass(frozen=True)
class _Axis:
    """How one spatial axis maps onto the transforms.

    The input is split into `stride` phases of length `length`. Output tile `t` (rows
    [t·tile, (t+1)·tile)) reads a window of `window` rows of each phase, starting at row
    t·tile - lead (the leading `lead` rows are the padding); tap `a` reads phase `phase[a]` at
    `shift[a]` rows into the window. A transform of length `n` >= `window` makes that product
    of spectra a linear correlation. An untiled axis is circular instead (see `_circular`):
    lead 0, negative shifts.
    """

    stride: int
    out: int                # output extent
    phase: tuple[int, ...]
    shift: tuple[int, ...]  # >= 0, relative to the window
    length: int             # extent of one phase: ceil(size / stride)
    lead: int               # zero rows before the data
    tile: int               # outputs per tile
    count: int              # number of tiles
    n: int                  # transform length

    @property
    def window(self) -> int:
        return self.tile + max(self.shift)

    @staticmethod
    def taps(size: int, kernel: int, stride: int, dilation: int, pad_before: int):
        """(phase, shift, length, lead): tap a sits at a·dilation - pad_before of the padded input."""
        taps = [a * dilation - pad_before for a in range(kernel)]
        shift = [t // stride for t in taps]
        lead = -min(shift)
        return (tuple(t % stride for t in taps), tuple(q + lead for q in shift), -(-size // stride), lead)

    def tiles(self) -> list["_Axis"]:
        """Every sensible tiling: for each fast transform length, the fewest tiles it allows."""
        span, options, seen = max(self.shift), [], set()
        for n in _fast_lengths(span + 1, fast_len(self.out + span)):
            count = -(-self.out // (n - span))
            tile = -(-self.out // count)
            if count not in seen:
                seen.add(count)
                options.append(_Axis(self.stride, self.out, self.phase, self.shift, self.length, self.lead,
                                     tile, count, fast_len(tile + span)))
        return options


@lru_cache(maxsize=None)
def _fast_lengths(lo: int, hi: int) -> tuple[int, ...]:
    return tuple(sorted({fast_len(m) for m in range(lo, hi + 1)}))


@lru_cache(maxsize=256)
def _tap_dft(axis: _Axis, bins: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(stride, bins, kernel) complex matrix [phase[a] == r] · e^{+2πi v shift[a] / n}: multiplying the
    taps by it gives their spectrum for a cross-correlation (the conjugate of a convolution's).
    Cached: built once per plan and device, not copied to the device on every call."""
    shift = torch.tensor(axis.shift, dtype=torch.float64)
    v = torch.arange(bins, dtype=torch.float64)
    angle = 2 * math.pi * torch.remainder(v[:, None] * shift[None, :], axis.n) / axis.n
    onehot = torch.tensor(axis.phase)[None, :] == torch.arange(axis.stride)[:, None]
    mat = torch.polar(onehot[:, None, :].to(torch.float64), angle[None])
    return mat.to(dtype=dtype, device=device)


@dataclass(frozen=True)
class _Plan:
    h: _Axis
    w: _Axis
    groups: int

    @property
    def bins(self) -> int:  # rfft keeps n // 2 + 1 frequencies along W
        return self.w.n // 2 + 1

    @property
    def phases(self) -> int:
        return self.h.stride * self.w.stride

    @property
    def tiles(self) -> int:
        return self.h.count * self.w.count


# Machine: fitted on the project's 2-core x86-64 CPU VM only (lscpu: "AMD EPYC", torch 2.13 CPU
# build, 1 thread), never on a GPU. The plan depends on shapes alone, so CUDA gets the same tilings:
# on a GPU cuFFT batches all planes into one launch, so the per-plane cost below is mostly absent
# there and the model may choose bands where one tile would be faster. It cannot choose a
# pathological tiling: tests/test_fft.py bounds every suite shape's tiles to at most twice the
# transform elements of one untiled transform (1.5x at worst). Refit on the GPU before trusting
# fft's CUDA tilings for speed (bench-perf's fft rows show it).
# Relative costs per unit, fitted by hand to forward timings of the tilings of 128x128 images
# with kernels 3, 15 and 31 on that CPU (1 thread, interleaved, min of 12 rounds): one element of a transform (per log2 of its size,
# plus the layout copies around it), one complex multiply-add of the channel sum, one element of
# the kernel spectrum (written once, memory-bound).
_COST_COPY, _COST_MAC, _COST_KERNEL = 20.0, 4.6, 19.0
# ... and a fixed cost per transformed plane: many small tiles were 3-4x slower than their element
# counts say (k=3: 16x16 tiles 38 ms, 32x128 tiles 9.6 ms, one 128x128 tile 12.9 ms).
_COST_PLANE = 40000.0
def _cost(h: _Axis, w: _Axis, n: int, c_in: int, c_out: int, groups: int) -> float:
    """Estimated time of a tiling: the transforms, the channel sum, building the kernel spectrum.
    Small tiles waste transform length on overlap and copies; one big tile makes the kernel
    spectrum (c_in·c_out/groups planes of the whole transform) the dominant, memory-bound cost."""
    freqs = h.n * (w.n // 2 + 1)
    tiles = n * h.count * w.count
    transforms = tiles * (c_in + c_out) * (h.n * w.n * (math.log2(h.n * w.n) + _COST_COPY) + _COST_PLANE)
    contraction = tiles * freqs * c_in * c_out / groups
    return transforms + _COST_MAC * contraction + _COST_KERNEL * _kernel_size(h, w, c_in, c_out, groups)


def _kernel_size(h: _Axis, w: _Axis, c_in: int, c_out: int, groups: int) -> int:
    return h.n * (w.n // 2 + 1) * c_in * c_out // groups


@lru_cache(maxsize=1024)
def _choose(h: _Axis, w: _Axis, n: int, c_in: int, c_out: int, groups: int) -> tuple[_Axis, _Axis]:
    """The cheapest tiling by `_cost`."""
    return min(((th, tw) for th in h.tiles() for tw in w.tiles()), key=lambda hw: _cost(*hw, n, c_in, c_out, groups))


def _plan(x: torch.Tensor, weight: torch.Tensor, p: ConvParams) -> _Plan:
    top, _, left, _ = p.padding
    ho, wo = p.output_size(x.shape[-2], x.shape[-1])
    axes = []
    for size, k, s, d, before, out in ((x.shape[-2], p.kernel[0], p.stride[0], p.dilation[0], top, ho),
                                       (x.shape[-1], p.kernel[1], p.stride[1], p.dilation[1], left, wo)):
        phase, shift, length, lead = _Axis.taps(size, k, s, d, before)
        axes.append(_Axis(s, out, phase, shift, length, lead, out, 1, fast_len(out + max(shift))))
    phases = p.stride[0] * p.stride[1]
    h, w = _choose(axes[0], axes[1], x.shape[0], x.shape[1] * phases, weight.shape[0], p.groups)
    return _Plan(_circular(h), _circular(w), p.groups)


def _circular(axis: _Axis) -> _Axis:
    """An untiled axis needs no padded copy of the input: the leading padding becomes negative tap
    offsets, which wrap onto the zeros the transform appends (n >= window keeps them apart)."""
    if axis.count > 1 or axis.lead == 0:
        return axis
    return replace(axis, shift=tuple(q - axis.lead for q in axis.shift), lead=0)


def _phases(x: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """(N, C, H, W) -> (N, C·sh·sw, ceil(H/sh), ceil(W/sw)): the polyphase split (identity at stride 1)."""
    sh, sw = plan.h.stride, plan.w.stride
    if (sh, sw) == (1, 1):
        return x
    x = F.pad(x, (0, plan.w.length * sw - x.shape[-1], 0, plan.h.length * sh - x.shape[-2]))
    n, c = x.shape[:2]
    x = x.reshape(n, c, plan.h.length, sh, plan.w.length, sw)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(n, c * sh * sw, plan.h.length, plan.w.length)


def _tiles(xs: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """(N, C, Hs, Ws) -> (N·tiles, C, window_h, window_w): the zero padding (or a crop of rows no
    output reads) and, for several tiles, overlapping windows stacked along the batch."""
    pads = []
    for axis in (plan.w, plan.h):
        after = (axis.count - 1) * axis.tile + axis.window - axis.lead - axis.length
        # an untiled axis is only cropped: the transform appends its zeros
        pads += [axis.lead, after if axis.count > 1 else min(after, 0)]
    if any(pads):
        xs = F.pad(xs, pads)
    if plan.tiles == 1:
        return xs
    n, c = xs.shape[:2]
    sizes = [a.window if a.count > 1 else xs.shape[d] for d, a in ((2, plan.h), (3, plan.w))]
    xs = xs.unfold(2, sizes[0], plan.h.tile).unfold(3, sizes[1], plan.w.tile)   # (N, C, th, tw, wh, ww)
    return xs.permute(0, 2, 3, 1, 4, 5).reshape(n * plan.tiles, c, *sizes)


def _retile(y: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """(N, C, th·tile_h, tw·tile_w) -> (N·tiles, C, tile_h, tile_w): the inverse of the layout
    `_inverse(..., untile=True)` writes."""
    if plan.tiles == 1:
        return y
    h, w = plan.h, plan.w
    n, c = y.shape[:2]
    y = y.view(n, c, h.count, h.tile, w.count, w.tile).permute(0, 2, 4, 1, 3, 5)
    return y.reshape(n * plan.tiles, c, h.tile, w.tile)


# ----- spectra in frequency-major layout: (Fh·bins·g, rows, cols), contiguous small matrices ------

def _rfft2(x: torch.Tensor, s: tuple[int, int]) -> torch.Tensor:
    """rfft2 that also accepts an empty batch (MKL refuses a zero-sized transform batch)."""
    if x.numel() == 0:
        cdtype = torch.complex128 if x.dtype == torch.float64 else torch.complex64
        return x.new_zeros(*x.shape[:-2], s[0], s[1] // 2 + 1, dtype=cdtype)
    return torch.fft.rfft2(x, s=s)


def _freq_major(spec: torch.Tensor, groups: int) -> torch.Tensor:
    """Complex (N, C, Fh, bins) -> (Fh·bins·g, N, C/g), contiguous: on any other layout torch.bmm
    multiplies the small matrices one at a time (20x slower here)."""
    n, c, fh, bins = spec.shape
    spec = spec.view(n, groups, c // groups, fh, bins)
    return spec.permute(3, 4, 1, 0, 2).contiguous().view(fh * bins * groups, n, c // groups)


def _inverse(y: torch.Tensor, plan: _Plan, rows: int, cols: int, untile: bool = False) -> torch.Tensor:
    """(Fh·bins·g, B, C/g) spectra -> real (B, C, rows, cols), or with `untile` the tiles put
    side by side, (B/tiles, C, th·rows, tw·cols). The inverse transform runs on the
    frequency-major layout itself (dims 0, 1) and only the cropped real result is permuted, once:
    permuting the complex spectra first costs as much as the transform again."""
    b, n, cg = y.shape
    g = plan.groups
    th, tw = (plan.h.count, plan.w.count) if untile else (1, 1)
    if y.numel() == 0:
        return y.new_zeros(n // (th * tw), g * cg, th * rows, tw * cols, dtype=y.real.dtype)
    y = torch.fft.irfft2(y.view(plan.h.n, plan.bins, g, n, cg), s=(plan.h.n, plan.w.n), dim=(0, 1))
    y = y[:rows, :cols].view(rows, cols, g, n // (th * tw), th, tw, cg).permute(3, 2, 6, 4, 0, 5, 1)
    return y.contiguous().view(n // (th * tw), g * cg, th * rows, tw * cols)


def _bmm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Per-frequency matmul. torch.bmm multiplies tiny matrices one at a time, so the degenerate
    shapes of depthwise convolutions (inner or outer dimensions of 1) are broadcast products:
    11x faster on a depthwise 3x3 layer."""
    m, k, p = a.shape[-2], a.shape[-1], b.shape[-1]
    if k == 1:
        return torch.mul(a, b, out=out)
    if m * p <= 2:
        r = (a.unsqueeze(-1) * b.unsqueeze(-3)).sum(-2)
        return r if out is None else out.copy_(r)
    return torch.bmm(a, b, out=out)


# ----- the kernel spectrum and its adjoint, a block of H-frequencies at a time ------------------
# Only a block of rows of K (~4 MiB) exists at any time: the forward builds it block by block
# next to the matmul that uses it, the backward rebuilds it (a few ms even at k=31) instead of
# keeping the whole spectrum, the largest tensor of the method, alive between the two.

_BLOCK = 1 << 19  # complex elements of K per block


def _row_blocks(plan: _Plan, c_in: int, c_out: int) -> list[tuple[int, int]]:
    per_row = plan.bins * c_in * c_out // plan.groups
    step = max(1, _BLOCK // per_row)
    return [(u, min(u + step, plan.h.n)) for u in range(0, plan.h.n, step)]


def _kernel_w(weight: torch.Tensor, plan: _Plan, mw: torch.Tensor) -> torch.Tensor:
    """The taps transformed along W, as the real (2·kh, ...) stack [[t], [i·t]] that `_kernel_h`
    multiplies: shape (2, kh, bins, g, Cg, sw, O/g, 2)."""
    c_out, c_g, kh, kw = weight.shape
    g = plan.groups
    w = weight.view(g, c_out // g, c_g, kh, kw).to(mw.dtype)
    t = torch.view_as_real(torch.einsum("yvb,gocab->avgcyo", mw, w))
    tw = t.new_empty(2, *t.shape)
    tw[0] = t
    tw[1, ..., 0] = -t[..., 1]  # i·t
    tw[1, ..., 1] = t[..., 0]
    return tw


def _kernel_h(tw: torch.Tensor, plan: _Plan, mh: torch.Tensor, rows: tuple[int, int]) -> torch.Tensor:
    """Rows u0 <= u < u1 of K[(u, v, g), (c, rh, rw), o] = sum over the taps of phase (rh, rw) of
    w · e^{+2πi(u·shift_h/Fh + v·shift_w/Fw)}. The inner dimension is only kh long, where a
    complex GEMM is slow, so it is one real GEMM writing re/im interleaved:
    [Re M | Im M] @ [[t], [i·t]] = M t."""
    _, kh, bins, g, c_g, sw, o_g, _ = tw.shape
    sh, (u0, u1) = plan.h.stride, rows
    m = torch.view_as_real(mh[:, u0:u1]).permute(0, 1, 3, 2).reshape(sh * (u1 - u0), 2 * kh)
    k = torch.view_as_complex((m @ tw.reshape(2 * kh, -1)).view(sh, u1 - u0, bins, g, c_g, sw, o_g, 2))
    if sh > 1:  # the phase joins the channels: (u, bins, g, Cg, sh, sw, O/g)
        k = k.permute(1, 2, 3, 4, 0, 5, 6).contiguous()
    return k.view((u1 - u0) * bins * g, c_g * sh * sw, o_g)


def _kernel_spectrum(weight: torch.Tensor, plan: _Plan, mh: torch.Tensor, mw: torch.Tensor) -> torch.Tensor:
    """All of K (for tests and small problems): two small DFT matmuls over the kh·kw taps, so no
    zero-padded kernel planes are ever transformed."""
    return _kernel_h(_kernel_w(weight, plan, mw), plan, mh, (0, plan.h.n))


def _kernel_grad_h(cross: torch.Tensor, plan: _Plan, mh: torch.Tensor, rows: tuple[int, int], c_g: int) -> torch.Tensor:
    """Adjoint of `_kernel_h` on rows u0..u1 of the cross-spectrum: (kh, bins, g, Cg, sw, O/g)."""
    u0, u1 = rows
    c = cross.view(u1 - u0, plan.bins, plan.groups, c_g, plan.h.stride, plan.w.stride, -1)
    return torch.einsum("xua,uvgcxyo->avgcyo", mh[:, u0:u1], c)


def _kernel_grad_w(t: torch.Tensor, plan: _Plan, weight_shape, mw: torch.Tensor) -> torch.Tensor:
    """Adjoint of `_kernel_w`, finishing the inverse transform at the taps: the half-spectrum bins
    that stand for a conjugate pair count twice (real part of the Hermitian sum)."""
    fh, fw, bins = plan.h.n, plan.w.n, plan.bins
    alpha = torch.full((bins,), 2.0 / (fh * fw), dtype=t.real.dtype, device=t.device)
    alpha[0] = 1.0 / (fh * fw)
    if fw % 2 == 0:
        alpha[-1] = 1.0 / (fh * fw)
    gw = torch.einsum("yvb,avgcyo->gocab", mw * alpha[:, None], t)
    return gw.real.reshape(weight_shape)


def _kernel_grad(cross: torch.Tensor, plan: _Plan, weight_shape, mh: torch.Tensor, mw: torch.Tensor) -> torch.Tensor:
    """Adjoint of `_kernel_spectrum` applied to a whole cross-spectrum C = sum_n X^T conj(GY): C's
    inverse transform evaluated only at the taps."""
    return _kernel_grad_w(_kernel_grad_h(cross, plan, mh, (0, plan.h.n), weight_shape[1]), plan, weight_shape, mw)


# ----- the autograd function --------------------------------------------------------------------

class _FFTConv(torch.autograd.Function):
    """Valid cross-correlation of a batch of (tile) windows, taps at non-negative offsets, with an
    FFT backward."""

    @staticmethod
    def forward(ctx, xs, weight, bias, plan: _Plan):
        fh, fw, bins, g = plan.h.n, plan.w.n, plan.bins, plan.groups
        cdtype = torch.complex128 if xs.dtype == torch.float64 else torch.complex64
        mh = _tap_dft(plan.h, fh, cdtype, xs.device)
        mw = _tap_dft(plan.w, bins, cdtype, xs.device)
        x = _freq_major(_rfft2(xs, (fh, fw)), g)                       # (Fh·bins·g, N, C'/g)
        y = x.new_empty(*x.shape[:2], weight.shape[0] // g)
        tw = _kernel_w(weight, plan, mw)
        per_row = bins * g
        for u0, u1 in _row_blocks(plan, xs.shape[1], weight.shape[0]):
            k = _kernel_h(tw, plan, mh, (u0, u1))
            _bmm(x[u0 * per_row:u1 * per_row], k, out=y[u0 * per_row:u1 * per_row])
        del k
        if bias is not None:  # a constant plane is a DC bin: free in the frequency domain
            y[:g] += bias.view(g, 1, -1) * (fh * fw)
        ctx.plan, ctx.xs_shape = plan, xs.shape
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(x, weight, mh, mw)
        del x  # without autograd, freed before the inverse transform
        return _inverse(y, plan, plan.h.tile, plan.w.tile, untile=True)

    @staticmethod
    def backward(ctx, gy):
        x, weight, mh, mw = ctx.saved_tensors
        plan = ctx.plan
        fh, fw, bins, g = plan.h.n, plan.w.n, plan.bins, plan.groups
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gspec = _rfft2(_retile(gy, plan), (fh, fw))
        gb = gspec[:, :, 0, 0].real.sum(0) if need_b else None        # the DC bin is the plane's sum
        gspec = _freq_major(gspec, g)                                    # (Fh·bins·g, N, O/g)
        gxs = gspec.new_empty(*gspec.shape[:2], x.shape[-1]) if need_x else None
        tw = _kernel_w(weight, plan, mw) if need_x else None
        t = None
        per_row = bins * g
        for u0, u1 in _row_blocks(plan, ctx.xs_shape[1], weight.shape[0]):
            r = slice(u0 * per_row, u1 * per_row)
            if need_x:  # grad_input: correlation with the conjugate spectrum, GX = GY K^H
                k = _kernel_h(tw, plan, mh, (u0, u1))
                _bmm(gspec[r], k.transpose(-1, -2).conj(), out=gxs[r])
            if need_w:  # cross-spectrum C = X^T conj(GY), as conj(X^H GY) (a BLAS conj-transpose)
                cross = _bmm(x[r].transpose(-1, -2).conj(), gspec[r]).conj()
                part = _kernel_grad_h(cross, plan, mh, (u0, u1), weight.shape[1])
                t = part if t is None else t + part
        gx = _inverse(gxs, plan, ctx.xs_shape[-2], ctx.xs_shape[-1]) if need_x else None
        gw = _kernel_grad_w(t, plan, weight.shape, mw) if need_w else None
        return gx, gw, gb, None


def _single_tap_strides(x: torch.Tensor, p: ConvParams) -> tuple[torch.Tensor, ConvParams]:
    """Along an axis with a one-tap kernel (1x1 convs) and stride s, each output reads one input row
    in s. Take those rows first: the polyphase split would otherwise carry s-1 phases that no tap
    reads, multiplying the channel contraction and the kernel spectrum by s per axis."""
    stride, padding = list(p.stride), list(p.padding)
    out = p.output_size(x.shape[-2], x.shape[-1])
    for axis in (0, 1):
        if p.kernel[axis] != 1 or p.stride[axis] == 1:
            continue
        before, after = padding[2 * axis:2 * axis + 2]
        if before or after:
            x = F.pad(x, (0, 0, before, after) if axis == 0 else (before, after, 0, 0))
        rows = slice(0, (out[axis] - 1) * stride[axis] + 1, stride[axis])
        x = x[:, :, rows] if axis == 0 else x[:, :, :, rows]
        stride[axis], padding[2 * axis:2 * axis + 2] = 1, (0, 0)
    return x, replace(p, stride=tuple(stride), padding=tuple(padding))


@register("fft", unsupported=_unsupported)
def conv2d_fft(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    x, weight, bias, p, unbatched = prepare(input, weight, bias, stride, padding, dilation, groups)
    reason = _unsupported(x.device.type, x.dtype)
    if reason:
        raise Unsupported(reason)
    x, p = _single_tap_strides(x, p)
    plan = _plan(x, weight, p)
    y = _FFTConv.apply(_tiles(_phases(x, plan), plan), weight, bias, plan)
    if y.shape[-2:] != (plan.h.out, plan.w.out):  # the last tiles may overhang
        y = y[:, :, :plan.h.out, :plan.w.out].contiguous()
    return y.squeeze(0) if unbatched else y
