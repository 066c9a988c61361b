"""The seeded fuzz: valid conv2d configurations drawn from a fixed seed, so a CI run is derandomized
(the same cases every run, each with a stable name, `fuzz_017`) and a failure names the exact case to
rerun. Every drawn configuration is one F.conv2d accepts: the padded input holds the dilated kernel,
channels divide by groups, 'same' only at stride 1."""
from __future__ import annotations

import random

import torch

from .cases import Case

DEFAULT_SEED = 20  # the fuzz's seed unless one is given: the suite's cases are the same everywhere


def config(rng: random.Random, name: str, dtypes, only_3x3_stride1: bool = False) -> tuple[Case, torch.dtype, int]:
    """(case, dtype, tensor seed): one valid configuration; with `only_3x3_stride1`, the ones Winograd
    covers (3x3 kernel, stride 1, dilation 1)."""
    groups = rng.choice([1, 1, 2, 3])
    c_in, c_out = groups * rng.randint(1, 3), groups * rng.randint(1, 3)
    if only_3x3_stride1:
        kh = kw = 3
        dh = dw = sh = sw = 1
    else:
        kh, kw = rng.randint(1, 4), rng.randint(1, 4)
        dh, dw = rng.randint(1, 3), rng.randint(1, 3)
        sh, sw = rng.randint(1, 3), rng.randint(1, 3)
    ekh, ekw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if sh == sw == 1 and rng.random() < 0.5:
        padding = rng.choice(["same", "valid"])
        total_h, total_w = (ekh - 1, ekw - 1) if padding == "same" else (0, 0)
    else:
        ph, pw = rng.randint(0, 3), rng.randint(0, 3)
        padding = ph if ph == pw and rng.random() < 0.5 else (ph, pw)
        total_h, total_w = 2 * ph, 2 * pw
    min_h, min_w = max(1, ekh - total_h), max(1, ekw - total_w)  # the padded input must hold the dilated kernel
    h, w = rng.randint(min_h, min_h + 6), rng.randint(min_w, min_w + 6)
    n = rng.randint(0, 3)  # 0 means unbatched (3-D input)
    bias = rng.random() < 0.5
    dtype = rng.choice(list(dtypes))
    layout = rng.choice(["contiguous", "contiguous", "channels_last", "transposed", "sliced"])
    if n == 0 and layout == "channels_last":
        layout = "contiguous"
    stride = (sh, sw) if sh != sw or rng.random() < 0.5 else sh
    dilation = (dh, dw) if dh != dw or rng.random() < 0.5 else dh
    shape = (c_in, h, w) if n == 0 else (n, c_in, h, w)
    case = Case(name, shape, (c_out, c_in // groups, kh, kw), bias,
                dict(stride=stride, padding=padding, dilation=dilation, groups=groups), layout)
    return case, dtype, rng.randint(0, 2**31 - 1)


def configs(count: int, dtypes, seed: int = DEFAULT_SEED, only_3x3_stride1: bool = False, prefix: str = "fuzz"):
    """`count` configurations from `seed`: the same list for the same arguments, and the first k of a
    longer run are the k of a shorter one."""
    rng = random.Random(f"{prefix}-{seed}")
    return [config(rng, f"{prefix}_{i:03d}", dtypes, only_3x3_stride1) for i in range(count)]
