"""The conformance suite's problems: one conv2d call each (shapes, options, memory layout), and the
seeded tensors for it. Values depend only on the seed, never on the layout, so a layout case checks the
same numbers as its contiguous twin. The lists come from PyTorch's conv2d OpInfo samples, argument forms,
'same'/'valid' padding, layouts, extremes, and the layer sizes the built-ins take special paths on."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Case:
    """One conv2d call: shapes, keyword arguments and how the input tensor is laid out in memory."""

    name: str
    input: tuple[int, ...]
    weight: tuple[int, int, int, int]
    bias: bool
    kwargs: dict = field(default_factory=dict)
    layout: str = "contiguous"  # contiguous | channels_last | transposed | sliced

    def __repr__(self) -> str:
        return self.name

    def code(self) -> str:
        """The constructor call that rebuilds this case (for reproduction snippets)."""
        extra = f", layout={self.layout!r}" if self.layout != "contiguous" else ""
        return (f"Case({self.name!r}, {self.input!r}, {self.weight!r}, {self.bias!r}, {self.kwargs!r}{extra})")


CASES = [
    # PyTorch's own conv2d OpInfo sample inputs (common_methods_invocations.sample_inputs_conv2d).
    Case("opinfo_stride2_pad2", (1, 3, 4, 4), (3, 3, 3, 3), True, dict(stride=(2, 2), padding=2)),
    Case("opinfo_groups2_dil4", (2, 4, 8, 8), (2, 2, 3, 3), True,
         dict(stride=(3, 2), padding=(2, 1), groups=2, dilation=(4, 4))),
    Case("opinfo_k2x3_dil2x3", (1, 4, 5, 5), (1, 4, 2, 3), True, dict(stride=2, padding=1, dilation=(2, 3))),
    Case("opinfo_nobias_k3x4", (1, 2, 4, 3), (4, 2, 3, 4), False, dict(stride=2, padding=1)),
    Case("opinfo_valid_stride2", (1, 4, 5, 5), (1, 4, 2, 3), True, dict(stride=2, padding="valid")),
    Case("opinfo_same_dil3", (1, 4, 5, 5), (1, 4, 2, 3), True, dict(stride=1, padding="same", dilation=3)),
    Case("opinfo_depthwise", (2, 4, 6, 6), (4, 1, 3, 3), True, dict(groups=4)),
    Case("opinfo_depthwise_mult2", (2, 4, 6, 6), (8, 1, 3, 3), True, dict(groups=4)),
    Case("opinfo_depthwise_stride3x2", (2, 4, 6, 6), (4, 1, 3, 3), True, dict(groups=4, stride=(3, 2))),
    Case("opinfo_depthwise_dil2", (2, 4, 5, 5), (4, 1, 2, 2), True, dict(groups=4, dilation=(2, 2))),
    Case("opinfo_groups2_k3x2", (2, 4, 6, 5), (6, 2, 3, 2), True, dict(groups=2)),
    Case("opinfo_defaults_nobias", (1, 4, 5, 5), (3, 4, 3, 3), False, {}),
    # Argument forms: the same convolution with ints and with tuples.
    Case("int_args", (2, 3, 7, 7), (4, 3, 3, 3), True, dict(stride=2, padding=1, dilation=1, groups=1)),
    Case("tuple_args", (2, 3, 7, 7), (4, 3, 3, 3), True,
         dict(stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=1)),
    Case("positional_defaults", (2, 3, 5, 6), (2, 3, 2, 2), True, {}),
    # 'same' with an odd total padding: PyTorch puts the extra row/column at the bottom/right.
    Case("same_even_kernel", (1, 2, 6, 7), (3, 2, 4, 2), True, dict(padding="same")),
    Case("same_even_kernel_dilated", (2, 2, 9, 8), (2, 2, 2, 4), True, dict(padding="same", dilation=(3, 2))),
    Case("same_even_grouped_nobias", (1, 4, 5, 6), (6, 2, 2, 2), False, dict(padding="same", groups=2)),
    Case("same_odd_kernel_dilated", (1, 3, 7, 7), (2, 3, 3, 3), True, dict(padding="same", dilation=2)),
    Case("valid_explicit", (2, 3, 6, 5), (2, 3, 3, 2), False, dict(padding="valid", dilation=(1, 2))),
    # Layouts and dimensionality.
    Case("unbatched", (3, 6, 6), (4, 3, 3, 3), True, dict(padding=1)),
    Case("unbatched_same_even_groups", (4, 5, 6), (4, 2, 2, 3), True, dict(padding="same", groups=2)),
    Case("transposed_view", (2, 3, 7, 6), (4, 3, 3, 2), True, dict(stride=(1, 2), padding=(1, 0)),
         layout="transposed"),
    Case("sliced_view", (2, 3, 6, 5), (2, 3, 3, 3), True, dict(padding=1, groups=1), layout="sliced"),
    Case("channels_last", (2, 4, 6, 7), (6, 2, 3, 3), True, dict(stride=(2, 1), padding=1, groups=2),
         layout="channels_last"),
    Case("channels_last_same_even", (1, 3, 5, 5), (2, 3, 2, 2), False, dict(padding="same"),
         layout="channels_last"),
    # 3x3 at stride 1 in every padding form (what `winograd` covers): 'same', 'valid', tuples,
    # padding beyond the kernel, outputs that are no multiple of the 4x4 (2x2) tiles, channels_last.
    Case("k3_same_ragged", (2, 3, 9, 7), (4, 3, 3, 3), True, dict(padding="same")),
    Case("k3_valid", (1, 4, 7, 10), (2, 4, 3, 3), False, dict(padding="valid")),
    Case("k3_tuple_pad_large", (2, 2, 5, 6), (3, 2, 3, 3), True, dict(padding=(3, 0))),
    Case("k3_channels_last_grouped", (2, 4, 6, 7), (6, 2, 3, 3), True, dict(padding=(1, 2), groups=2),
         layout="channels_last"),
    # Kernel/stride extremes.
    Case("kernel_1x1", (2, 5, 4, 4), (3, 5, 1, 1), True, {}),
    Case("kernel_1x1_stride2_pad1", (2, 4, 5, 5), (6, 4, 1, 1), False, dict(stride=2, padding=1)),
    Case("stride_gt_kernel", (1, 2, 9, 10), (3, 2, 2, 2), True, dict(stride=(3, 4))),
    Case("kernel_eq_padded_input", (2, 3, 4, 5), (2, 3, 6, 7), True, dict(padding=1)),
    Case("kernel_eq_input", (1, 2, 5, 4), (3, 2, 5, 4), False, {}),
    Case("dilated_kernel_eq_input", (1, 2, 5, 5), (2, 2, 3, 3), True, dict(dilation=2)),
    Case("padding_gt_kernel", (1, 2, 3, 3), (2, 2, 2, 2), True, dict(padding=(3, 2))),
    Case("empty_batch", (0, 2, 5, 5), (3, 2, 3, 3), True, dict(padding=1)),
    Case("groups3_mult_and_per_group", (1, 6, 5, 5), (9, 2, 3, 3), True, dict(groups=3, padding=(0, 1))),
]


def named(cases, *names: str) -> list[Case]:
    """The cases of `cases` called `names`, in that order."""
    by_name = {c.name: c for c in cases}
    return [by_name[n] for n in names]


# Every memory format of the same tensors must give the same values.
LAYOUT_CASES = named(CASES,
    "opinfo_stride2_pad2", "opinfo_groups2_dil4", "opinfo_same_dil3", "opinfo_depthwise_mult2", "opinfo_groups2_k3x2",
    "same_even_kernel_dilated", "kernel_1x1", "kernel_1x1_stride2_pad1", "stride_gt_kernel", "kernel_eq_padded_input")

# Backward with the output gradients real losses hand it: expanded, channels_last, transposed.
GRAD_OUT_CASES = named(CASES,
    "opinfo_groups2_dil4", "same_even_kernel_dilated", "channels_last", "kernel_1x1", "unbatched",
    "groups3_mult_and_per_group")

# Each image's result must depend on that image only (batch chunking and offsets).
BATCH_CASES = [
    Case("batch5", (5, 3, 6, 7), (4, 3, 3, 2), True, dict(stride=(2, 1), padding=(1, 2))),
    Case("batch5_cl_grouped", (5, 4, 6, 5), (4, 2, 2, 2), True, dict(groups=2, padding="same"), layout="channels_last"),
    Case("batch3_cl_1x1", (3, 4, 4, 4), (5, 4, 1, 1), False, {}, layout="channels_last"),
]

# Problems called twice or more: state must not leak between calls.
REPEAT_CASES = named(CASES, "opinfo_groups2_dil4", "kernel_1x1", "channels_last")

# Larger images: big enough that `fft` splits them into overlap-save tiles (several tiles per axis,
# strided, dilated, grouped, asymmetric 'same').
LARGE_IMAGE_CASES = [
    Case("tiled_rows", (1, 4, 96, 96), (4, 4, 3, 3), True, dict(padding=1)),
    Case("tiled_both_dilated", (1, 16, 64, 64), (16, 16, 3, 3), False, dict(padding=2, dilation=2)),
    Case("tiled_strided", (1, 16, 64, 64), (16, 16, 3, 3), True, dict(stride=2, padding=1)),
    Case("tiled_same_even", (1, 8, 64, 64), (8, 8, 2, 2), True, dict(padding="same")),
    Case("tiled_grouped", (1, 16, 64, 64), (16, 8, 3, 3), True, dict(padding=1, groups=2)),
    Case("tiled_mixed", (1, 16, 64, 33), (16, 16, 3, 2), True, dict(stride=(2, 1), padding=1, dilation=(1, 2))),
    Case("tiled_batch_5x5", (2, 16, 64, 48), (8, 16, 5, 5), True, dict(padding=(2, 1)), layout="channels_last"),
]

# Realistic layer sizes (large reductions, several unfold chunks, long FFTs): the full suite only.
MEDIUM_CASES = [
    Case("resnet_3x3", (2, 32, 28, 28), (32, 32, 3, 3), True, dict(padding=1)),
    Case("resnet_stride2_cl", (2, 32, 28, 28), (64, 32, 3, 3), False, dict(stride=2, padding=1),
         layout="channels_last"),
    Case("mobilenet_depthwise", (2, 64, 28, 28), (64, 1, 3, 3), True, dict(padding=1, groups=64)),
    Case("stem_7x7", (2, 3, 64, 64), (16, 3, 7, 7), False, dict(stride=2, padding=3)),
    Case("big_chunks", (8, 64, 32, 32), (16, 64, 3, 3), True, dict(padding=1)),
]

# Small float64 problems for finite differences (gradcheck).
GRADCHECK_CASES = [
    Case("strided", (1, 2, 5, 6), (2, 2, 2, 3), True, dict(stride=(2, 3), padding=1)),
    Case("dilated", (1, 2, 6, 6), (2, 2, 2, 2), False, dict(dilation=(2, 3), padding=(1, 0))),
    Case("grouped", (1, 4, 4, 4), (4, 2, 3, 3), True, dict(groups=2, padding=1)),
    Case("same_even", (1, 2, 5, 4), (2, 2, 2, 3), True, dict(padding="same", dilation=(2, 1))),
    Case("unbatched_depthwise", (3, 4, 5), (3, 1, 3, 2), True, dict(groups=3, stride=(1, 2))),
]

def make_input(case: Case, dtype: torch.dtype, device: str, gen: torch.Generator) -> torch.Tensor:
    """A leaf input laid out as the case says; the values depend only on the seed, not the layout."""
    shape = case.input
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    if case.layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif case.layout == "transposed":  # strides of a transpose: W is the slow dimension
        x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    elif case.layout == "sliced":  # every other channel, every other column of a larger buffer
        big = torch.zeros(*shape[:-3], 2 * shape[-3], shape[-2], 2 * shape[-1] + 1, dtype=dtype, device=device)
        x = big[..., ::2, :, 1::2].copy_(x)
    return x.detach().requires_grad_()  # detach keeps the strides: a non-contiguous leaf


def make_tensors(case: Case, dtype: torch.dtype, device: str = "cpu", seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = make_input(case, dtype, device, gen)
    fan_in = case.weight[1] * case.weight[2] * case.weight[3]
    w = (torch.randn(case.weight, generator=gen, dtype=torch.float64) / math.sqrt(fan_in)).to(device, dtype)
    if case.layout == "channels_last":
        w = w.contiguous(memory_format=torch.channels_last)
    w.requires_grad_()
    b = torch.randn(case.weight[0], generator=gen, dtype=torch.float64).to(device, dtype).requires_grad_() \
        if case.bias else None
    return x, w, b
