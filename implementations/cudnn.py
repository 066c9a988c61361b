"""`cudnn`: the vendor path, `F.conv2d` itself (cuDNN on CUDA, oneDNN or native kernels on CPU).
The reference point for every speedup. It still goes through the shared argument checks, so every
built-in rejects bad input with the same message."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .params import prepare
from .registry import register


@register("cudnn")
def conv2d_cudnn(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 stride=1, padding=0, dilation=1, groups: int = 1) -> torch.Tensor:
    x, weight, bias, p, unbatched = prepare(input, weight, bias, stride, padding, dilation, groups)
    top, bottom, left, right = p.padding
    if top == bottom and left == right:
        out = F.conv2d(x, weight, bias, p.stride, (top, left), p.dilation, p.groups)
    else:  # even kernel with 'same': pad the extra row/column by hand, as F.conv2d does internally
        out = F.conv2d(F.pad(x, p.pad_lrtb), weight, bias, p.stride, 0, p.dilation, p.groups)
    return out.squeeze(0) if unbatched else out
