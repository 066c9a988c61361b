"""Name → convolution function. Built-ins register themselves on import; users register with
`@register("name")`, installed packages through the `convbench.implementations` entry-point group,
and anything importable can be named directly as "package.module:function"."""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Callable, Optional

import torch

ConvFn = Callable[..., torch.Tensor]
# (device_type, dtype) -> reason it is not supported, or None when it is.
SupportCheck = Callable[[str, torch.dtype], Optional[str]]

ENTRY_POINT_GROUP = "convbench.implementations"
_registry: dict[str, ConvFn] = {}


class Unsupported(NotImplementedError):
    """Raised by an implementation for inputs it declares it does not handle (say float16 on CPU).
    Callers report it as 'unsupported', not as a failure."""


class UnknownImplementation(ValueError):
    """An implementation name that is neither registered nor an importable "module:function"."""


def register(name: str, *, unsupported: SupportCheck | None = None) -> Callable[[ConvFn], ConvFn]:
    """Decorator: make `fn` available as `get(name)`.

    `unsupported(device_type, dtype)` may return a reason string for combinations the function
    deliberately does not handle; the harness then records 'unsupported' without calling it.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"implementation name must be a non-empty string without ':', got {name!r}")

    def decorate(fn: ConvFn) -> ConvFn:
        if unsupported is not None:
            fn.unsupported = unsupported  # type: ignore[attr-defined]
        _registry[name] = fn
        return fn

    return decorate


def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def names() -> list[str]:
    """Sorted names of every available implementation (registered and entry points)."""
    return sorted(set(_registry) | set(_entry_points()))


def _load_path(path: str) -> ConvFn:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownImplementation(f"cannot import module {module_name!r} for implementation {path!r}: {exc}. "
                                    "Is it on PYTHONPATH?") from exc
    try:
        fn = getattr(module, attr)
    except AttributeError:
        raise UnknownImplementation(f"module {module_name!r} has no function {attr!r} "
                                    f"(from implementation {path!r})") from None
    if not callable(fn):
        raise UnknownImplementation(f"{path!r} is not callable")
    return fn


def get(name: str) -> ConvFn:
    """The function registered as `name`, or loaded from "package.module:function"."""
    if not isinstance(name, str):
        raise TypeError(f"implementation name must be a string, got {name!r}")
    if name in _registry:
        return _registry[name]
    if ":" in name:
        return _load_path(name)
    eps = _entry_points()
    if name in eps:
        try:
            fn = eps[name].load()
        except (ImportError, AttributeError) as exc:
            raise UnknownImplementation(f"implementation {name!r} is declared by an installed package "
                                        f"({ENTRY_POINT_GROUP}: {eps[name].value}) but cannot be loaded: "
                                        f"{exc}") from exc
        _registry[name] = fn
        return fn
    known = ", ".join(names())
    raise UnknownImplementation(f"unknown implementation {name!r}; known implementations: {known}. "
                                "Register your own with @implementations.register('name'), "
                                "or give it as 'package.module:function'.")


def unsupported_reason(fn: ConvFn, device: torch.device | str, dtype: torch.dtype) -> str | None:
    """Why `fn` declares it cannot run on (device, dtype), or None when it can (or says nothing)."""
    check = getattr(fn, "unsupported", None)
    if check is None:
        return None
    return check(torch.device(device).type, dtype)
