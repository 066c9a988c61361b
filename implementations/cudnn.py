"""`cudnn`: the vendor path, `F.conv2d` itself (cuDNN on CUDA, oneDNN or native kernels on CPU).
The reference point for every speedup. It still goes through the shared argument checks, so every
built-in rejects bad input with the same message.

One exception, declared rather than run: float16/bfloat16 on the CPU while oneDNN is enabled. In
torch 2.13 on an AMX/AVX512-BF16 Xeon, oneDNN's half-precision convolutions return wrong values
(grouped, strided, one output column: relative error ~0.75) or kill the process with SIGSEGV
(1x1 kernel, groups 3, stride (1, 3), dilation (2, 3)) for some shapes, cf. pytorch/pytorch#163347.
A crash would cost the job a worker per case (`crashed` rows), so these report 'unsupported'; with
`torch.backends.mkldnn.enabled = False` PyTorch's native kernels run them, correctly."""
from __future__ import annotations

import torch

from .params import prepare
from .registry import Unsupported, register


def _unsupported(device_type: str, dtype: torch.dtype) -> str | None:
    if device_type == "cpu" and dtype in (torch.float16, torch.bfloat16) and torch.backends.mkldnn.enabled \
            and torch.backends.mkldnn.is_available():
        return (f"oneDNN's {dtype} CPU convolutions crash or return wrong values for some shapes in this "
                "PyTorch build (see implementations/cudnn.py); set torch.backends.mkldnn.enabled = False "
                "to use PyTorch's native kernels")
    return None


# torch's own operator (what F.conv2d is) and pad, bound at import: a plug-in imported later that
# replaces F.conv2d or torch.conv2d does not change the baseline every speedup is measured against.
_CONV2D = torch._C._VariableFunctions.conv2d
_PAD = torch._C._nn.pad


@register("cudnn", unsupported=_unsupported)
def conv2d_cudnn(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 stride=1, padding=0, dilation=1, groups: int = 1) -> torch.Tensor:
    x, weight, bias, p, unbatched = prepare(input, weight, bias, stride, padding, dilation, groups)
    reason = _unsupported(x.device.type, x.dtype)
    if reason:
        raise Unsupported(reason)
    top, bottom, left, right = p.padding
    if top == bottom and left == right:
        out = _CONV2D(x, weight, bias, p.stride, (top, left), p.dilation, p.groups)
    else:  # even kernel with 'same': pad the extra row/column by hand, as F.conv2d does internally
        out = _CONV2D(_PAD(x, p.pad_lrtb), weight, bias, p.stride, 0, p.dilation, p.groups)
    return out.squeeze(0) if unbatched else out
