"""`fft`: the convolution theorem, arranged so the work is a few FFTs and one real batched GEMM.

Cross-correlation of a zero-padded signal is a circular cross-correlation when the transform is
long enough, so each output channel's spectrum is the channel sum of `X · K` over frequencies,
where `K` is the spectrum of the kernel taps placed at their (circular) offsets. Choices, each
measured on a 2-core CPU (see the module's report in the repository history):

* Padding is not applied to the input: the top/left padding becomes a negative tap offset (a
  circular shift folded into `K`), the bottom/right padding is the transform's own zero fill.
* Stride is a polyphase split: `pixel_unshuffle` turns a stride-s convolution into a stride-1 one on
  s² times more channels and s² fewer pixels, so only the needed outputs are ever computed.
  Dilation just spreads tap offsets, so no dilated zero kernel is built.
* The kernel spectrum is built from its few taps: a small DFT matrix along W (no zero planes), an
  FFT along H; its gradient is the adjoint of the same two steps.
* The channel sum is a complex matmul per frequency. Frequencies go first (contiguous small
  matrices) and the complex product is one real `bmm` on a [[Re, -Im], [Im, Re]] block of the
  smaller operand: 10x faster here than einsum over a frequency-last layout.
* Transform sizes are even 2·3·5·7-smooth numbers (`fast_len`), which MKL/pocketfft/cuFFT do fast.
* The backward is FFT-based by hand: grad_input is a circular convolution with the same `K`, and
  grad_weight reads the taps out of the input/grad-output cross-spectrum, so nothing but the input
  spectrum and `K` is kept between forward and backward.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
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
    """Smallest even 2·3·5·7-smooth integer >= n: a transform length the FFT libraries do fast
    (odd lengths are slow for real transforms here: rfft2 at 135 takes 2.4x the time of 144)."""
    if n < 1:
        raise ValueError(f"fast_len: n must be positive, got {n}")
    m = max(n, 2)
    while True:
        if m % 2 == 0:
            r = m
            for p in (2, 3, 5, 7):
                while r % p == 0:
                    r //= p
            if r == 1:
                return m
        m += 1


@dataclass(frozen=True)
class _Axis:
    """How one spatial axis maps onto the transform.

    The input is split into `stride` phases of length `length`; kernel tap `a` reads phase
    `phase[a]` at circular offset `shift[a]` (negative offsets are the leading padding), so
    output `i` is sum_a w[a] * phase_{phase[a]}[i + shift[a]].
    """

    size: int     # input extent, unpadded
    stride: int
    out: int      # output extent
    phase: tuple[int, ...]
    shift: tuple[int, ...]
    length: int   # extent of one phase: ceil(size / stride)
    n: int        # transform length

    @staticmethod
    def plan(size: int, kernel: int, stride: int, dilation: int, pad_before: int, out: int) -> "_Axis":
        taps = [a * dilation - pad_before for a in range(kernel)]
        phase = tuple(t % stride for t in taps)
        shift = tuple(t // stride for t in taps)
        length = -(-size // stride)
        # Circular correlation equals the linear one when every index i + shift lands either on
        # the data [0, length) or on zeros that do not wrap onto data.
        span = max(out + max(shift), length) - min(min(shift), 0)
        return _Axis(size, stride, out, phase, shift, length, fast_len(span))


def _tap_dft(axis: _Axis, bins: int, dtype, device) -> torch.Tensor:
    """(kernel, stride, bins, 2) real matrix: tap a -> [phase[a] == r] * (cos, sin)(2π v shift[a] / n).
    Multiplying taps by it gives their spectrum e^{+iθ}, i.e. a cross-correlation kernel."""
    shift = torch.tensor(axis.shift, dtype=torch.float64)
    v = torch.arange(bins, dtype=torch.float64)
    angle = 2 * math.pi * torch.remainder(shift[:, None] * v[None, :], axis.n) / axis.n
    phase = torch.tensor(axis.phase)
    onehot = (phase[:, None] == torch.arange(axis.stride)[None, :]).to(torch.float64)
    mat = onehot[:, :, None, None] * torch.stack((angle.cos(), angle.sin()), -1)[:, None]
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


def _plan(x: torch.Tensor, p: ConvParams) -> _Plan:
    top, _, left, _ = p.padding
    ho, wo = p.output_size(x.shape[-2], x.shape[-1])
    h = _Axis.plan(x.shape[-2], p.kernel[0], p.stride[0], p.dilation[0], top, ho)
    w = _Axis.plan(x.shape[-1], p.kernel[1], p.stride[1], p.dilation[1], left, wo)
    return _Plan(h, w, p.groups)


def _phases(x: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """(N, C, H, W) -> (N, C·sh·sw, ceil(H/sh), ceil(W/sw)): the polyphase split (identity at stride 1)."""
    sh, sw = plan.h.stride, plan.w.stride
    if (sh, sw) == (1, 1):
        return x
    x = F.pad(x, (0, plan.w.length * sw - x.shape[-1], 0, plan.h.length * sh - x.shape[-2]))
    n, c = x.shape[:2]
    x = x.reshape(n, c, plan.h.length, sh, plan.w.length, sw)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(n, c * sh * sw, plan.h.length, plan.w.length)


# ----- spectra in frequency-major layout: (frequencies·groups, 2 = re/im, rows, cols) -----------

def _freq_major(spec: torch.Tensor, groups: int) -> torch.Tensor:
    """Complex (N, C, Fh, Fw) -> real (Fh·Fw·g, 2, N, C/g), contiguous."""
    n, c, fh, fw = spec.shape
    r = torch.view_as_real(spec).view(n, groups, c // groups, fh, fw, 2)
    return r.permute(3, 4, 1, 5, 0, 2).reshape(fh * fw * groups, 2, n, c // groups)


def _spatial_major(y: torch.Tensor, n: int, fh: int, fw: int) -> torch.Tensor:
    """Real (Fh·Fw·g, 2, N, C/g) -> complex (N, C, Fh, Fw), contiguous (irfft2 is 1.6x slower on
    a permuted input)."""
    b, _, _, cg = y.shape
    g = b // (fh * fw)
    y = y.view(fh, fw, g, 2, n, cg).permute(4, 2, 5, 0, 1, 3).contiguous()
    return torch.view_as_complex(y.view(n, g * cg, fh, fw, 2))


def _cmm(a: torch.Tensor, b: torch.Tensor, conj_a: bool = False, conj_b: bool = False) -> torch.Tensor:
    """Batched complex matmul on real (B, 2, M, K) and (B, 2, K, P) -> (B, 2, M, P), as one real bmm
    (B, 2M, 2K) @ (B, 2K, P): `a` becomes [[Re, -Im], [Im, Re]] (signs adjusted for conjugates).
    Pass the smaller operand as `a`; it is the one duplicated."""
    ar, ai = a[:, 0], a[:, 1]
    sa, sb = (-1 if conj_a else 1), (-1 if conj_b else 1)
    # (ar + i sa ai)(br + i sb bi) = ar br - sa sb ai bi + i (sb ar bi + sa ai br)
    top = torch.cat((ar, ai * (-sa * sb)), -1)
    bottom = torch.cat((ai * sa, ar * sb), -1)
    block = torch.cat((top, bottom), -2)
    bsz, _, k, p = b.shape
    out = torch.bmm(block, b.reshape(bsz, 2 * k, p))
    return out.view(bsz, 2, a.shape[-2], p)


def _product(a: torch.Tensor, b: torch.Tensor, conj_a: bool = False, conj_b: bool = False) -> torch.Tensor:
    """A B per frequency for (B, 2, M, K) and (B, 2, K, P), duplicating the smaller of A and B^T
    (via (A B)^T = B^T A^T): the right operand's layout matters less than the block's size."""
    if a.shape[-2] <= b.shape[-1]:
        return _cmm(a, b, conj_a, conj_b)
    return _cmm(b.transpose(-1, -2), a.transpose(-1, -2), conj_b, conj_a).transpose(-1, -2)


# ----- the kernel spectrum and its adjoint ------------------------------------------------------

def _kernel_spectrum(weight: torch.Tensor, plan: _Plan, dft_w: torch.Tensor) -> torch.Tensor:
    """K[(u, v, g), re/im, (c, rh, rw), o] = sum over taps of w · e^{+2πi(u·shift_h/Fh + v·shift_w/Fw)},
    restricted to the taps of phase (rh, rw). Taps go through a DFT matrix along W (kw columns, no
    zero padding) and an FFT along H (kh rows scattered into Fh)."""
    c_out, c_g, kh, kw = weight.shape
    sh, sw, fh, bins = plan.h.stride, plan.w.stride, plan.h.n, plan.bins
    t = weight.reshape(-1, kw) @ dft_w.reshape(kw, -1)              # (O·Cg·kh, sw·bins·2)
    t = torch.view_as_complex(t.view(c_out, c_g, kh, sw, bins, 2))
    z = t.new_zeros(c_out, c_g, sh, fh, sw, bins)
    rows = torch.tensor(plan.h.phase, device=weight.device)
    cols = torch.tensor([s % fh for s in plan.h.shift], device=weight.device)
    z[:, :, rows, cols] = t
    z = torch.fft.ifft(z, dim=3, norm="forward")                    # sum_j z_j e^{+2πi u j / Fh}
    g = plan.groups
    z = torch.view_as_real(z).view(g, c_out // g, c_g, sh, fh, sw, bins, 2)
    z = z.permute(4, 6, 0, 7, 2, 3, 5, 1)                           # (Fh, bins, g, 2, Cg, sh, sw, O/g)
    return z.reshape(fh * bins * g, 2, c_g * sh * sw, c_out // g)


def _kernel_grad(cross: torch.Tensor, plan: _Plan, weight_shape, dft_w: torch.Tensor) -> torch.Tensor:
    """Adjoint of `_kernel_spectrum` applied to the cross-spectrum C = sum_n X conj(GY): the
    inverse transform of C evaluated only at the taps (real, with the half-spectrum weights)."""
    c_out, c_g, kh, kw = weight_shape
    sh, sw, fh, fw, bins, g = plan.h.stride, plan.w.stride, plan.h.n, plan.w.n, plan.bins, plan.groups
    z = cross.reshape(fh, bins, g, 2, c_g, sh, sw, c_out // g).permute(2, 7, 4, 5, 0, 6, 1, 3)
    z = torch.view_as_complex(z.reshape(c_out, c_g, sh, fh, sw, bins, 2).contiguous())
    z = torch.fft.ifft(z, dim=3, norm="forward")                    # evaluate along H at every row
    rows = torch.tensor(plan.h.phase, device=cross.device)
    cols = torch.tensor([s % fh for s in plan.h.shift], device=cross.device)
    t = torch.view_as_real(z[:, :, rows, cols])                     # (O, Cg, kh, sw, bins, 2)
    # Real part of sum_v α_v t_v e^{iθ}: the bins that stand for a conjugate pair count twice.
    alpha = torch.full((bins,), 2.0, dtype=t.dtype, device=t.device)
    alpha[0] = 1.0
    if fw % 2 == 0:
        alpha[-1] = 1.0
    t = t * (alpha[:, None] * torch.tensor([1.0, -1.0], dtype=t.dtype, device=t.device))
    gw = t.reshape(-1, sw * bins * 2) @ dft_w.reshape(kw, -1).T
    return gw.view(c_out, c_g, kh, kw) / (fh * fw)


# ----- the autograd function --------------------------------------------------------------------

class _FFTConv(torch.autograd.Function):
    """Stride-1 circular-correlation core on the phase-split input: forward and an FFT backward."""

    @staticmethod
    def forward(ctx, xs, weight, bias, plan: _Plan):
        fh, fw, bins, g = plan.h.n, plan.w.n, plan.bins, plan.groups
        dft_w = _tap_dft(plan.w, bins, xs.dtype, xs.device)
        k = _kernel_spectrum(weight, plan, dft_w)
        x = _freq_major(torch.fft.rfft2(xs, s=(fh, fw)), g)
        y = _spatial_major(_product(x, k), xs.shape[0], fh, bins)
        y = torch.fft.irfft2(y, s=(fh, fw))[:, :, :plan.h.out, :plan.w.out]
        y = y.contiguous()
        if bias is not None:
            y += bias.view(1, -1, 1, 1)
        ctx.plan, ctx.weight_shape, ctx.xs_shape, ctx.has_bias = plan, weight.shape, xs.shape, bias is not None
        ctx.save_for_backward(x, k, dft_w)
        return y

    @staticmethod
    def backward(ctx, gy):
        x, k, dft_w = ctx.saved_tensors
        plan = ctx.plan
        fh, fw, bins, g = plan.h.n, plan.w.n, plan.bins, plan.groups
        gx = gw = gb = None
        gspec = _freq_major(torch.fft.rfft2(gy, s=(fh, fw)), g)       # (B, 2, N, O/g)
        if ctx.needs_input_grad[0]:
            # grad_input: circular convolution with the same taps, GX = GY conj(K)^T.
            gxs = _product(gspec, k.transpose(-1, -2), conj_b=True)
            gxs = torch.fft.irfft2(_spatial_major(gxs, gy.shape[0], fh, bins), s=(fh, fw))
            gx = gxs[:, :, :ctx.xs_shape[-2], :ctx.xs_shape[-1]]
        if ctx.needs_input_grad[1]:
            # cross-spectrum sum_n X^T conj(GY): (B, 2, C/g, O/g); the smaller side is duplicated.
            cross = _product(x.transpose(-1, -2), gspec, conj_b=True)
            gw = _kernel_grad(cross, plan, ctx.weight_shape, dft_w)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = gy.sum((0, 2, 3))
        return gx, gw, gb, None


@register("fft", unsupported=_unsupported)
def conv2d_fft(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    x, weight, bias, p, unbatched = prepare(input, weight, bias, stride, padding, dilation, groups)
    reason = _unsupported(x.device.type, x.dtype)
    if reason:
        raise Unsupported(reason)
    plan = _plan(x, p)
    y = _FFTConv.apply(_phases(x, plan), weight, bias, plan)
    return y.squeeze(0) if unbatched else y
