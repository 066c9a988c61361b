"""Which device a job asked for, and why it may not be here (-> `skipped` rows, not a crash)."""
from __future__ import annotations

from typing import Optional

import torch


def resolve(name: str) -> torch.device:
    """'auto' means CUDA when present, else CPU; everything else is taken as written."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
