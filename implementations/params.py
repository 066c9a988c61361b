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


# PyTorch's own words. Every message is "conv2d: <what is wrong and how to fix it> [F.conv2d: <what
# PyTorch says about the same problem>]", so code (and PyTorch's OpInfo error tests) written against
# F.conv2d's messages match ours too; the checks run in F.conv2d's order, so the first problem
# reported is the one PyTorch reports (tests/test_opinfo.py checks both against the installed torch).
_BAD_TYPE = "conv2d() received an invalid combination of arguments"
# the dtype names F.conv2d prints: Input type (float) and bias type (double) ...
_TYPE_NAME = {torch.float32: "float", torch.float64: "double", torch.float16: "c10::Half",
              torch.bfloat16: "c10::BFloat16", torch.int64: "long int", torch.int32: "int", torch.int16: "short int",
              torch.int8: "signed char", torch.uint8: "unsigned char", torch.bool: "bool",
              torch.complex64: "c10::complex<float>", torch.complex128: "c10::complex<double>"}
# ... and: expected scalar type Float but found Double
_SCALAR_NAME = {torch.float32: "Float", torch.float64: "Double", torch.float16: "Half", torch.bfloat16: "BFloat16",
                torch.int64: "Long", torch.int32: "Int", torch.int16: "Short", torch.int8: "Char", torch.uint8: "Byte",
                torch.bool: "Bool", torch.complex64: "ComplexFloat", torch.complex128: "ComplexDouble"}


def _error(cls: type, clear: str, pytorch: str | None = None) -> Exception:
    """`cls` with our message, and PyTorch's own phrase for the problem unless ours already contains it."""
    text = f"conv2d: {clear}"
    if pytorch and pytorch not in text:
        text += f" [F.conv2d: {pytorch}]"
    return cls(text)


def _sizes(t: torch.Tensor) -> str:
    return str(list(t.shape))


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


def _ints(value: IntOrPair, name: str) -> tuple[int, ...]:
    """An int or a sequence of ints as a tuple (any length: the length is checked where F.conv2d checks it)."""
    bad = _error(ConvArgumentTypeError, f"{name} must be an int or a pair of ints, got {value!r}", _BAD_TYPE)
    if isinstance(value, bool):
        raise bad
    if isinstance(value, int):
        return (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise bad from None
    if not items or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise bad
    return items


def _expand(items: tuple[int, ...], given: IntOrPair, name: str, dims: int) -> tuple[int, int]:
    """One value per spatial dimension, broadcast as F.conv2d does; its wording when the count is wrong
    (`dims` is the weight's: a 3-D weight makes F.conv2d expect one value)."""
    if len(items) == 1:
        items = items * dims
    if len(items) != dims or dims != 2:
        raise _error(ConvArgumentTypeError, f"{name} must be an int or a pair of ints, got {given!r}",
                     f"expected {name} to be a single integer value or a list of {dims} values to match the "
                     f"convolution dimensions, but got {name}={list(items)}")
    return items  # type: ignore[return-value]


def _pair(value: IntOrPair, name: str) -> tuple[int, int]:
    return _expand(_ints(value, name), value, name, 2)


def resolve_padding(padding: Union[str, IntOrPair], kernel: tuple[int, int], dilation: tuple[int, int],
                    stride: tuple[int, int]) -> tuple[int, int, int, int]:
    """Per-side padding (top, bottom, left, right). 'same' splits d*(k-1) like PyTorch: the extra
    element of an odd total goes to the bottom/right."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise _error(ConvArgumentError, "padding='same' is not supported for strided convolutions "
                             f"(stride={stride}); use stride=1 or give the padding explicitly")
            sides = []
            for d, k in zip(dilation, kernel):
                total = d * (k - 1)
                sides += [total // 2, total - total // 2]
            return tuple(sides)  # type: ignore[return-value]
        raise _error(ConvArgumentError, f"invalid padding string {padding!r}; expected 'same' or 'valid'",
                     f"Invalid padding string: '{padding}'")
    ph, pw = _pair(padding, "padding")
    if ph < 0 or pw < 0:
        raise _error(ConvArgumentError, f"negative padding is not supported, got padding={padding!r}")
    return (ph, ph, pw, pw)


def prepare(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
            stride: IntOrPair = 1, padding: Union[str, IntOrPair] = 0, dilation: IntOrPair = 1,
            groups: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, ConvParams, bool]:
    """Check `F.conv2d`'s arguments, in F.conv2d's order, and resolve them.

    Returns (input as 4-D, weight, bias, params, unbatched). `unbatched` is True when the input
    was 3-D (C, H, W); the caller squeezes the batch dimension off its result.
    """
    # argument types: F.conv2d's argument parser refuses these before anything else
    if not isinstance(input, torch.Tensor) or not isinstance(weight, torch.Tensor) or not (
            bias is None or isinstance(bias, torch.Tensor)):
        raise _error(ConvArgumentTypeError, "input, weight and bias (when given) must be tensors", _BAD_TYPE)
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise _error(ConvArgumentTypeError, f"groups must be a positive integer, got groups={groups!r}", _BAD_TYPE)
    stride_ = _ints(stride, "stride")
    dilation_ = _ints(dilation, "dilation")
    padding_mode = padding if isinstance(padding, str) else None
    padding_ = None if padding_mode is not None else _ints(padding, "padding")

    if padding_mode is None:
        _check_bias_dtype(input, bias)  # the integer-padding overload checks this first
    if input.dim() not in (3, 4):
        raise _error(ConvArgumentError, "expected 3-D (unbatched) or 4-D (batched) input, "
                     f"got input of shape {tuple(input.shape)}",
                     f"Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: {_sizes(input)}")
    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    if padding_mode is not None and padding_mode not in ("same", "valid"):
        resolve_padding(padding_mode, (1, 1), (1, 1), (1, 1))  # raises, in PyTorch's words
    weight_4d = ("weight must be 4-D (out_channels, in_channels/groups, kH, kW), "
                 f"got weight of shape {tuple(weight.shape)}")
    if weight.dim() < 3:
        raise _error(ConvArgumentError, weight_4d, "weight should have at least three dimensions")
    if groups <= 0:
        raise _error(ConvArgumentError, f"groups must be a positive integer, got groups={groups!r}",
                     "non-positive groups is not supported")
    dims = weight.dim() - 2
    if padding_mode == "same":
        if weight.dim() != x.dim():
            raise _error(ConvArgumentError, weight_4d,
                         f"Expected {weight.dim()}-dimensional input for {weight.dim()}-dimensional weight"
                         f"{_sizes(weight)}, but got {x.dim()}-dimensional input of size {_sizes(x)} instead")
        same_stride = _expand(stride_, stride, "stride", dims)
        if same_stride != (1, 1):
            resolve_padding("same", (1, 1), (1, 1), same_stride)  # raises, in PyTorch's words
    if weight.dim() != 4:  # F.conv2d reports it through the stride (an int arrives as a pair)
        as_given = list(stride_ * 2 if len(stride_) == 1 else stride_)
        raise _error(ConvArgumentError, weight_4d,
                     f"expected stride to be a single integer value or a list of {dims} values to match the "
                     f"convolution dimensions, but got stride={as_given}")
    stride_2 = _expand(stride_, stride, "stride", dims)
    padding_2 = _expand(padding_, padding, "padding", dims) if padding_ is not None else None
    dilation_2 = _expand(dilation_, dilation, "dilation", dims)

    # F.conv2d's shape checks (check_shape_forward), in its order
    if padding_2 is not None and min(padding_2) < 0:
        raise _error(ConvArgumentError, f"negative padding is not supported, got padding={padding!r}")
    if min(stride_2) <= 0:
        raise _error(ConvArgumentError, f"non-positive stride is not supported, got stride={stride!r}")
    if min(dilation_2) <= 0:
        raise _error(ConvArgumentError, f"dilation must be positive, got dilation={dilation!r}",
                     "dilation should be greater than zero")
    c_in = x.shape[1]
    c_out, c_per_group, kh, kw = weight.shape
    if c_out < groups:
        raise _error(ConvArgumentError, f"out_channels ({c_out}) must be divisible by groups ({groups})",
                     f"Given groups={groups}, expected weight to be at least {groups} at dimension 0, "
                     f"but got weight of size {_sizes(weight)} instead")
    if c_out % groups != 0:
        raise _error(ConvArgumentError, f"out_channels ({c_out}) must be divisible by groups ({groups})",
                     f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
                     f"but got weight of size [{_sizes(weight)}] instead")
    if c_per_group * groups != c_in:
        clear = (f"in_channels ({c_in}) must be divisible by groups ({groups})" if c_in % groups else
                 f"weight of shape {tuple(weight.shape)} does not fit input with {c_in} channels "
                 f"and groups={groups}: expected weight.shape[1] == {c_in // groups}")
        raise _error(ConvArgumentError, clear,
                     f"Given groups={groups}, weight of size {_sizes(weight)}, expected input{_sizes(x)} to have "
                     f"{c_per_group * groups} channels, but got {c_in} channels instead")
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise _error(ConvArgumentError, f"bias must have shape ({c_out},) to match the weight's out_channels, "
                     f"got {tuple(bias.shape)}",
                     f"Given weight of size {_sizes(weight)}, expected bias to be 1-dimensional with {c_out} "
                     f"elements, but got bias of size {_sizes(bias)} instead")
    if min(kh, kw) <= 0:
        raise _error(ConvArgumentError, f"kernel must be non-empty, got weight of shape {tuple(weight.shape)}",
                     f"kernel size should be greater than zero, but got kernel_height: {kh} kernel_width: {kw}")

    pad = resolve_padding(padding_mode or padding_2, (kh, kw), dilation_2, stride_2)
    params = ConvParams(stride=stride_2, dilation=dilation_2, padding=pad, groups=groups, kernel=(kh, kw))
    h, w = x.shape[-2:]
    ph, pw = h + pad[0] + pad[1], w + pad[2] + pad[3]
    ekh, ekw = params.effective_kernel()
    if ekh > ph or ekw > pw:
        raise _error(ConvArgumentError, f"padded input size per channel ({ph} x {pw}) is smaller than the dilated "
                     f"kernel ({ekh} x {ekw}); the kernel can't be larger than the input: pad more, "
                     "use a smaller kernel or dilation, or a larger input",
                     f"Calculated padded input size per channel: ({ph} x {pw}). Kernel size: ({ekh} x {ekw}). "
                     "Kernel size can't be greater than actual input size")

    # types and devices: F.conv2d finds these last (the string-padding overloads check the bias here)
    if padding_mode is not None:
        _check_bias_dtype(input, bias)
    if input.dtype != weight.dtype:
        got = f"input {input.dtype}, weight {weight.dtype}" + (f", bias {bias.dtype}" if bias is not None else "")
        raise _error(ConvArgumentTypeError, f"dtype mismatch ({got}); convert them to one dtype, e.g. "
                     "weight.to(input.dtype)",
                     f"expected scalar type {_SCALAR_NAME.get(input.dtype, input.dtype)} but found "
                     f"{_SCALAR_NAME.get(weight.dtype, weight.dtype)}")
    if not (input.is_floating_point() or input.is_complex()):
        raise _error(ConvArgumentTypeError, f"expected a floating-point input, got {input.dtype}")
    if input.device != weight.device or (bias is not None and bias.device != input.device):
        got = f"input on {input.device}, weight on {weight.device}" + (
            f", bias on {bias.device}" if bias is not None else "")
        raise _error(ConvArgumentError, f"device mismatch ({got}); move them to one device, e.g. "
                     "weight.to(input.device)", "Expected all tensors to be on the same device")
    return x, weight, bias, params, unbatched


def _check_bias_dtype(input: torch.Tensor, bias: torch.Tensor | None) -> None:
    if bias is not None and bias.dtype != input.dtype:
        got = f"input {input.dtype}, bias {bias.dtype}"
        raise _error(ConvArgumentTypeError, f"dtype mismatch ({got}); convert them to one dtype, e.g. "
                     "bias.to(input.dtype)",
                     f"Input type ({_TYPE_NAME.get(input.dtype, input.dtype)}) and bias type "
                     f"({_TYPE_NAME.get(bias.dtype, bias.dtype)}) should be the same")
