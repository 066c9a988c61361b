"""What an implementation must leave as it found it, checked around every case in the worker.

`TorchOwn` holds torch's own convolution entry points (and the autograd calls the checks use), taken
when the worker starts, before any plug-in is imported; `changes()` names each one replaced since,
and by which module. `GlobalState` sets torch's process-wide switches per case (threads, default
dtype, grad mode, backend flags, flush-denormal, the RNG) and, after the case, names and undoes what
the implementation changed. Neither can see a kernel registered over ATen's own with
`torch.library`: that replaces no Python attribute (see README, *What isolation guarantees*)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

# (object path, attribute): the functions a drop-in accelerator would replace to route convolutions
GUARDED = (
    ("torch", "conv2d"), ("torch", "convolution"), ("torch._C._VariableFunctions", "conv2d"),
    ("torch.nn.functional", "conv1d"), ("torch.nn.functional", "conv2d"), ("torch.nn.functional", "conv3d"),
    ("torch.nn.functional", "conv_transpose2d"), ("torch.nn.functional", "pad"),
    ("torch.nn.Conv2d", "forward"), ("torch.nn.Conv2d", "_conv_forward"), ("torch.nn.modules.conv", "F"),
    ("torch.ops.aten", "convolution"), ("torch.ops.aten", "conv2d"),
    ("torch.autograd", "grad"), ("torch.Tensor", "backward"),
)


def _resolve(path: str) -> Any:
    """'torch.nn.Conv2d' -> the class; 'torch.ops.aten' -> the op namespace."""
    parts = path.split(".")
    obj = importlib.import_module(parts[0])
    for part in parts[1:]:
        obj = getattr(obj, part)
    return obj


def _lookup(path: str, name: str) -> Any:
    owner = _resolve(path)
    # a class's own attribute, not one found through its bases (Conv2d.forward must be Conv2d's)
    return vars(owner).get(name) if isinstance(owner, type) else getattr(owner, name, None)


def origin(obj: Any) -> str:
    """'hostile.conv2d_off (module hostile)': what replaced a function, and where it came from."""
    module = getattr(obj, "__module__", None) or type(obj).__module__
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{name} (module {module})"


class TorchOwn:
    """torch's own functions as they were when this object was made, compared by identity."""

    def __init__(self) -> None:
        self.own = {(path, name): _lookup(path, name) for path, name in GUARDED}

    def changes(self) -> list[str]:
        """Each guarded function that is no longer torch's own, with what replaced it; and any torch
        function or dispatch mode left switched on (it would intercept the reference too)."""
        found = []
        for (path, name), own in self.own.items():
            now = _lookup(path, name)
            if now is not own:
                found.append(f"{path}.{name} was replaced by {origin(now)}")
        modes = torch._C._len_torch_function_stack(), torch._C._len_torch_dispatch_stack()
        if any(modes):
            found.append(f"a torch function/dispatch mode was left active ({modes[0]} function, {modes[1]} "
                         "dispatch modes on the stack)")
        return found


def _flushes_denormals() -> bool:
    """set_flush_denormal has no getter: a denormal that survives a multiplication says it is off."""
    tiny = torch.tensor([1e-40], dtype=torch.float32)
    return bool((tiny * 1.0)[0] == 0)


def _set_deterministic(value: tuple[bool, bool]) -> None:
    torch.use_deterministic_algorithms(value[0], warn_only=value[1])


def _attr(path: str, name: str) -> tuple[Callable[[], Any], Callable[[Any], None]]:
    return (lambda: getattr(_resolve(path), name)), (lambda v: setattr(_resolve(path), name, v))


# name -> (get, set): the process-wide switches that change what or how fast a convolution computes
SETTINGS: dict[str, tuple[Callable[[], Any], Optional[Callable[[Any], None]]]] = {
    "torch.get_num_threads()": (torch.get_num_threads, torch.set_num_threads),
    "torch.get_num_interop_threads()": (torch.get_num_interop_threads, None),  # settable once per process
    "torch.get_default_dtype()": (torch.get_default_dtype, torch.set_default_dtype),
    "torch.is_grad_enabled()": (torch.is_grad_enabled, torch.set_grad_enabled),
    "torch.is_anomaly_enabled()": (torch.is_anomaly_enabled, torch.set_anomaly_enabled),
    "deterministic algorithms (enabled, warn_only)": (
        lambda: (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()),
        _set_deterministic),
    "torch.get_float32_matmul_precision()": (torch.get_float32_matmul_precision, torch.set_float32_matmul_precision),
    **{f"{p}.{n}": _attr(p, n) for p, n in (
        ("torch.backends.cudnn", "enabled"), ("torch.backends.cudnn", "benchmark"),
        ("torch.backends.cudnn", "deterministic"), ("torch.backends.cudnn", "allow_tf32"),
        ("torch.backends.cuda.matmul", "allow_tf32"),
        ("torch.backends.cuda.matmul", "allow_fp16_reduced_precision_reduction"),
        ("torch.backends.cuda.matmul", "allow_bf16_reduced_precision_reduction"),
        ("torch.backends.mkldnn", "enabled"))},
    "torch.is_autocast_enabled('cpu')": (lambda: torch.is_autocast_enabled("cpu"),
                                         lambda v: torch.set_autocast_enabled("cpu", v)),
    "flush denormal (torch.set_flush_denormal)": (_flushes_denormals, torch.set_flush_denormal),
}


@dataclass
class GlobalState:
    """The job's values of SETTINGS, taken once the job's own settings are in place."""
    values: dict
    seed: int = 0

    @classmethod
    def capture(cls, seed: int = 0) -> "GlobalState":
        return cls({name: get() for name, (get, _) in SETTINGS.items()}, seed)

    def reset(self) -> None:
        """Before a case: the job's values again, and the global RNG seeded alike for every case."""
        for name, (get, set_) in SETTINGS.items():
            if set_ is not None and get() != self.values[name]:
                set_(self.values[name])
        torch.manual_seed(self.seed)
        self._rng = torch.random.get_rng_state()

    def restore(self) -> list[str]:
        """After a case: what differs from the job's values (undone where torch allows), e.g.
        'torch.get_num_threads() 1 -> 2'."""
        changed = []
        for name, (get, set_) in SETTINGS.items():
            now, want = get(), self.values[name]
            if now != want:
                changed.append(f"{name} {want} -> {now}" + ("" if set_ else " (cannot be undone)"))
                if set_ is not None:
                    set_(want)
        rng = getattr(self, "_rng", None)
        if rng is not None and not torch.equal(torch.random.get_rng_state(), rng):
            changed.append("torch's global random generator was drawn from or reseeded")
        return changed
