"""`unfold`: im2col (every receptive field laid out as a column) plus one matrix multiply.

What makes it fast without leaving the algorithm (`make bench-perf` measures it against F.conv2d):
- The columns are one gather from an `as_strided` view of the padded input (no `F.unfold`) into a
  buffer laid out for a single large product per group over every pixel of the batch:
  NCHW input -> (K, n*L) and W (C_out, K) @ cols; channels_last input -> (n*L, K) and
  cols @ W^T, whose result already *is* the channels_last output `F.conv2d` returns for it.
  (K = C_in/groups * kh * kw, L = output pixels per image.)
- A 1x1 stride-1 unpadded convolution needs no gather at all: the input is the column matrix.
- The batch is processed in chunks whose column buffer stays below `CHUNK_BYTES`: a fresh
  multi-ten-MB buffer per call costs more in page faults than the gather itself (measured here:
  19 ms against 3 ms for a 58 MB im2col), while a smaller one is recycled by the allocator.
- The hand-written backward saves the input, not the columns (kh*kw times larger), recomputes
  each chunk's columns, and gets grad_weight as one product per chunk and grad_bias as a sum.
  grad_input, at stride 1, is the im2col convolution of grad_out with the flipped kernel (a
  product with C_out*kh*kw terms per element); at other strides, the transposed product
  scattered back by col2im (the gather's adjoint), whose product has only C_out terms.
- float16/bfloat16: each matmul accumulates in float32 internally and rounds once, but sums
  *across* matmuls (grad_weight over the batch chunks, col2im's overlapping windows) would round
  at every addition in a 16-bit tensor. Those accumulators are float32, cast once at the end.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .autograd import with_backward
from .params import ConvParams, prepare
from .registry import register

# Column-buffer budget per chunk of images. CPU: below glibc's largest dynamic mmap threshold
# (32 MiB), so the buffer comes from the heap instead of being page-faulted in afresh on every call.
# GPUs have a caching allocator, so there the budget only bounds the peak memory.
CHUNK_BYTES = 16 * 2**20
CHUNK_BYTES_GPU = 256 * 2**20


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class _Plan:
    """Shapes, layout and strided views of one convolution, shared by forward and backward.

    Two layouts: `nhwc` (channels_last input, groups == 1) puts pixels in rows, cols (n*L, K) with K
    ordered (kh, kw, C); otherwise pixels are columns, cols (g, K/g, n*L) with K ordered (C, kh, kw).
    """

    def __init__(self, x: torch.Tensor, weight: torch.Tensor, p: ConvParams):
        self.p = p
        self.g = p.groups
        self.nhwc = _is_channels_last(x) and self.g == 1
        self.n, self.c_in, self.h, self.w = x.shape
        self.c_out, self.c_g, self.kh, self.kw = weight.shape
        self.ho, self.wo = p.output_size(self.h, self.w)
        self.L = self.ho * self.wo
        self.K = self.c_g * self.kh * self.kw
        # 1x1, stride 1, no padding: the input already is the column matrix (a view, no gather).
        self.direct = (self.kh, self.kw) == (1, 1) and p.stride == (1, 1) and not p.padded and \
            (self.nhwc or self.g == 1)
        per_image = max(1, self.c_in * self.kh * self.kw * self.L * x.element_size())
        budget = CHUNK_BYTES if x.device.type == "cpu" else CHUNK_BYTES_GPU
        self.chunk = self.n if self.direct else max(1, min(self.n, budget // per_image))
        self.fmt = torch.channels_last if self.nhwc else torch.contiguous_format

    def chunks(self):
        for a in range(0, self.n, self.chunk):
            yield a, min(a + self.chunk, self.n)

    def padded(self, x: torch.Tensor) -> torch.Tensor:
        """The zero-padded input in the working layout (no copy when it already is)."""
        x = x.contiguous(memory_format=self.fmt)
        return F.pad(x, self.p.pad_lrtb) if self.p.padded else x

    def windows(self, xp: torch.Tensor, a: int, b: int) -> torch.Tensor:
        """Images a:b's receptive fields as a strided view of the padded input, in column order:
        NHWC (n, Ho, Wo, kh, kw, C), else (C, kh, kw, n, Ho, Wo)."""
        sn, sc, sh, sw = xp.stride()
        (st_h, st_w), (dh, dw) = self.p.stride, self.p.dilation
        offset = xp.storage_offset() + a * sn
        if self.nhwc:
            return xp.as_strided((b - a, self.ho, self.wo, self.kh, self.kw, self.c_in),
                                 (sn, sh * st_h, sw * st_w, sh * dh, sw * dw, sc), offset)
        return xp.as_strided((self.c_in, self.kh, self.kw, b - a, self.ho, self.wo),
                             (sc, sh * dh, sw * dw, sn, sh * st_h, sw * st_w), offset)

    def cols(self, xp: torch.Tensor, buf: torch.Tensor | None, a: int, b: int) -> torch.Tensor:
        """im2col of images a:b: NHWC (n*L, K), else (g, K/g, n*L) (or (n, K, L) when direct)."""
        if self.direct:
            if self.nhwc:
                return self.pixel_rows(xp, a, b)
            return xp[a:b].view(b - a, self.K, self.L)
        win = self.windows(xp, a, b)
        size = (b - a) * self.L * self.K * (1 if self.nhwc else self.g)
        cols = buf[:size].view(((b - a) * self.L, self.K) if self.nhwc else (self.g, self.K, (b - a) * self.L))
        cols.view(win.shape).copy_(win)  # the one gather
        return cols

    def col2im(self, gcols: torch.Tensor, gxp: torch.Tensor, a: int, b: int) -> None:
        """Add column gradients back into the padded input's gradient (the gather's adjoint). For a
        fixed kernel offset the windows do not overlap, so one strided add per offset is exact."""
        win = self.windows(gxp, a, b)
        gc = gcols.view(win.shape)
        ki, kj = (3, 4) if self.nhwc else (1, 2)
        for i in range(self.kh):
            for j in range(self.kw):
                win.select(ki, i).select(kj - 1, j).add_(gc.select(ki, i).select(kj - 1, j))

    def cols_buffer(self, like: torch.Tensor) -> torch.Tensor | None:
        """Flat storage for one chunk's columns, reused by every chunk."""
        return None if self.direct else like.new_empty(self.chunk * self.L * self.c_in * self.kh * self.kw)

    def weight_matrix(self, weight: torch.Tensor) -> torch.Tensor:
        """NHWC (K, C_out), K ordered (kh, kw, C); else (g, C_out/g, K/g), K ordered (C, kh, kw)."""
        if self.nhwc:
            return weight.permute(2, 3, 1, 0).reshape(self.K, self.c_out)
        return weight.reshape(self.g, self.c_out // self.g, self.K)

    def weight_grad(self, gw: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.nhwc:
            return gw.view(self.kh, self.kw, self.c_g, self.c_out).permute(3, 2, 0, 1)
        return gw.view(weight.shape)

    def out_empty(self, x: torch.Tensor) -> torch.Tensor:
        return torch.empty(self.n, self.c_out, self.ho, self.wo, dtype=x.dtype, device=x.device, memory_format=self.fmt)

    def pixel_rows(self, t: torch.Tensor, a: int, b: int) -> torch.Tensor:
        """Images a:b of a channels_last (n, C, H, W) tensor as the (n*H*W, C) matrix it is."""
        return t[a:b].permute(0, 2, 3, 1).view(-1, t.shape[1])  # view: an error, never a silent copy


def _forward(x, weight, bias, p: ConvParams) -> torch.Tensor:
    plan = _Plan(x, weight, p)
    xp = plan.padded(x)
    wm = plan.weight_matrix(weight)
    buf = plan.cols_buffer(x)
    out = plan.out_empty(x)
    for a, b in plan.chunks():
        cols = plan.cols(xp, buf, a, b)
        if plan.nhwc:  # (n*L, K) @ (K, C_out) lands as the channels_last output itself
            rows = plan.pixel_rows(out, a, b)
            if bias is None:
                torch.mm(cols, wm, out=rows)
            else:
                torch.addmm(bias, cols, wm, out=rows)
        elif plan.direct:  # (C_out, C_in) @ (n, C_in, L): per image, straight into the output
            torch.matmul(wm[0], cols, out=out[a:b].view(b - a, plan.c_out, plan.L))
            if bias is not None:
                out[a:b] += bias.view(1, -1, 1, 1)
        else:  # (g, C_out/g, K/g) @ (g, K/g, n*L), then (C_out, n, L) -> (n, C_out, L) with the bias
            y = torch.bmm(wm, cols).view(plan.c_out, b - a, plan.L).transpose(0, 1)
            dst = out[a:b].view(b - a, plan.c_out, plan.L)
            if bias is None:
                dst.copy_(y)
            else:
                torch.add(y, bias.view(1, -1, 1), out=dst)
    return out


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums across matmuls are kept in: float32 for the 16-bit types, else the dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _grad_input_as_conv(go: torch.Tensor, weight: torch.Tensor, p: ConvParams) -> torch.Tensor:
    """Stride 1: grad_input is itself an im2col convolution of the output gradient with the
    flipped, in/out-swapped kernel (a 'full' correlation, cropped by the forward's padding;
    negative padding crops). Its product has C_out*kh*kw terms per element, where col2im's
    has only C_out, so it runs near the forward's speed."""
    c_out, c_g, kh, kw = weight.shape
    g = p.groups
    wt = weight.view(g, c_out // g, c_g, kh, kw).transpose(1, 2).flip(-2, -1).reshape(g * c_g, c_out // g, kh, kw)
    ekh, ekw = p.effective_kernel()
    top, bottom, left, right = p.padding
    full = ConvParams(stride=(1, 1), dilation=p.dilation, groups=g, kernel=(kh, kw),
                      padding=(ekh - 1 - top, ekh - 1 - bottom, ekw - 1 - left, ekw - 1 - right))
    return _forward(go, wt, None, full)


def _backward(grad_out, x, weight, p: ConvParams, need_x: bool, need_w: bool):
    """(grad_input, grad_weight) of `_forward`, chunk by chunk, recomputing the columns."""
    plan = _Plan(x, weight, p)
    x_as_conv = need_x and p.stride == (1, 1) and not plan.direct
    need_x = need_x and not x_as_conv
    go = grad_out.contiguous(memory_format=plan.fmt)
    # First, so that its column buffer is freed before the weight gradient's is allocated.
    gx = _grad_input_as_conv(go, weight, p) if x_as_conv else None
    if not (need_x or need_w):
        return gx, None
    xp = plan.padded(x)
    wm = plan.weight_matrix(weight)
    buf = plan.cols_buffer(x) if need_w else None
    acc = _acc_dtype(x.dtype)
    gw = torch.zeros_like(wm, memory_format=torch.contiguous_format, dtype=acc) if need_w else None
    # col2im adds overlapping windows into gxp; the direct paths write each element once.
    gxp = torch.zeros_like(xp, memory_format=plan.fmt, dtype=x.dtype if plan.direct else acc) if need_x else None
    for a, b in plan.chunks():
        if plan.nhwc:
            go_c = plan.pixel_rows(go, a, b)  # (n*L, C_out), a view
        elif plan.direct:
            go_c = go[a:b].view(b - a, plan.c_out, plan.L)
        else:  # (g, C_out/g, n*L): the chunk's gradient with pixels as columns, like the cols
            go_c = go[a:b].view(b - a, plan.c_out, plan.L).transpose(0, 1).reshape(plan.g, -1, (b - a) * plan.L)
        if need_w:
            cols = plan.cols(xp, buf, a, b)
            if gw.dtype == cols.dtype:  # the matmul adds into gw in place
                if plan.nhwc:
                    gw.addmm_(cols.t(), go_c)
                elif plan.direct:
                    gw[0].addbmm_(go_c, cols.transpose(1, 2))
                else:
                    gw.baddbmm_(go_c, cols.transpose(1, 2))
            elif plan.nhwc:  # 16-bit: each chunk's (or image's) product rounded once, summed in float32
                gw += torch.mm(cols.t(), go_c)
            elif plan.direct:
                gw[0] += torch.bmm(go_c, cols.transpose(1, 2)).sum(0, dtype=acc)
            else:
                gw += torch.bmm(go_c, cols.transpose(1, 2))
        if need_x:
            if plan.direct and plan.nhwc:
                torch.mm(go_c, wm.t(), out=plan.pixel_rows(gxp, a, b))
            elif plan.direct:
                torch.matmul(wm[0].t(), go_c, out=gxp[a:b].view(b - a, plan.c_in, plan.L))
            else:
                gcols = go_c @ wm.t() if plan.nhwc else torch.bmm(wm.transpose(1, 2), go_c)
                plan.col2im(gcols, gxp, a, b)
    if need_x:
        top, _, left, _ = p.padding
        gx = gxp[:, :, top:top + plan.h, left:left + plan.w].to(x.dtype)
    return gx, (plan.weight_grad(gw, weight).to(weight.dtype) if need_w else None)


_conv = with_backward(_forward, _backward, "Im2colConv")


@register("unfold")
def conv2d_unfold(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    x, weight, bias, p, unbatched = prepare(input, weight, bias, stride, padding, dilation, groups)
    out = _conv(x, weight, bias, p)
    if _is_channels_last(x) and not out.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)  # F.conv2d's layout (grouped case)
    return out.squeeze(0) if unbatched else out
