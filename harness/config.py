"""The configuration schema: dataclasses registered in Hydra's ConfigStore, so a typo or a badly typed
value fails while the config is composed, before any job runs. Checks that types cannot express
(device strings, positive sizes, implementation names) live in `__post_init__` and `check_impl`, and
their messages list the valid options."""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


class DType(Enum):
    float32 = "float32"
    float64 = "float64"
    float16 = "float16"
    bfloat16 = "bfloat16"

    @property
    def torch(self) -> torch.dtype:
        return getattr(torch, self.name)


class Pass(Enum):
    forward = "forward"
    backward = "backward"


class Method(Enum):
    """torch.utils.benchmark.Timer's two stopping rules."""
    blocked = "blocked"    # blocked_autorange: run for at least min_run_time
    adaptive = "adaptive"  # adaptive_autorange: also until IQR/median < threshold (or max_run_time)


DEVICES = ("cpu", "cuda", "cuda:N", "mps", "auto")
_DEVICE_RE = re.compile(r"^(cpu|cuda|cuda:\d+|mps|auto)$")


def _pair(value: Any, name: str) -> tuple[int, int]:
    items = list(value) if isinstance(value, (list, tuple)) or OmegaConf.is_list(value) else [value, value]
    if len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(items[0]), int(items[1])


@dataclass
class Shape:
    """One convolution problem. kernel/stride/dilation: int or [h, w]; padding: int, [h, w], same or valid."""
    layer: str = MISSING
    n: int = MISSING
    c_in: int = MISSING
    h: int = MISSING
    w: int = MISSING
    c_out: int = MISSING
    kernel: Any = 3
    stride: Any = 1
    padding: Any = 0
    dilation: Any = 1
    groups: int = 1
    bias: bool = True

    def __post_init__(self) -> None:
        for name in ("n", "c_in", "h", "w", "c_out", "groups"):
            if getattr(self, name) <= 0:
                raise ValueError(f"shape {self.layer!r}: {name} must be positive, got {getattr(self, name)}")
        self.kernel = _pair(self.kernel, f"shape {self.layer!r}: kernel")
        self.stride = _pair(self.stride, f"shape {self.layer!r}: stride")
        self.dilation = _pair(self.dilation, f"shape {self.layer!r}: dilation")
        if not (isinstance(self.padding, str) and self.padding in ("same", "valid")):
            if isinstance(self.padding, str):
                raise ValueError(f"shape {self.layer!r}: padding must be an int, a pair, 'same' or 'valid', "
                                 f"got {self.padding!r}")
            self.padding = _pair(self.padding, f"shape {self.layer!r}: padding")
        if self.c_in % self.groups or self.c_out % self.groups:
            raise ValueError(f"shape {self.layer!r}: c_in ({self.c_in}) and c_out ({self.c_out}) must be "
                             f"divisible by groups ({self.groups})")


@dataclass
class Suite:
    name: str = MISSING
    description: str = ""
    shapes: List[Shape] = MISSING


@dataclass
class Timing:
    min_run_time: float = 0.1   # seconds of timed calls per (case, pass), after warm-up
    warmup: int = 1             # untimed calls first (also where cuDNN autotuning happens)
    method: Method = Method.blocked
    threshold: float = 0.1      # adaptive only: stop once IQR/median is below this
    max_run_time: float = 2.0   # adaptive only

    def __post_init__(self) -> None:
        if self.min_run_time <= 0 or self.warmup < 0 or self.max_run_time <= 0:
            raise ValueError("timing: min_run_time and max_run_time must be > 0 and warmup >= 0, got "
                             f"{self.min_run_time}, {self.max_run_time}, {self.warmup}")


@dataclass
class Config:
    impl: str = "cudnn"                  # a registered name or package.module:function
    plugins: List[str] = field(default_factory=list)  # modules imported first (their @register runs)
    suite: Suite = MISSING               # config group conf/suite/*.yaml
    batch: Optional[int] = None          # cap every shape's batch size (for small machines)
    device: str = "cpu"                  # cpu, cuda, cuda:N, mps, auto (CUDA when present)
    dtype: DType = DType.float32
    passes: List[Pass] = field(default_factory=lambda: [Pass.forward, Pass.backward])
    timing: Timing = field(default_factory=Timing)
    threads: Optional[int] = None        # torch intra-op threads for timing (default: torch's)
    cudnn_benchmark: bool = True         # cuDNN autotuning, done during warm-up
    allow_tf32: bool = False             # TF32 cannot meet a float32 tolerance
    seed: int = 0
    budget_s: float = 5.0                # time limit per case and pass (its check + its timing)
    strict: bool = False                 # exit non-zero on any incorrect or error row
    results_link: Optional[str] = "results/latest"  # symlink pointed at the newest sweep; null: none
    resume: bool = False                 # into an existing hydra.sweep.dir: keep complete jobs and finished cases
    allow_concurrent: bool = False       # accept jobs timing on one device at once (no warning; rows still marked)

    def __post_init__(self) -> None:
        if not _DEVICE_RE.match(self.device):
            raise ValueError(f"device={self.device!r} is not valid; use one of: {', '.join(DEVICES)}")
        if not self.passes:
            raise ValueError(f"passes must name at least one of: {', '.join(p.name for p in Pass)}")
        if self.batch is not None and self.batch <= 0:
            raise ValueError(f"batch must be a positive integer or null, got {self.batch}")
        if self.threads is not None and self.threads <= 0:
            raise ValueError(f"threads must be a positive integer or null, got {self.threads}")
        if self.budget_s <= 0:
            raise ValueError(f"budget_s must be positive, got {self.budget_s}")
        if not self.impl:
            raise ValueError("impl must name an implementation")


def register_configs() -> None:
    """Make the schema known to Hydra: conf/config.yaml extends `base_config`; suites are typed
    through `Config.suite`."""
    ConfigStore.instance().store(name="base_config", node=Config)
    from .launch import register as register_launchers
    register_launchers()  # hydra/launcher=convbench_slurm, convbench_submitit_local (conf/launcher/*.yaml)


def to_config(cfg: DictConfig | Config) -> Config:
    """Composed DictConfig -> Config object, running every `__post_init__` check."""
    if isinstance(cfg, Config):
        return cfg
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def import_plugins(plugins: List[str]) -> None:
    """Import the user's modules so their `@implementations.register` calls run."""
    for name in plugins:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f"plugins: cannot import {name!r}: {exc}. Is its folder on PYTHONPATH?") from exc


def check_impl(name: str) -> None:
    """Raise `UnknownImplementation` (listing the known names) unless `name` resolves."""
    import implementations
    implementations.get(name)
