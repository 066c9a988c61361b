"""`Conv2d`: a drop-in `nn.Conv2d` that computes with any registered implementation.

It subclasses `nn.Conv2d`, so parameter shapes, initialisation, `padding_mode`, `extra_repr` and
state dicts are PyTorch's own; only the convolution call is swapped.
"""
from __future__ import annotations

import torch
from torch import nn

from .registry import get


class Conv2d(nn.Conv2d):
    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, impl: str = "unfold", padding_mode: str = "zeros",
                 device=None, dtype=None) -> None:
        get(impl)  # fail at construction, not at the first forward, on an unknown name
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias, padding_mode=padding_mode,
                         device=device, dtype=dtype)
        self.impl = impl

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, impl: str = "unfold") -> "Conv2d":
        """A copy of an existing `nn.Conv2d` (same hyper-parameters and weights) using `impl`."""
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                  conv.dilation, conv.groups, conv.bias is not None, impl=impl, padding_mode=conv.padding_mode,
                  device=conv.weight.device, dtype=conv.weight.dtype)
        new.load_state_dict(conv.state_dict())
        return new

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        fn = get(self.impl)
        if self.padding_mode != "zeros":
            padded = nn.functional.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return fn(padded, weight, bias, self.stride, 0, self.dilation, self.groups)
        return fn(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", impl={self.impl!r}"
