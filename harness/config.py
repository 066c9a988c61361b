"""The configuration schema: dataclasses registered in Hydra's ConfigStore, so a typo or a badly typed
value fails while the config is composed, before any job runs. The dataclasses are the one source of
every default: conf/config.yaml only chooses the suite and Hydra's settings (a test composes the app's
config and compares it with `Config()`). Checks that types cannot express
(device strings, positive sizes, implementation names) live in `__post_init__` and `check_impl`, and
their messages list the valid options."""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

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
    """When sampling stops (harness.measure.stopping): every method also needs min_run_time and
    min_samples, and stops at max_run_time whatever else."""
    blocked = "blocked"    # at least min_run_time and min_samples
    adaptive = "adaptive"  # also until IQR/median < threshold (torch.utils.benchmark's adaptive_autorange rule)
    noise = "noise"        # also until the median's 95% interval is within +-max_noise of it (nvbench's rule)


class Cache(Enum):
    """Which caches the timed calls find (harness.measure.flush)."""
    warm = "warm"  # back-to-back calls: inputs and the implementation's buffers stay in cache
    cold = "cold"  # the last-level cache (CPU) or L2 (CUDA) is overwritten before every timed call
    both = "both"  # warm, then cold, in columns side by side


DEVICES = ("cpu", "cuda", "cuda:N", "mps", "auto")
_DEVICE_RE = re.compile(r"^(cpu|cuda|cuda:\d+|mps|auto)$")


class ConfigError(ValueError):
    """A configuration value the schema rejects, as one line: the key, the value, what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value} is not valid; expected {allowed}")


def check_device(name: str) -> None:
    """Raise ConfigError, listing the valid forms, unless `name` is a device the config accepts."""
    if not _DEVICE_RE.match(str(name)):
        raise ConfigError("device", repr(name), f"one of {', '.join(DEVICES)}")


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
    count: int = 1            # calls per forward pass of the network it comes from (network totals weigh by it)
    paths: List[str] = field(default_factory=list)  # module paths that make these calls (harness.capture)

    def __post_init__(self) -> None:
        for name in ("n", "c_in", "h", "w", "c_out", "groups", "count"):
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
    """A list of shapes, or a model to capture them from (`harness.capture`): with `model` set and no
    `shapes`, the job runs the model once on an `input`-shaped tensor and measures its conv shapes."""
    name: str = MISSING
    description: str = ""
    shapes: List[Shape] = field(default_factory=list)
    model: Optional[str] = None      # package.module:factory the shapes come from (captured suites record it)
    input: List[int] = field(default_factory=lambda: [1, 3, 224, 224])  # the model's input shape
    kwargs: Dict[str, Any] = field(default_factory=dict)  # keyword arguments for the factory

    def __post_init__(self) -> None:
        if self.model is not None and ":" not in self.model:
            raise ConfigError("suite.model", self.model, "the model factory as package.module:factory")
        if not self.input or not all(isinstance(v, int) and v > 0 for v in self.input):
            raise ConfigError("suite.input", list(self.input), "a list of positive sizes like [1,3,224,224]")


@dataclass
class Timing:
    min_run_time: float = 0.1   # seconds of sampling per timing (warm, and cold), after warm-up
    warmup: int = 1             # untimed calls first (also where cuDNN autotuning happens)
    method: Method = Method.blocked
    cache: Cache = Cache.both   # warm, cold or both
    min_samples: int = 10       # samples per timing at least (unless max_run_time comes first: noisy)
    threshold: float = 0.1      # adaptive only: stop once IQR/median is below this
    max_noise: float = 0.02     # noise only: stop once the 95% interval's half-width <= this x median
    max_run_time: float = 0.5   # seconds of sampling per timing at most (warm and cold each)
    cold_min_run_time: float = 0.005  # seconds of cold sampling at least (each sample is one call after an eviction;
                                     # min_samples and the median's interval decide beyond it)
    repeats: int = 1            # warm rounds per worker process, each followed by the vendor's on the same inputs
    processes: int = 3          # worker processes that each time every case's warm rounds (pyperf's and asv's
                                # `processes`): values vary more between processes than within one
    vs_vendor: bool = True      # time torch's own conv in the same rounds (vs_vendor: drift cancels in compare)

    def __post_init__(self) -> None:
        if self.min_run_time <= 0:
            raise ConfigError("timing.min_run_time", self.min_run_time, "seconds, > 0")
        if self.max_run_time < self.min_run_time:
            raise ConfigError("timing.max_run_time", self.max_run_time,
                              f"seconds, >= timing.min_run_time ({self.min_run_time})")
        if not 0 < self.cold_min_run_time <= self.max_run_time:
            raise ConfigError("timing.cold_min_run_time", self.cold_min_run_time,
                              f"seconds, > 0 and <= timing.max_run_time ({self.max_run_time})")
        if self.warmup < 0:
            raise ConfigError("timing.warmup", self.warmup, "a count of untimed calls, >= 0")
        if self.repeats < 1:
            raise ConfigError("timing.repeats", self.repeats, "a count of rounds, >= 1")
        if self.processes < 1:
            raise ConfigError("timing.processes", self.processes, "a count of worker processes, >= 1")
        if self.min_samples < 1:
            raise ConfigError("timing.min_samples", self.min_samples, "a count of samples, >= 1")
        if self.max_noise <= 0:
            raise ConfigError("timing.max_noise", self.max_noise, "a fraction of the median, > 0 (0.02 = 2%)")
        if self.threshold <= 0:
            raise ConfigError("timing.threshold", self.threshold, "a fraction of the median, > 0")


@dataclass
class Check:
    """How many calls of each pass are checked: the first, a second, and one after the timed runs (so
    state built up while timing is checked too); more (calls > 3) are made before the timing. The worst
    decides the verdict; comparing them finds nondeterminism (the `deterministic` column)."""
    calls: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.calls, bool) or self.calls < 1:
            raise ConfigError("check.calls", self.calls, "an integer >= 1 (1: the first call only; "
                              "2: also one after the timed runs; 3: also a second call)")


@dataclass
class Config:
    impl: str = "cudnn"                  # a registered name or package.module:function
    plugins: List[str] = field(default_factory=list)  # modules imported first (their @register runs)
    suite: Suite = MISSING               # config group conf/suite/*.yaml
    batch: Optional[int] = None          # cap every shape's batch size (for small machines)
    device: str = "auto"                 # cpu, cuda, cuda:N, mps, auto (CUDA when present)
    dtype: DType = DType.float32
    passes: List[Pass] = field(default_factory=lambda: [Pass.forward, Pass.backward])
    timing: Timing = field(default_factory=Timing)
    check: Check = field(default_factory=Check)
    threads: Optional[int] = 1           # torch intra-op threads for timing; None: torch's default (all cores).
                                         # 1 keeps numbers steady on a shared machine: 2 threads on 2 busy
                                         # cores stall 10-50 ms per op
    cudnn_benchmark: bool = True         # cuDNN autotuning, done during warm-up
    allow_tf32: bool = False             # TF32 cannot meet a float32 tolerance
    seed: int = 0
    budget_s: float = 2.0                # time limit per case and pass (its check + its timing)
    worker_memory_gb: Optional[float] = None  # address space (RLIMIT_AS) the worker may map beyond its start-up,
                                         # GiB; null: the machine's RAM on CPU jobs, none with CUDA; 0: no limit
    strict: bool = False                 # exit non-zero on any incorrect or error row
    results_link: Optional[str] = "results/latest"  # symlink pointed at the newest sweep; null: none
    resume: bool = False                 # into an existing hydra.sweep.dir: keep complete jobs and finished cases
    allow_concurrent: bool = False       # accept jobs timing on one device at once (no warning; rows still marked)

    def __post_init__(self) -> None:
        check_device(self.device)
        if not self.passes:
            raise ConfigError("passes", "[]", f"a list of at least one of: {', '.join(p.name for p in Pass)}")
        if self.batch is not None and self.batch <= 0:
            raise ConfigError("batch", self.batch, "a positive integer, or null for no cap")
        if self.threads is not None and self.threads <= 0:
            raise ConfigError("threads", self.threads, "a positive integer, or null for torch's default")
        if self.budget_s <= 0:
            raise ConfigError("budget_s", self.budget_s, "seconds, > 0")
        if self.worker_memory_gb is not None and self.worker_memory_gb < 0:
            raise ConfigError("worker_memory_gb", self.worker_memory_gb, "GiB, >= 0 (0: no limit), or null for the default")
        if not self.impl:
            raise ConfigError("impl", "''", "a registered name or package.module:function")


def register_configs() -> None:
    """Make the schema known to Hydra: conf/config.yaml extends `base_config`; suites are typed
    through `Config.suite`."""
    ConfigStore.instance().store(name="base_config", node=Config)
    if not OmegaConf.has_resolver("convbench.gpu_count"):
        # launcher configs (submitit_local) show the jobs every GPU of the machine, as the basic launcher does
        OmegaConf.register_new_resolver("convbench.gpu_count", lambda: torch.cuda.device_count())


def to_config(cfg: DictConfig | Config) -> Config:
    """Composed DictConfig -> Config object, running every `__post_init__` check."""
    if isinstance(cfg, Config):
        return cfg
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def import_plugins(plugins: List[str]) -> None:
    """Import the user's modules so their `@implementations.register` calls run: in a worker process
    (harness.measure.worker) or a checking one (harness.measure.names), never in a job process."""
    for name in plugins:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f"plugins: cannot import {name!r}: {exc}. Is its folder on PYTHONPATH?") from exc


def check_impl(name: str) -> None:
    """Raise `UnknownImplementation` (listing the known names) unless `name` resolves."""
    import implementations
    implementations.get(name)


def _schema_with_defaults() -> DictConfig:
    """The schema as a typed OmegaConf node, every default set (a placeholder suite), to try values on."""
    return OmegaConf.structured(Config(suite=Suite(name="-", shapes=[])))


def check_value(key: str, value: Any) -> None:
    """Raise ConfigError unless the schema accepts `key=value` (its type, then its checks), so a bad
    value reads like a bad name: one line, before Hydra composes anything. Keys the schema does not
    have, and config groups (`suite`), are left to Hydra, whose messages suggest the right name."""
    base = _schema_with_defaults()
    if key == "suite" or key.startswith("suite.") or OmegaConf.select(base, key, default=_ABSENT) is _ABSENT:
        return
    try:
        OmegaConf.update(base, key, value, merge=True)
        OmegaConf.to_object(base)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:  # omegaconf's ValidationError is a ValueError
        raise ConfigError(key, value, _what_is_allowed(exc)) from exc


_ABSENT = object()


def _what_is_allowed(exc: BaseException) -> str:
    """omegaconf's type errors say what was expected on their first line; keep just that part."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    options = re.search(r"expected one of \[(.*)\]", first)
    if options:
        return f"one of {options.group(1)}"
    if "is not a valid bool" in first:
        return "true or false"
    kind = re.search(r"could not be converted to (\w+)", first)
    if kind:
        return {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}.get(kind.group(1), kind.group(1))
    return first
