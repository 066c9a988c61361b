"""`import convbench`: the public API, a thin facade over `implementations` and `harness`.

    convbench.register, convbench.get, convbench.names   the implementation registry
    convbench.Conv2d                                     nn.Conv2d computing with a chosen implementation
    convbench.Unsupported                                raise it for inputs you deliberately do not handle
    convbench.prepare                                    F.conv2d's argument checks, padding resolved
    convbench.testing                                    the conformance suite for your own CI

This folder is harness/public/ in the repository (pyproject.toml maps the name). Attributes load on
first use, so the pytest plugin (convbench.conformance.plugin) costs nothing until its options are given."""
from __future__ import annotations

import importlib

_FROM_IMPLEMENTATIONS = ("register", "get", "names", "Conv2d", "Unsupported", "UnknownImplementation",
                         "prepare", "ConvParams", "ConvArgumentError", "ConvArgumentTypeError")
_SUBMODULES = ("testing", "conformance")

__all__ = [*_FROM_IMPLEMENTATIONS, *_SUBMODULES]


def __getattr__(name: str):
    if name in _FROM_IMPLEMENTATIONS:
        value = getattr(importlib.import_module("implementations"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
