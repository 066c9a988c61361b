"""Argument checking shared by every built-in, so all of them accept exactly what `F.conv2d` accepts
and reject the rest with the same messages.

`prepare(...)` turns `F.conv2d`'s loose arguments (ints or pairs, `'same'`/`'valid'`, 3-D or 4-D
input) into one explicit `ConvParams`: per-side padding, so an implementation only ever sees a
4-D input and an asymmetric zero pad it can apply with `F.pad`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch

IntOrPair = Union[int, Sequence[int]]


class ConvArgumentError(ValueError, RuntimeError):
    """A conv2d argument F.conv2d would reject. A ValueError for Python callers and a RuntimeError
    like F.conv2d's own, so code written against either catches it."""


class ConvArgumentTypeError(TypeError, RuntimeError):
    """A conv2d argument of the wrong type (or dtype); a RuntimeError too, like F.conv2d's."""


@dataclass(frozen=True)
class ConvParams:
    """A fully resolved 2-D convolution: everything an implementation needs besides the tensors."""

    stride: tuple[int, int]
    dilation: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, bottom, left, right (asymmetric for even 'same')
    groups: int
    kernel: tuple[int, int]

    @property
    def pad_lrtb(self) -> tuple[int, int, int, int]:
        """The padding in `F.pad`'s order for the last two dims: (left, right, top, bottom)."""
        top, bottom, left, right = self.padding
        return (left, right, top, bottom)

    @property
    def padded(self) -> bool:
        return any(self.padding)

    def effective_kernel(self) -> tuple[int, int]:
        """Extent of the dilated kernel: d * (k - 1) + 1 per dimension."""
        return tuple(d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel))  # type: ignore[return-value]

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        top, bottom, left, right = self.padding
        ekh, ekw = self.effective_kernel()
        return ((h + top + bottom - ekh) // self.stride[0] + 1,
                (w + left + right - ekw) // self.stride[1] + 1)


def _pair(value: IntOrPair, name: str) -> tuple[int, int]:
    if isinstance(value, bool):
        raise ConvArgumentTypeError(f"conv2d: {name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return (value, value)
    try:
        items = tuple(value)
    except TypeError:
        raise ConvArgumentTypeError(f"conv2d: {name} must be an int or a pair of ints, got {value!r}") from None
    if len(items) == 1:
        items = items * 2
    if len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ConvArgumentTypeError(f"conv2d: {name} must be an int or a pair of ints, got {value!r}")
    return items  # type: ignore[return-value]


def resolve_padding(padding: Union[str, IntOrPair], kernel: tuple[int, int], dilation: tuple[int, int],
                    stride: tuple[int, int]) -> tuple[int, int, int, int]:
    """Per-side padding (top, bottom, left, right). 'same' splits d*(k-1) like PyTorch: the extra
    element of an odd total goes to the bottom/right."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ConvArgumentError("conv2d: padding='same' is not supported for strided convolutions "
                                 f"(stride={stride}); use stride=1 or give the padding explicitly")
            sides = []
            for d, k in zip(dilation, kernel):
                total = d * (k - 1)
                sides += [total // 2, total - total // 2]
            return tuple(sides)  # type: ignore[return-value]
        raise ConvArgumentError(f"conv2d: invalid padding string {padding!r}; expected 'same' or 'valid'")
    ph, pw = _pair(padding, "padding")
    if ph < 0 or pw < 0:
        raise ConvArgumentError(f"conv2d: negative padding is not supported, got padding={padding!r}")
    return (ph, ph, pw, pw)


def prepare(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
            stride: IntOrPair = 1, padding: Union[str, IntOrPair] = 0, dilation: IntOrPair = 1,
            groups: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, ConvParams, bool]:
    """Check `F.conv2d`'s arguments and resolve them.

    Returns (input as 4-D, weight, bias, params, unbatched). `unbatched` is True when the input
    was 3-D (C, H, W); the caller squeezes the batch dimension off its result.
    """
    if not isinstance(input, torch.Tensor) or not isinstance(weight, torch.Tensor) or not (
            bias is None or isinstance(bias, torch.Tensor)):
        raise ConvArgumentTypeError("conv2d: input, weight and bias (when given) must be tensors")
    if input.dim() not in (3, 4):
        raise ConvArgumentError("conv2d: expected 3-D (unbatched) or 4-D (batched) input, "
                         f"got input of shape {tuple(input.shape)}")
    if weight.dim() != 4:
        raise ConvArgumentError("conv2d: weight must be 4-D (out_channels, in_channels/groups, kH, kW), "
                         f"got weight of shape {tuple(weight.shape)}")
    if input.dtype != weight.dtype or (bias is not None and bias.dtype != input.dtype):
        got = f"input {input.dtype}, weight {weight.dtype}" + (f", bias {bias.dtype}" if bias is not None else "")
        raise ConvArgumentTypeError(f"conv2d: dtype mismatch ({got}); convert them to one dtype, e.g. weight.to(input.dtype)")
    if not (input.is_floating_point() or input.is_complex()):
        raise ConvArgumentTypeError(f"conv2d: expected a floating-point input, got {input.dtype}")
    if input.device != weight.device or (bias is not None and bias.device != input.device):
        got = f"input on {input.device}, weight on {weight.device}" + (
            f", bias on {bias.device}" if bias is not None else "")
        raise ConvArgumentError(f"conv2d: device mismatch ({got}); move them to one device, e.g. weight.to(input.device)")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups <= 0:
        raise ConvArgumentError(f"conv2d: groups must be a positive integer, got groups={groups!r}")

    stride_ = _pair(stride, "stride")
    dilation_ = _pair(dilation, "dilation")
    if min(stride_) <= 0:
        raise ConvArgumentError(f"conv2d: non-positive stride is not supported, got stride={stride!r}")
    if min(dilation_) <= 0:
        raise ConvArgumentError(f"conv2d: dilation must be positive, got dilation={dilation!r}")

    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    c_in = x.shape[1]
    c_out, c_per_group, kh, kw = weight.shape
    if c_in % groups != 0:
        raise ConvArgumentError(f"conv2d: in_channels ({c_in}) must be divisible by groups ({groups})")
    if c_out % groups != 0:
        raise ConvArgumentError(f"conv2d: out_channels ({c_out}) must be divisible by groups ({groups})")
    if c_per_group * groups != c_in:
        raise ConvArgumentError(f"conv2d: weight of shape {tuple(weight.shape)} does not fit input with {c_in} channels "
                         f"and groups={groups}: expected weight.shape[1] == {c_in // groups}")
    if min(kh, kw) <= 0:
        raise ConvArgumentError(f"conv2d: kernel must be non-empty, got weight of shape {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ConvArgumentError(f"conv2d: bias must have shape ({c_out},) to match the weight's out_channels, "
                         f"got {tuple(bias.shape)}")

    pad = resolve_padding(padding, (kh, kw), dilation_, stride_)
    params = ConvParams(stride=stride_, dilation=dilation_, padding=pad, groups=groups, kernel=(kh, kw))
    h, w = x.shape[-2:]
    ph, pw = h + pad[0] + pad[1], w + pad[2] + pad[3]
    ekh, ekw = params.effective_kernel()
    if ekh > ph or ekw > pw:
        raise ConvArgumentError(f"conv2d: padded input size per channel ({ph} x {pw}) is smaller than the dilated "
                         f"kernel ({ekh} x {ekw}); the kernel can't be larger than the input: pad more, "
                         "use a smaller kernel or dilation, or a larger input")
    return x, weight, bias, params, unbatched
