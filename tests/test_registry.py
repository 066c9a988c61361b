"""The name → function registry: built-in names, `get` by name and by "package.module:function",
`@register`, the `convbench.implementations` entry-point group, and the errors for unknown names."""
from __future__ import annotations

import importlib
import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest
import torch
import torch.nn.functional as F

import implementations
from implementations import registry

BUILTINS = ["cudnn", "fft", "loop", "unfold"]


@pytest.fixture(autouse=True)
def _seed():
    """Reproducible random weights and inputs in every test."""
    torch.manual_seed(1234)


@pytest.fixture
def clean_registry(monkeypatch):
    """A private copy of the registry: whatever a test registers is gone afterwards."""
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    return registry._registry


@pytest.fixture
def tiny_module(tmp_path, monkeypatch):
    """An importable module `convbench_tiny_impl` on sys.path, defining a working conv2d `myconv`."""
    (tmp_path / "convbench_tiny_impl.py").write_text(textwrap.dedent("""
        import torch.nn.functional as F

        CALLS = []
        not_a_function = 42

        def myconv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
            CALLS.append(tuple(input.shape))
            return F.conv2d(input, weight, bias, stride, padding, dilation, groups)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "convbench_tiny_impl"
    sys.modules.pop("convbench_tiny_impl", None)


def _xw():
    return torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)


def test_names_sorted_and_include_builtins():
    names = implementations.names()
    assert names == sorted(names)
    assert set(BUILTINS) <= set(names)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", BUILTINS)
def test_get_builtin_by_name(name):
    fn = implementations.get(name)
    assert callable(fn)
    assert implementations.get(name) is fn  # stable: the same function every time
    x, w = _xw()
    torch.testing.assert_close(fn(x, w, None, 1, 1), F.conv2d(x, w, None, 1, 1), rtol=1e-5, atol=1e-5)


def test_get_by_module_path(tiny_module):
    fn = implementations.get(f"{tiny_module}:myconv")
    x, w = _xw()
    out = fn(x, w, padding=1)
    assert out.shape == (1, 3, 5, 5)
    assert sys.modules[tiny_module].CALLS == [(1, 2, 5, 5)]


def test_module_path_errors(tiny_module):
    with pytest.raises(implementations.UnknownImplementation, match=r"cannot import module 'no_such_mod_xyz'"):
        implementations.get("no_such_mod_xyz:conv")
    with pytest.raises(implementations.UnknownImplementation, match=r"has no function 'missing'"):
        implementations.get(f"{tiny_module}:missing")
    with pytest.raises(implementations.UnknownImplementation, match=r"is not callable"):
        implementations.get(f"{tiny_module}:not_a_function")


def test_unknown_name_lists_known_names():
    with pytest.raises(implementations.UnknownImplementation) as info:
        implementations.get("winograd_nonexistent")
    message = str(info.value)
    assert "winograd_nonexistent" in message
    for name in implementations.names():
        assert name in message
    assert isinstance(info.value, ValueError)


def test_register_makes_a_function_available(clean_registry):
    @implementations.register("my_test_conv")
    def my_conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        return F.conv2d(input, weight, bias, stride, padding, dilation, groups)

    assert "my_test_conv" in implementations.names()
    assert implementations.names() == sorted(implementations.names())
    assert implementations.get("my_test_conv") is my_conv
    assert implementations.unsupported_reason(my_conv, "cpu", torch.float16) is None
    x, w = _xw()
    torch.testing.assert_close(implementations.get("my_test_conv")(x, w), F.conv2d(x, w))


def test_register_with_unsupported_declaration(clean_registry):
    def no_half(device_type, dtype):
        return f"no {dtype} on {device_type}" if dtype == torch.float16 else None

    @implementations.register("picky_conv", unsupported=no_half)
    def picky(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        return F.conv2d(input, weight, bias, stride, padding, dilation, groups)

    fn = implementations.get("picky_conv")
    assert implementations.unsupported_reason(fn, "cpu", torch.float16) == "no torch.float16 on cpu"
    assert implementations.unsupported_reason(fn, torch.device("cuda", 0), torch.float16) == \
        "no torch.float16 on cuda"
    assert implementations.unsupported_reason(fn, "cpu", torch.float32) is None


def test_builtin_unsupported_declarations_are_consistent():
    """Every declaration answers with None or a non-empty reason, for every device and dtype."""
    for name in BUILTINS:
        fn = implementations.get(name)
        for device in ("cpu", "cuda"):
            for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
                reason = implementations.unsupported_reason(fn, device, dtype)
                assert reason is None or (isinstance(reason, str) and reason), (name, device, dtype, reason)
        assert implementations.unsupported_reason(fn, "cpu", torch.float32) is None, name
        assert implementations.unsupported_reason(fn, "cpu", torch.float64) is None, name


def test_unsupported_is_distinguishable_from_argument_errors():
    """Callers catch `Unsupported` first; an argument error must never look like one."""
    assert issubclass(implementations.Unsupported, NotImplementedError)
    for error in (implementations.ConvArgumentError, implementations.ConvArgumentTypeError):
        assert not issubclass(error, implementations.Unsupported)
        assert not issubclass(implementations.Unsupported, error)


@pytest.mark.parametrize("bad", ["", "has:colon", None, 3])
def test_register_rejects_bad_names(bad, clean_registry):
    with pytest.raises(ValueError, match="implementation name"):
        implementations.register(bad)


# ----------------------------------------------------------------------------------------------
# Entry points


def test_entry_point_is_discovered(tiny_module, clean_registry, monkeypatch):
    """A package declaring `myconv = "mod:function"` in the group is listed and loadable by name."""
    eps = [EntryPoint(name="ep_conv", value=f"{tiny_module}:myconv", group=implementations.ENTRY_POINT_GROUP)]
    seen_groups = []

    def fake_entry_points(*, group):
        seen_groups.append(group)
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    assert "ep_conv" in implementations.names()
    assert set(seen_groups) == {"convbench.implementations"}
    fn = implementations.get("ep_conv")
    assert fn is sys.modules[tiny_module].myconv
    x, w = _xw()
    torch.testing.assert_close(fn(x, w), F.conv2d(x, w))


def test_entry_point_from_an_installed_distribution(tmp_path, tiny_module, clean_registry, monkeypatch):
    """The real discovery path: a dist-info folder on sys.path, read by importlib.metadata."""
    dist = tmp_path / "convbench_tiny_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: convbench-tiny-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[convbench.implementations]\ndist_conv = {tiny_module}:myconv\n")
    assert "dist_conv" in implementations.names()
    assert implementations.get("dist_conv") is sys.modules[tiny_module].myconv
    assert set(BUILTINS) <= set(implementations.names())


def test_registered_name_wins_over_entry_point(tiny_module, clean_registry, monkeypatch):
    eps = [EntryPoint(name="loop", value=f"{tiny_module}:myconv", group=implementations.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(registry, "entry_points", lambda *, group: eps)
    assert implementations.get("loop") is not importlib.import_module(tiny_module).myconv
    assert implementations.names().count("loop") == 1


def test_unknown_name_lists_entry_points_too(tiny_module, clean_registry, monkeypatch):
    eps = [EntryPoint(name="ep_listed", value=f"{tiny_module}:myconv", group=implementations.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(registry, "entry_points", lambda *, group: eps)
    with pytest.raises(implementations.UnknownImplementation, match="ep_listed"):
        implementations.get("nope")


def test_broken_entry_point_says_which_package_entry(clean_registry, monkeypatch):
    eps = [EntryPoint(name="ep_broken", value="convbench_no_such_module_xyz:conv",
                      group=implementations.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(registry, "entry_points", lambda *, group: eps)
    assert "ep_broken" in implementations.names()
    with pytest.raises(implementations.UnknownImplementation,
                       match=r"'ep_broken' is declared by an installed package .*convbench_no_such_module_xyz:conv"):
        implementations.get("ep_broken")


@pytest.mark.parametrize("bad", [None, 3, ["loop"]])
def test_get_rejects_non_string_names(bad):
    with pytest.raises(TypeError, match="implementation name must be a string"):
        implementations.get(bad)
