"""`implementations.Conv2d`, the nn.Conv2d drop-in: same parameters and initialisation, loads an
nn.Conv2d state dict and gives the same output and gradients, and trains the same way."""
from __future__ import annotations

import copy
import sys

import pytest
import torch
from torch import nn

import implementations



IMPLS = implementations.names()

# nn.Conv2d constructor arguments: (in, out, kernel, kwargs)
CONFIGS = [
    (3, 4, 3, dict(padding=1)),
    (4, 6, (2, 3), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)),
    (4, 8, 3, dict(groups=4, bias=False)),
    (2, 3, 4, dict(padding="same", dilation=(1, 2))),
    (3, 2, 1, dict(stride=2)),
    (2, 2, 3, dict(padding="valid")),
]
CONFIG_IDS = ["pad1", "strided_dilated_grouped", "depthwise_nobias", "same_even", "1x1_s2", "valid"]


# Built-ins that only compute 3x3 kernels at stride 1, dilation 1 (see test_conformance.SHAPE_LIMITS).
LIMITED_TO_3X3_STRIDE1 = ("winograd", "winograd_f2")


def _refuses(impl, k, kwargs) -> bool:
    pair = lambda v: tuple(v) if isinstance(v, tuple) else (v, v)  # noqa: E731
    return impl in LIMITED_TO_3X3_STRIDE1 and (pair(k) != (3, 3) or pair(kwargs.get("stride", 1)) != (1, 1)
                                               or pair(kwargs.get("dilation", 1)) != (1, 1))


@pytest.fixture(autouse=True)
def _seed():
    """Reproducible random weights and inputs in every test."""
    torch.manual_seed(1234)


def _pair_of_modules(c_in, c_out, k, kwargs, impl, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    ref = nn.Conv2d(c_in, c_out, k, dtype=dtype, **kwargs)
    torch.manual_seed(seed)
    mine = implementations.Conv2d(c_in, c_out, k, impl=impl, dtype=dtype, **kwargs)
    return ref, mine


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_same_parameters_and_initialisation(config):
    """Same RNG state → the very same initial weights: nn.Conv2d's shapes and init scheme."""
    c_in, c_out, k, kwargs = config
    for impl in IMPLS:
        ref, mine = _pair_of_modules(c_in, c_out, k, kwargs, impl, seed=3)
        assert isinstance(mine, nn.Conv2d)
        assert mine.state_dict().keys() == ref.state_dict().keys()
        for name, p in ref.named_parameters():
            q = dict(mine.named_parameters())[name]
            assert q.shape == p.shape and q.dtype == p.dtype and q.requires_grad
            torch.testing.assert_close(q, p, rtol=0, atol=0)
        for attr in ("kernel_size", "stride", "padding", "dilation", "groups", "padding_mode"):
            assert getattr(mine, attr) == getattr(ref, attr), attr


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("impl", IMPLS)
def test_loads_state_dict_and_matches_output(impl, config):
    c_in, c_out, k, kwargs = config
    ref = nn.Conv2d(c_in, c_out, k, dtype=torch.float64, **kwargs)
    mine = implementations.Conv2d(c_in, c_out, k, impl=impl, dtype=torch.float64, **kwargs)
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(2, c_in, 7, 8, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    if _refuses(impl, k, kwargs):
        with pytest.raises(implementations.Unsupported):
            mine(x2)
        return
    out_ref, out = ref(x), mine(x2)
    torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(out_ref)
    out_ref.backward(g)
    out.backward(g)
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-10, atol=1e-10)
    for (name, p), q in zip(ref.named_parameters(), mine.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("impl", IMPLS)
def test_trains_like_nn_conv2d(impl):
    """A few SGD steps from identical weights: the same loss at every step, and the loss drops."""
    torch.manual_seed(0)
    # A 3x3 stride-1 second layer for the built-ins limited to those: 7x7 random targets to fit,
    # so a larger step for the loss to drop as clearly in 6 steps.
    k2, s2, lr = ((2, 3), 2, 0.05) if not _refuses(impl, (2, 3), dict(stride=2)) else (3, 1, 0.2)
    ref = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 2, k2, stride=s2, groups=2))
    mine = nn.Sequential(implementations.Conv2d(3, 6, 3, padding=1, impl=impl), nn.ReLU(),
                         implementations.Conv2d(6, 2, k2, stride=s2, groups=2, impl=impl))
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(4, 3, 9, 9)
    target = torch.randn(ref(x).shape)
    losses = {}
    for name, model in (("ref", ref), ("mine", mine)):
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        losses[name] = []
        for _ in range(6):
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), target)
            loss.backward()
            opt.step()
            losses[name].append(loss.item())
    torch.testing.assert_close(torch.tensor(losses["mine"]), torch.tensor(losses["ref"]), rtol=1e-4, atol=1e-6)
    assert losses["mine"][-1] < 0.9 * losses["mine"][0], losses["mine"]
    for p, q in zip(ref.parameters(), mine.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("impl", IMPLS)
def test_padding_modes(impl, padding_mode):
    for padding in (1, (2, 1), "same"):
        ref = nn.Conv2d(2, 3, (3, 4) if padding == "same" else 3, padding=padding, padding_mode=padding_mode,
                        dtype=torch.float64)
        mine = implementations.Conv2d.from_conv(ref, impl=impl)
        assert mine.padding_mode == padding_mode
        x = torch.randn(2, 2, 6, 7, dtype=torch.float64)
        if _refuses(impl, ref.kernel_size, {}):
            with pytest.raises(implementations.Unsupported):
                mine(x)
            continue
        torch.testing.assert_close(mine(x), ref(x), rtol=1e-10, atol=1e-10, msg=lambda m: f"{padding}: {m}")


@pytest.mark.parametrize("impl", IMPLS)
def test_unbatched_and_channels_last_input(impl):
    ref = nn.Conv2d(3, 4, 3, padding=1, dtype=torch.float64)
    mine = implementations.Conv2d.from_conv(ref, impl=impl)
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    assert mine(x).shape == (4, 5, 6)
    torch.testing.assert_close(mine(x), ref(x), rtol=1e-10, atol=1e-10)
    xb = torch.randn(2, 3, 5, 6, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    mine_cl = copy.deepcopy(mine).to(memory_format=torch.channels_last)
    torch.testing.assert_close(mine_cl(xb), ref(xb.contiguous()), rtol=1e-10, atol=1e-10)


def test_from_conv_copies_hyperparameters_and_weights():
    ref = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=2, groups=2, bias=False,
                    padding_mode="reflect")
    mine = implementations.Conv2d.from_conv(ref, impl="loop")
    assert (mine.in_channels, mine.out_channels, mine.kernel_size, mine.stride, mine.padding, mine.dilation,
            mine.groups, mine.bias, mine.padding_mode) == \
        (4, 6, (3, 2), (2, 1), (1, 2), (2, 2), 2, None, "reflect")
    torch.testing.assert_close(mine.weight, ref.weight, rtol=0, atol=0)
    assert mine.weight is not ref.weight


def test_default_impl_and_repr():
    conv = implementations.Conv2d(2, 3, 3)
    assert conv.impl == "unfold"
    assert "impl='unfold'" in repr(implementations.Conv2d(2, 3, 3, impl="unfold"))
    assert "impl='fft'" in repr(implementations.Conv2d(2, 3, 3, impl="fft"))


def test_unknown_impl_fails_at_construction():
    with pytest.raises(implementations.UnknownImplementation, match=r"no_such_impl.*cudnn.*fft.*loop.*unfold"):
        implementations.Conv2d(2, 3, 3, impl="no_such_impl")


def test_module_path_impl(tmp_path, monkeypatch, request):
    """impl may be "package.module:function", like get()."""
    (tmp_path / "convbench_module_impl.py").write_text(
        "import torch.nn.functional as F\n"
        "def conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):\n"
        "    return -F.conv2d(input, weight, bias, stride, padding, dilation, groups)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    request.addfinalizer(lambda: sys.modules.pop("convbench_module_impl", None))
    ref = nn.Conv2d(2, 3, 3)
    mine = implementations.Conv2d.from_conv(ref, impl="convbench_module_impl:conv")
    x = torch.randn(1, 2, 5, 5)
    torch.testing.assert_close(mine(x), -ref(x))
