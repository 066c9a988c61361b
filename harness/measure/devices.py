"""Which device a job asked for, and why it may not be here (-> `skipped` rows, not a crash)."""
from __future__ import annotations

from typing import Optional

import torch


def resolve(name: str) -> torch.device:
    """'auto' means CUDA when present, else CPU. A bare 'cuda' gets the current device's index:
    tensors report `cuda:0`, and torch.device('cuda') != torch.device('cuda:0'), so a result check
    against the bare name would call every CUDA result "on the wrong device"."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else torch.device(name)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def same_device(a: torch.device, b: torch.device) -> bool:
    """Equal devices, where an index left out means the current one ('cuda' is 'cuda:0' then)."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type == "cuda" and (a.index is None or b.index is None) and torch.cuda.is_available():
        current = torch.cuda.current_device()
        return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)
    return a.index == b.index or a.index is None or b.index is None


def absent_reason(device: torch.device) -> Optional[str]:
    """Why `device` cannot be used on this machine, or None when it can."""
    if device.type == "cuda":
        if not torch.backends.cuda.is_built():
            return f"{device}: this torch ({torch.__version__}) is built without CUDA"
        if not torch.cuda.is_available():
            return f"{device}: no CUDA device is available (CUDA_VISIBLE_DEVICES or driver?)"
        index = device.index or 0
        if index >= torch.cuda.device_count():
            return f"{device}: only {torch.cuda.device_count()} CUDA device(s) present"
        return None
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            return f"{device}: MPS is not available on this machine"
        return None
    return None
