"""Plug-ins that fail the way native extensions and "drop-in accelerator" packages fail. Each must
end up as its own rows while every implementation swept after it stays `ok` (tests/test_isolation.py).
Importing this module does nothing hostile: each misdeed happens on the first call."""
import ctypes
import os
import sys

import torch
import torch.nn.functional as F

import implementations

_conv2d = F.conv2d  # torch's own, taken before anything below replaces it


@implementations.register("hostile_segfault")
def segfault(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """A native extension dereferencing NULL."""
    ctypes.string_at(0)


@implementations.register("hostile_abort")
def aborts(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """A failed C++ assert."""
    os.abort()


@implementations.register("hostile_sys_exit")
def sys_exits(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """A library refusing an argument by exiting."""
    sys.exit(3)


@implementations.register("hostile_os_exit")
def os_exits(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Exit without unwinding anything."""
    os._exit(5)


def _minutes_in_one_native_call():
    """40 products of 2048x2048 float64 matrices (~700 GFLOP: minutes on one thread) in one ATen
    call, on 32 MiB: SIGALRM cannot interrupt it until it returns, and it starts at once."""
    torch.linalg.matrix_power(torch.full((2048, 2048), 0.5, dtype=torch.float64), 2 ** 40)


@implementations.register("hostile_native_hang")
def native_hang(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """One native call far longer than any budget."""
    _minutes_in_one_native_call()
    return _conv2d(input, weight, bias, stride, padding, dilation, groups)


class _HangsInBackward(torch.autograd.Function):
    """Right forward; the backward never comes back (a hung CUDA backward's stand-in on the CPU)."""

    @staticmethod
    def forward(ctx, x, w, b, stride, padding, dilation, groups):
        return _conv2d(x, w, b, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        _minutes_in_one_native_call()
        raise RuntimeError("unreachable within any budget")


@implementations.register("hostile_backward_hang")
def backward_hang(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _HangsInBackward.apply(input, weight, bias, stride, padding, dilation, groups)


@implementations.register("hostile_memory_hog")
def memory_hog(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Maps 1 GiB after 1 GiB, up to 64 GiB (untouched, so a test without the limit fails by
    returning the right values rather than by swapping the machine): only a limit stops it."""
    hoard = []
    for _ in range(64):
        hoard.append(torch.empty(2 ** 28, dtype=torch.float32))
    return _conv2d(input, weight, bias, stride, padding, dilation, groups)


def _one_percent_off(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv2d(input, weight, bias, stride, padding, dilation, groups) * 1.01


@implementations.register("hostile_patches_conv")
def patches_conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Routes F.conv2d (and torch.conv2d) through itself, 1 % off, as acceleration packages do, then
    answers through the patched function."""
    torch.nn.functional.conv2d = _one_percent_off
    torch.conv2d = _one_percent_off
    return F.conv2d(input, weight, bias, stride, padding, dilation, groups)


@implementations.register("hostile_threads")
def changes_threads(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Right values, but it leaves torch on two threads (and float64 as the default dtype)."""
    torch.set_num_threads(2)
    torch.set_default_dtype(torch.float64)
    return _conv2d(input, weight, bias, stride, padding, dilation, groups)
