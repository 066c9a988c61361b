"""`loop`: the textbook sliding window. A Python loop over output positions; at each one the
window is multiplied with the kernel, vectorised over batch and channels. Slow on purpose: the
readable baseline every other method is checked against by eye.

Slow, but without needless work: every buffer is allocated once per call, not per position. The
output is kept position-major, (Ho, Wo, g, n, C_out/g), so each position's product is written
straight into its own contiguous block; one permute at the end gives NCHW. The backward is the
same loop run in reverse (a custom autograd Function): at each position the window's gradient is
added back into the input's and the window's outer product with the output gradient into the
weight's, so autograd does not keep thousands of per-position views and products alive.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .autograd import with_backward
from .params import ConvParams, prepare
from .registry import register


def _positions(p: ConvParams, ho: int, wo: int):
    """(i, j, rows, cols): each output position and the (dilated) slices of its input window."""
    (sh, sw), (dh, dw) = p.stride, p.dilation
    ekh, ekw = p.effective_kernel()
    for i in range(ho):
        rows = slice(i * sh, i * sh + ekh, dh)
        for j in range(wo):
            yield i, j, rows, slice(j * sw, j * sw + ekw, dw)


def _grouped(window: torch.Tensor, g: int) -> torch.Tensor:
    """A (n, C, kh, kw) window as (g, n, C/g, kh, kw): the per-group operand, a view."""
    n, c, kh, kw = window.shape
    return window.view(n, g, c // g, kh, kw).transpose(0, 1)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums across positions are kept in: float32 for the 16-bit types, else the dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _forward(x: torch.Tensor, weight: torch.Tensor, bias, p: ConvParams) -> torch.Tensor:
    xp = F.pad(x, p.pad_lrtb)
    n = x.shape[0]
    c_out, c_g, kh, kw = weight.shape
    g = p.groups
    ho, wo = p.output_size(x.shape[-2], x.shape[-1])
    wt = weight.reshape(g, c_out // g, c_g * kh * kw).transpose(1, 2)  # (g, K, C_out/g)
    window = x.new_empty(g, n, c_g, kh, kw)  # one position's window, per group
    out = x.new_empty(ho, wo, g, n, c_out // g)
    for i, j, rows, cols in _positions(p, ho, wo):
        window.copy_(_grouped(xp[:, :, rows, cols], g))
        torch.bmm(window.view(g, n, c_g * kh * kw), wt, out=out[i, j])
    # The one copy, to F.conv2d's layout for this input, with the bias added on the way.
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() \
        else torch.contiguous_format
    result = torch.empty(n, c_out, ho, wo, dtype=x.dtype, device=x.device, memory_format=fmt)
    grouped = out.permute(3, 2, 4, 0, 1)  # (n, g, C_out/g, Ho, Wo)
    if bias is None:
        result.view(grouped.shape).copy_(grouped)
    else:
        torch.add(grouped, bias.view(1, g, -1, 1, 1), out=result.view(grouped.shape))
    return result


def _backward(grad_out, x, weight, p: ConvParams, need_x: bool, need_w: bool):
    xp = F.pad(x, p.pad_lrtb)
    n = x.shape[0]
    c_out, c_g, kh, kw = weight.shape
    g = p.groups
    ho, wo = grad_out.shape[-2:]
    acc = _acc_dtype(x.dtype)  # every buffer below in it: the 16-bit operands are upcast once
    wg = weight.reshape(g, c_out // g, c_g * kh * kw).to(acc)
    go = grad_out.reshape(n, g, c_out // g, ho, wo).permute(3, 4, 1, 0, 2).to(acc, memory_format=torch.contiguous_format)  # (Ho, Wo, g, n, Co/g)
    window = x.new_empty(g, n, c_g, kh, kw, dtype=acc)
    gwin = x.new_empty(g, n, c_g, kh, kw, dtype=acc)
    gw = torch.zeros_like(wg, memory_format=torch.contiguous_format) if need_w else None
    gxp = torch.zeros_like(xp, dtype=acc) if need_x else None
    for i, j, rows, cols in _positions(p, ho, wo):
        if need_w:  # weight gradient: window^T x output gradient, summed over positions
            window.copy_(_grouped(xp[:, :, rows, cols], g))
            gw.baddbmm_(go[i, j].transpose(1, 2), window.view(g, n, c_g * kh * kw))
        if need_x:  # input gradient: output gradient x kernel, added back into the window
            torch.bmm(go[i, j], wg, out=gwin.view(g, n, c_g * kh * kw))
            _grouped(gxp[:, :, rows, cols], g).add_(gwin)
    gx = None
    if need_x:
        top, _, left, _ = p.padding
        gx = gxp[:, :, top:top + x.shape[-2], left:left + x.shape[-1]].to(x.dtype)
    return gx, (gw.view(weight.shape).to(weight.dtype) if need_w else None)


_conv = with_backward(_forward, _backward, "LoopConv")


@register("loop")
def conv2d_loop(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    x, weight, bias, p, unbatched = prepare(input, weight, bias, stride, padding, dilation, groups)
    out = _conv(x, weight, bias, p)
    return out.squeeze(0) if unbatched else out
