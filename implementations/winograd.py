"""`winograd` and `winograd_f2`: minimal filtering (Lavin & Gray 2016, "Fast Algorithms for
Convolutional Neural Networks", arXiv:1509.09308) for 3x3 convolutions at stride 1, dilation 1.

F(m x m, 3 x 3) computes an m x m output tile from an (m+2) x (m+2) input tile with (m+2)^2
multiplications instead of 9 m^2: Y = A^T [(G g G^T) . (B^T d B)] A. `winograd` is F(4x4, 3x3)
(36 products per 16 outputs, 4x fewer), `winograd_f2` is F(2x2, 3x3) (16 per 4, 2.25x fewer, and
about 7x less rounding error: its transforms have no coefficients larger than 1).

Layout: a chunk of images lives in the Winograd domain as (alpha, alpha, C, n, tile_rows, tile_cols)
(alpha = m + 2), so each of the alpha^2 points holds a (C, tiles) matrix and the channel sum is one
`bmm` over the points, (C_out x C_in) @ (C_in x tiles), tiles the long dimension.
Choices, measured on the 2-core CPU (1 thread, ResNet-50 layers at batch 8; see `make bench-perf`):
* The input and output transforms are add/sub chains (B^T: 12 ops, A^T: 10 ops per axis), run on
  strided views of the padded input and written straight into the output. Gathering tiles into a
  matrix and transforming with one Kronecker GEMM (B (x) B, 36x36) took 7.6 ms for the 56x56 layer's
  input against 17 ms for the whole F.conv2d; the views need no gather at all.
* The weights are transformed once per call by one GEMM with G (x) G (36x9) and reused by every
  chunk; the bias is added to one Winograd point (the evaluation point 1, whose column of A^T is
  all ones), 1/36 of the work of a pass over the output.
* The batch is processed in chunks whose transformed input and output stay within `CHUNK_BYTES`
  (but hold at least `MIN_TILES` tiles, so the per-point products stay matrix-sized),
  so the temporaries are cache-sized and bounded whatever the batch.
* Backward (hand-written, saving only the input and the weight): grad_input is this forward on the
  output gradient with the flipped, transposed kernel; grad_weight is accumulated in the Winograd
  domain as one `baddbmm` per chunk of (A g A^T) with the recomputed transformed input, then mapped
  back with G^T once.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch

from .autograd import with_backward
from .params import ConvParams, prepare
from .registry import Unsupported, register

# Bytes of transformed input plus transformed output per chunk of images (see `_Plan.chunk`).
CHUNK_BYTES = 2 * 2**20
CHUNK_BYTES_GPU = 256 * 2**20
MIN_TILES = 64  # tiles per chunk at least, whatever CHUNK_BYTES says (see `_Plan.__init__`)

Chain = Callable[[list, list], None]


# ----- the transforms (Lavin & Gray 2016, section 4.1 F(2x2,3x3) and 4.2 F(4x4,3x3)) -----------
# Each chain applies one transform matrix along one axis: `src` holds the rows of the input as
# tensors (any strides), `dst` the rows of the result, written with out= (no temporaries).

def _bt_f2(d, t):
    """B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]."""
    torch.sub(d[0], d[2], out=t[0])
    torch.add(d[1], d[2], out=t[1])
    torch.sub(d[2], d[1], out=t[2])
    torch.sub(d[1], d[3], out=t[3])


def _at_f2(m, y):
    """A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]."""
    torch.add(m[0], m[1], out=y[0]).add_(m[2])
    torch.sub(m[1], m[2], out=y[1]).sub_(m[3])


def _a_f2(g, t):
    """A = (A^T)^T, the adjoint of the output transform (for grad_weight)."""
    t[0].copy_(g[0])
    torch.add(g[0], g[1], out=t[1])
    torch.sub(g[0], g[1], out=t[2])
    torch.neg(g[1], out=t[3])


def _bt_f4(d, t):
    """B^T = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
              [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
    as 12 add/subs on shared terms c = d4 - d2, e = d3 - d1, a = d4 - 4 d2, b = d3 - 4 d1."""
    torch.sub(d[0], d[2], out=t[0])
    torch.sub(d[4], d[2], out=t[3])               # c
    torch.add(t[3], t[0], alpha=4, out=t[0])      # t0 = c + 4 (d0 - d2)
    torch.sub(d[3], d[1], out=t[4])               # e
    torch.sub(d[5], d[3], out=t[5])
    t[5].add_(t[4], alpha=-4)                     # t5 = d5 - d3 - 4 e
    t[3].add_(t[4], alpha=2)                      # t3 = c + 2 e
    torch.add(t[3], t[4], alpha=-4, out=t[4])     # t4 = c - 2 e
    torch.add(d[4], d[2], alpha=-4, out=t[1])     # a
    torch.add(d[3], d[1], alpha=-4, out=t[2])     # b
    t[1].add_(t[2])                               # t1 = a + b
    torch.add(t[1], t[2], alpha=-2, out=t[2])     # t2 = a - b


def _at_f4(m, y):
    """A^T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
    on p = m1 + m2, q = m1 - m2, r = m3 + m4, s = m3 - m4."""
    torch.add(m[1], m[2], out=y[0])               # p
    torch.add(m[3], m[4], out=y[2])               # r
    y[0].add_(y[2])                               # p + r
    torch.add(y[0], y[2], alpha=3, out=y[2])      # y2 = p + 4 r
    y[0].add_(m[0])                               # y0 = m0 + p + r
    torch.sub(m[1], m[2], out=y[1])               # q
    torch.sub(m[3], m[4], out=y[3])               # s
    y[1].add_(y[3], alpha=2)                      # y1 = q + 2 s
    torch.add(y[1], y[3], alpha=6, out=y[3])      # q + 8 s
    y[3].add_(m[5])                               # y3 = q + 8 s + m5


def _a_f4(g, t):
    """A = (A^T)^T, the adjoint of the output transform (for grad_weight)."""
    t[0].copy_(g[0])
    t[5].copy_(g[3])
    torch.add(g[0], g[2], out=t[1])
    torch.add(g[1], g[3], out=t[2])
    t[1].add_(t[2])                               # g0 + g1 + g2 + g3
    torch.add(t[1], t[2], alpha=-2, out=t[2])     # g0 - g1 + g2 - g3
    torch.add(g[0], g[2], alpha=4, out=t[3])
    torch.add(g[1], g[3], alpha=4, out=t[4])
    t[3].add_(t[4], alpha=2)                      # g0 + 2 g1 + 4 g2 + 8 g3
    torch.add(t[3], t[4], alpha=-4, out=t[4])     # g0 - 2 g1 + 4 g2 - 8 g3


@dataclass(frozen=True)
class Algorithm:
    """F(m x m, 3 x 3): tile size, the filter transform G (alpha x 3) and the chains above."""

    m: int
    G: tuple
    input: Chain          # B^T, alpha -> alpha rows
    output: Chain         # A^T, alpha -> m rows
    output_adjoint: Chain  # A, m -> alpha rows

    @property
    def alpha(self) -> int:
        return self.m + 2


F2 = Algorithm(2, ((1, 0, 0), (1 / 2, 1 / 2, 1 / 2), (1 / 2, -1 / 2, 1 / 2), (0, 0, 1)), _bt_f2, _at_f2, _a_f2)
F4 = Algorithm(4, ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
                   (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)), _bt_f4, _at_f4, _a_f4)
BIAS_POINT = 1  # the evaluation point 1: its column of A^T is all ones, so M[1, 1] += b adds b to Y


@lru_cache(maxsize=None)
def _gg(algo: Algorithm, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """G (x) G, (alpha^2, 9): the filter transform as one GEMM. Built in float64 and cached per
    device, so a CUDA call copies nothing from the host after the first."""
    g = torch.tensor(algo.G, dtype=torch.float64)
    return torch.kron(g, g).to(dtype=dtype, device=device)


def transform_weight(weight: torch.Tensor, algo: Algorithm) -> torch.Tensor:
    """(C_out, C_in/g, 3, 3) -> U = G w G^T as (alpha^2, C_out, C_in/g), one GEMM."""
    c_out, c_g = weight.shape[:2]
    gg = _gg(algo, weight.dtype, weight.device)
    return (gg @ weight.reshape(c_out * c_g, 9).t()).view(algo.alpha ** 2, c_out, c_g)


# ----- tiling ---------------------------------------------------------------------------------

def _unsupported(device_type: str, dtype: torch.dtype):
    if dtype not in (torch.float32, torch.float64):
        return (f"winograd computes in {dtype} only float32/float64: its transforms amplify rounding "
                "(F(4x4,3x3) by ~20x over a direct sum), beyond a 16-bit tolerance")
    return None


def shape_unsupported(weight_shape, p: ConvParams) -> str | None:
    """Why this convolution is not one the Winograd transforms here cover, or None."""
    if tuple(weight_shape[-2:]) != (3, 3):
        return f"winograd is F(m x m, 3 x 3): 3x3 kernels only, got {tuple(weight_shape[-2:])}"
    if p.stride != (1, 1):
        return f"winograd computes stride-1 convolutions only, got stride={p.stride}"
    if p.dilation != (1, 1):
        return f"winograd computes undilated convolutions only, got dilation={p.dilation}"
    return None


class _Plan:
    """Tiles, chunks and buffers of one stride-1 3x3 convolution of x (n, C, H, W) with per-side
    padding (may be negative: a crop, as grad_input's 'full' correlation needs).

    Inside, images are channels-last (n, H, W, C): every add/sub of a transform then runs over
    contiguous stretches of at least C elements (tile rows are rows of W*C, tile columns runs of
    C). On NCHW tensors, with tile columns strided by m, the same chains ran at a fifth of the speed.
    """

    def __init__(self, x: torch.Tensor, c_out: int, padding: tuple[int, int, int, int], groups: int,
                 algo: Algorithm):
        self.algo, self.groups, self.padding = algo, groups, padding
        self.n, self.c_in, self.h, self.w = x.shape
        self.c_out = c_out
        top, bottom, left, right = padding
        self.ho, self.wo = self.h + top + bottom - 2, self.w + left + right - 2
        m, a = algo.m, algo.alpha
        self.th, self.tw = -(-self.ho // m), -(-self.wo // m)
        self.tiles = self.th * self.tw
        self.aligned = (self.ho, self.wo) == (m * self.th, m * self.tw)
        # A chunk's transformed input and output within the budget, but at least MIN_TILES tiles:
        # the per-point products are (tiles x C_in) @ (C_in x C_out), and with few tiles per image
        # (small images) one image's worth is too thin a matrix (ResNet-50's 14x14 layer at batch 8,
        # interleaved rounds: 1.02x F.conv2d in chunks of one image, 0.86x in chunks of four, peak
        # 19.5 MiB; 0.82x in one chunk of eight, but 24.1 MiB, past the memory bound). Never more
        # than half the batch for that: the whole batch's transforms at once, plus the work buffers
        # around them, pass the bound of 3x the output plus the transforms (7x7 layer: 43.8 MiB > 42.8).
        per_image = a * a * self.tiles * (self.c_in + c_out) * x.element_size()
        budget = CHUNK_BYTES if x.device.type == "cpu" else CHUNK_BYTES_GPU
        thin = min(-(-MIN_TILES // max(self.tiles, 1)), -(-self.n // 2))
        most = max(1, min(self.n, max(budget // max(per_image, 1), thin)))
        count = -(-self.n // most) if self.n else 1
        self.chunk = max(1, -(-self.n // count))  # chunks of equal size

    def chunks(self):
        for a in range(0, self.n, self.chunk):
            yield a, min(a + self.chunk, self.n)

    def padded_buffer(self, x: torch.Tensor) -> torch.Tensor:
        """A zeroed channels-last (chunk, m*th + 2, m*tw + 2, C) buffer: the padding and the last
        tiles' overhang stay zero, each chunk overwrites only the interior (`fill`)."""
        m = self.algo.m
        return x.new_zeros(self.chunk, m * self.th + 2, m * self.tw + 2, x.shape[1])

    def fill(self, buf: torch.Tensor, x: torch.Tensor, a: int, b: int) -> torch.Tensor:
        """Images a:b of x (n, C, H, W) into the buffer at the padding's offset (negative padding
        crops x), transposed to channels-last on the way."""
        top, _, left, _ = self.padding
        rows = min(self.h - max(-top, 0), buf.shape[1] - max(top, 0))
        cols = min(self.w - max(-left, 0), buf.shape[2] - max(left, 0))
        dst = buf[:b - a, max(top, 0):max(top, 0) + rows, max(left, 0):max(left, 0) + cols]
        src = x[a:b, :, max(-top, 0):max(-top, 0) + rows, max(-left, 0):max(-left, 0) + cols]
        dst.copy_(src.permute(0, 2, 3, 1))
        return buf[:b - a]

    def to_winograd(self, chain: Chain, src: torch.Tensor, rows_in: int, rows_out: int) -> torch.Tensor:
        """Tiles of src (n, >= m*th + rows_in - m, >= m*tw + rows_in - m, C) ->
        (rows_out, rows_out, n, th, tw, C): the chain down the tile rows, then along them. Row k of
        tile i is src row m*i + k, a strided view: the tiles are never gathered."""
        m, th, tw = self.algo.m, self.th, self.tw
        rows = [src[:, k:k + m * (th - 1) + 1:m] for k in range(rows_in)]      # (n, th, W, C)
        r = src.new_empty(rows_out, src.shape[0], th, src.shape[2], src.shape[3])
        chain(rows, list(r))
        cols = [r[:, :, :, k:k + m * (tw - 1) + 1:m] for k in range(rows_in)]  # (rows_out, n, th, tw, C)
        v = src.new_empty(rows_out, rows_out, src.shape[0], th, tw, src.shape[3])
        chain(cols, list(v.transpose(0, 1)))
        return v

    def from_winograd(self, y: torch.Tensor, dst: torch.Tensor) -> None:
        """(alpha, alpha, n, th, tw, C) -> dst (n, m*th, m*tw, C): A^T down the rows, then along
        them, the last step writing the output tiles in place."""
        m, a = self.algo.m, self.algo.alpha
        z = y.new_empty(m, a, *y.shape[2:])
        self.algo.output(list(y), list(z))
        n, c = dst.shape[0], dst.shape[3]
        tiles = dst.view(n, self.th, m, self.tw, m, c).permute(4, 2, 0, 1, 3, 5)  # (m_j, m_i, n, th, tw, C)
        self.algo.output(list(z.transpose(0, 1)), list(tiles))


def _products(u: torch.Tensor, v: torch.Tensor, groups: int, out: torch.Tensor) -> None:
    """out (P, T, C_out) = per point v (P, T, C_in) @ u (P, C_out, C_in/g)^T, group by group.
    Depthwise is a broadcast product: torch.bmm multiplies such degenerate matrices one at a time."""
    pp, t, c_in = v.shape
    c_out, c_g = u.shape[1:]
    if groups == 1:
        torch.bmm(v, u.transpose(1, 2), out=out)
    elif c_g == 1:
        torch.mul(v.view(pp, t, groups, 1), u.view(pp, 1, groups, c_out // groups),
                  out=out.view(pp, t, groups, c_out // groups))
    else:
        prod = torch.matmul(v.view(pp, t, groups, c_g).transpose(1, 2),
                            u.view(pp, groups, c_out // groups, c_g).transpose(2, 3))  # (P, g, T, O/g)
        out.view(pp, t, groups, c_out // groups).copy_(prod.transpose(1, 2))


def _winograd_conv(x, weight, bias, padding, groups, algo: Algorithm) -> torch.Tensor:
    """Stride-1 3x3 cross-correlation of x (n, C, H, W) with per-side `padding`, output in x's
    memory format (channels_last stays channels_last, as F.conv2d's does)."""
    c_out = weight.shape[0]
    plan = _Plan(x, c_out, padding, groups, algo)
    nhwc = _is_channels_last(x)
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    out = torch.empty(plan.n, c_out, plan.ho, plan.wo, dtype=x.dtype, device=x.device, memory_format=fmt)
    if plan.n == 0:
        return out
    pp, m = algo.alpha ** 2, algo.m
    u = transform_weight(weight, algo)
    buf = plan.padded_buffer(x)
    direct = nhwc and plan.aligned  # the output tiles land in the output itself
    ybuf = None if direct else x.new_empty(plan.chunk, m * plan.th, m * plan.tw, c_out)
    for a, b in plan.chunks():
        v = plan.to_winograd(algo.input, plan.fill(buf, x, a, b), algo.alpha, algo.alpha)
        t = (b - a) * plan.tiles
        mm = v.new_empty(pp, t, c_out)
        _products(u, v.view(pp, t, plan.c_in), groups, out=mm)
        del v  # before the output transform's temporaries
        if bias is not None:
            mm[BIAS_POINT * algo.alpha + BIAS_POINT] += bias
        dst = out[a:b].permute(0, 2, 3, 1) if direct else ybuf[:b - a]
        plan.from_winograd(mm.view(algo.alpha, algo.alpha, b - a, plan.th, plan.tw, c_out), dst)
        if not direct:
            out[a:b].copy_(dst[:, :plan.ho, :plan.wo].permute(0, 3, 1, 2))
    return out


def _grad_weight(go, x, weight_shape, padding, groups, algo: Algorithm) -> torch.Tensor:
    """dL/dw = G^T [sum over tiles of (A dY A^T) (B^T d B)^T] G: one batched product per chunk in
    the Winograd domain (dY's tiles transformed by A, the adjoint of the output transform), then
    one GEMM with (G (x) G)^T."""
    c_out, c_g = weight_shape[:2]
    plan = _Plan(x, c_out, padding, groups, algo)
    pp, g, m = algo.alpha ** 2, groups, algo.m
    du = x.new_zeros(pp, g, c_out // g, c_g)
    buf = plan.padded_buffer(x)
    gbuf = go.new_zeros(plan.chunk, m * plan.th, m * plan.tw, c_out)  # dY, zero past the output's edge
    for a, b in plan.chunks():
        v = plan.to_winograd(algo.input, plan.fill(buf, x, a, b), algo.alpha, algo.alpha)
        gbuf[:b - a, :plan.ho, :plan.wo] = go[a:b].permute(0, 2, 3, 1)
        gy = plan.to_winograd(algo.output_adjoint, gbuf[:b - a], m, algo.alpha)
        t = (b - a) * plan.tiles
        gy, v = gy.view(pp, t, g, c_out // g), v.view(pp, t, g, c_g)
        if g == 1:
            du[:, 0].baddbmm_(gy[:, :, 0].transpose(1, 2), v[:, :, 0])
        elif c_g == 1:  # depthwise: per-point dot products, not one-column matrix products
            du[..., 0] += (gy * v).sum(1)
        else:
            du += torch.matmul(gy.permute(0, 2, 3, 1), v.transpose(1, 2))
    gg = _gg(algo, x.dtype, x.device)
    return (gg.t() @ du.view(pp, c_out * c_g)).t().reshape(weight_shape)


def _flipped_transposed(weight: torch.Tensor, groups: int) -> torch.Tensor:
    c_out, c_g = weight.shape[:2]
    w = weight.view(groups, c_out // groups, c_g, 3, 3).transpose(1, 2).flip(-2, -1)
    return w.reshape(groups * c_g, c_out // groups, 3, 3)


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _make(algo: Algorithm, name: str):
    def forward(x, weight, bias, p: ConvParams):
        return _winograd_conv(x, weight, bias, p.padding, p.groups, algo)

    def backward(grad_out, x, weight, p: ConvParams, need_x: bool, need_w: bool):
        """grad_input: the 'full' correlation of dY with the flipped, transposed kernel, i.e. this
        forward at padding 2 - p on each side (negative: a crop)."""
        gx = gw = None
        if need_x:
            full = tuple(2 - s for s in p.padding)
            gx = _winograd_conv(grad_out, _flipped_transposed(weight, p.groups), None, full, p.groups, algo)
        if need_w:
            gw = _grad_weight(grad_out, x, weight.shape, p.padding, p.groups, algo)
        return gx, gw

    return with_backward(forward, backward, name)


_CONV = {"winograd": _make(F4, "WinogradF4Conv"), "winograd_f2": _make(F2, "WinogradF2Conv")}


def _conv2d(name, input, weight, bias, stride, padding, dilation, groups):
    x, weight, bias, p, unbatched = prepare(input, weight, bias, stride, padding, dilation, groups)
    reason = _unsupported(x.device.type, x.dtype) or shape_unsupported(weight.shape, p)
    if reason:
        raise Unsupported(reason)
    out = _CONV[name](x, weight, bias, p)
    return out.squeeze(0) if unbatched else out


@register("winograd", unsupported=_unsupported)
def conv2d_winograd(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """F(4x4, 3x3) Winograd convolution; 3x3, stride 1, dilation 1 only (else `Unsupported`)."""
    return _conv2d("winograd", input, weight, bias, stride, padding, dilation, groups)


@register("winograd_f2", unsupported=_unsupported)
def conv2d_winograd_f2(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """F(2x2, 3x3) Winograd convolution: 2.25x fewer products than direct, ~7x less rounding
    error than F(4x4, 3x3)."""
    return _conv2d("winograd_f2", input, weight, bias, stride, padding, dilation, groups)
