"""Tiny models for the capture -> suite -> sweep -> totals and swap-check tests (milliseconds on a CPU)."""
import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """A residual 3x3 block; two of them make one shape with count 2."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1, bias=False)

    def forward(self, x):
        return x + torch.relu(self.conv(x))


class Project(nn.Module):
    """A convolution called functionally (no nn.Conv2d): capture sees it, the swap check leaves it be."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, 1, 1) / c_in ** 0.5)

    def forward(self, x):
        return F.conv2d(x, self.weight, stride=2)


class TinyNet(nn.Module):
    """Stride, groups, dilation, 'same' with an even kernel, no bias, a repeated shape, a functional conv."""

    def __init__(self, width: int = 8, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.depthwise = nn.Conv2d(width, width, 3, padding=2, dilation=2, groups=width)
        self.same = nn.Conv2d(width, width, (2, 3), padding="same", bias=False)
        self.blocks = nn.Sequential(Block(width), Block(width))
        self.grouped = nn.Conv2d(width, 2 * width, 1, groups=2)
        self.project = Project(2 * width, 2 * width)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = self.same(self.depthwise(x))
        x = self.grouped(self.blocks(x))
        x = self.project(x)
        return self.fc(x.mean((2, 3)))


def tiny_net(width: int = 8, num_classes: int = 5) -> nn.Module:
    return TinyNet(width, num_classes)


def no_conv() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 3))


def not_a_model():
    return 42


class ShiftedSoftmax(nn.Module):
    """A conv, then softmax(x + shift) over the channels: softmax ignores a constant shift, so the shift's
    gradient is zero and its float64 value is rounding noise (as an attention key bias's in MobileViT)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.shift = nn.Parameter(torch.tensor(0.5))
        self.out = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        return self.out(torch.softmax(self.conv(x) + self.shift, dim=1))


def shifted_softmax() -> nn.Module:
    return ShiftedSoftmax()
