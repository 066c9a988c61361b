"""`fft`: the convolution theorem. Cross-correlation becomes a product of spectra; the channel sum
is a batched product over frequencies; stride subsamples the full result, dilation spreads the
kernel."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .params import prepare
from .registry import Unsupported, register


def _unsupported(device_type: str, dtype: torch.dtype):
    if dtype not in (torch.float32, torch.float64):
        return f"torch.fft has no {dtype} transforms of arbitrary size"
    return None


@register("fft", unsupported=_unsupported)
def conv2d_fft(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    x, weight, bias, p, unbatched = prepare(input, weight, bias, stride, padding, dilation, groups)
    reason = _unsupported(x.device.type, x.dtype)
    if reason:
        raise Unsupported(reason)
    x = F.pad(x, p.pad_lrtb)
    n, c_in, h, w = x.shape
    c_out, c_g, kh, kw = weight.shape
    g = p.groups
    (dh, dw) = p.dilation
    ekh, ekw = p.effective_kernel()
    if (dh, dw) != (1, 1):
        wd = weight.new_zeros(c_out, c_g, ekh, ekw)
        wd[:, :, ::dh, ::dw] = weight
        weight = wd
    xf = torch.fft.rfft2(x, s=(h, w))
    wf = torch.fft.rfft2(weight.flip(-2, -1), s=(h, w))
    xf = xf.view(n, g, c_g, h, -1)
    wf = wf.view(g, c_out // g, c_g, h, -1)
    yf = torch.einsum("ngchw,gochw->ngohw", xf, wf).reshape(n, c_out, h, -1)
    y = torch.fft.irfft2(yf, s=(h, w))
    y = y[:, :, ekh - 1::p.stride[0], ekw - 1::p.stride[1]]
    ho, wo = p.output_size(input.shape[-2], input.shape[-1])
    y = y[:, :, :ho, :wo].contiguous()
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y.squeeze(0) if unbatched else y
