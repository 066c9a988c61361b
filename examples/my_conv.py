"""A complete convbench plug-in: one file, one decorated function.

    PYTHONPATH=examples python -m harness -m plugins=[my_conv] impl=my_conv,cudnn suite=smoke

`plugins=[my_conv]` imports this module before the run, so `@implementations.register` makes
"my_conv" a name like the built-ins; nothing in the harness changes. (Without registering, a
function is also reachable as impl=my_conv:conv2d_windows.)

The method: every output pixel's receptive field is a strided *view* of the padded input
(`as_strided`, no copy), and one `einsum` contracts the windows with the kernel. Autograd derives
the backward. `implementations.prepare` does F.conv2d's argument checks and resolves padding
('same', asymmetric) into explicit per-side values, so this function only sees the general case.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import implementations


def _unsupported(device_type: str, dtype: torch.dtype) -> str | None:
    """Declare what you do not handle: the harness records 'unsupported' without calling you."""
    if device_type == "cpu" and dtype in (torch.float16, torch.bfloat16):
        return "einsum over 16-bit windows on CPU is slow and loses precision; not attempted"
    return None


@implementations.register("my_conv", unsupported=_unsupported)
def conv2d_windows(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """F.conv2d's signature and semantics, via strided windows + einsum."""
    x, weight, bias, p, unbatched = implementations.prepare(input, weight, bias, stride, padding, dilation, groups)
    x = F.pad(x, p.pad_lrtb).contiguous()
    n, c_in, h, w = x.shape
    c_out, c_g, kh, kw = weight.shape
    g = p.groups
    (sh, sw), (dh, dw) = p.stride, p.dilation
    ho, wo = p.output_size(input.shape[-2], input.shape[-1])
    s_n, s_c, s_h, s_w = x.stride()
    windows = x.as_strided((n, g, c_g, ho, wo, kh, kw),
                           (s_n, c_g * s_c, s_c, s_h * sh, s_w * sw, s_h * dh, s_w * dw))
    out = torch.einsum("ngcyxij,gocij->ngoyx", windows, weight.view(g, c_out // g, c_g, kh, kw))
    out = out.reshape(n, c_out, ho, wo)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out.squeeze(0) if unbatched else out
