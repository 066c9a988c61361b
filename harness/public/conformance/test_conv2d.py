"""The conformance suite as tests, one per (implementation, check, case, dtype, device), for the
implementations named with --convbench-impl (the options are plugin.py's)."""
from __future__ import annotations

import pytest

from convbench.conformance.plugin import listed, read_xfails


def _option(config, name, default=None):
    try:
        return config.getoption(name)
    except ValueError:  # the plugin is not loaded (convbench not installed?)
        return default


def pytest_generate_tests(metafunc):
    if "check" not in metafunc.fixturenames:
        return
    config = metafunc.config
    impls = listed(_option(config, "convbench_impl", []))
    if not impls:
        raise pytest.UsageError("convbench.conformance: name the implementation to check, "
                                "--convbench-impl package.module:function (or a registered name)")
    import implementations
    from convbench.testing import plan
    xfails = _option(config, "convbench_xfails")
    options = dict(dtypes=listed(_option(config, "convbench_dtype", [])) or None,
                   devices=listed(_option(config, "convbench_device", [])) or None,
                   expected_failures=read_xfails(xfails) if xfails else None,
                   max_examples=_option(config, "convbench_max_examples"),
                   full=bool(_option(config, "convbench_full", False)),
                   timeout_s=_option(config, "convbench_timeout"))
    try:
        checks = [c for impl in impls for c in plan(impl, **options)]
    except (implementations.UnknownImplementation, ValueError, AttributeError) as exc:
        raise pytest.UsageError(f"convbench.conformance: {exc}") from exc
    metafunc.parametrize("check", checks, ids=[c.id for c in checks])


def test_conv2d(check):
    check()
