"""The config schema through Hydra's compose: what is valid composes, typos and bad values fail
before anything runs, with messages that list the options."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, HydraException

import implementations
from harness.measure.cases import label, output_size, scale_batch
from harness.callbacks import check_sweep
from harness.config import Config, DType, Method, Pass, to_config

SUITES = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "conf" / "suite").glob("*.yaml"))


def test_defaults(compose):
    cfg = compose(hydra=True)
    assert set(cfg.hydra.sweeper.params.impl.split(",")) == {"loop", "unfold", "fft", "cudnn", "winograd"}
    conf = _conf(compose)
    assert isinstance(conf, Config)
    assert conf.dtype == DType.float32 and conf.device == "auto" and not conf.allow_tf32
    assert conf.passes == [Pass.forward, Pass.backward]
    assert len({label(s) for s in conf.suite.shapes}) >= 30  # make bench's distinct shapes


def _conf(compose, *overrides):
    return to_config(compose(*overrides))


def test_valid_overrides(compose):
    conf = _conf(compose, "dtype=bfloat16", "device=cuda:1", "passes=[forward]", "batch=4", "suite=resnet50",
                 "timing.method=adaptive", "threads=1", "budget_s=0.5", "plugins=[a_module]", "impl=pkg.mod:fn")
    assert conf.dtype.torch.is_floating_point and conf.dtype == DType.bfloat16
    assert conf.passes == [Pass.forward] and conf.timing.method == Method.adaptive
    assert max(s.n for s in scale_batch(conf.suite.shapes, conf.batch)) == 4
    assert conf.plugins == ["a_module"] and conf.impl == "pkg.mod:fn"


@pytest.mark.parametrize("suite", SUITES)
def test_every_suite_loads(compose, suite):
    shapes = _conf(compose, f"suite={suite}").suite.shapes
    labels = [label(s) for s in shapes]
    assert len(set(labels)) == len(labels), "duplicate shapes"
    assert len({s.layer for s in shapes}) == len(shapes), "duplicate layer names"
    assert all(min(output_size(s)) >= 1 for s in shapes)


def test_suite_contents(compose):
    l15 = [(s.n, s.c_in, s.h, s.c_out, s.kernel[0]) for s in _conf(compose, "suite=convnet_benchmarks").suite.shapes]
    assert l15 == [(128, 3, 128, 96, 11), (128, 64, 64, 128, 9), (128, 128, 32, 128, 9), (128, 128, 16, 128, 7),
                   (128, 384, 13, 384, 3)]
    assert len(_conf(compose, "suite=resnet50").suite.shapes) == 23
    assert any(s.groups == s.c_in > 1 for s in _conf(compose, "suite=mobilenet_v2").suite.shapes)
    kernels = [s.kernel[0] for s in _conf(compose, "suite=kernels").suite.shapes]
    assert kernels[0] == 1 and kernels[-1] == 31
    scaling = _conf(compose, "suite=scaling").suite.shapes
    assert {s.h for s in scaling} >= {8, 256} and {s.n for s in scaling} >= {1, 64}


def test_bad_enum_value_lists_options(compose):
    with pytest.raises(ConfigCompositionException) as err:
        compose("dtype=float8")
    assert "float32" in str(err.value.__cause__) and "bfloat16" in str(err.value.__cause__)


def test_typo_in_key_fails(compose):
    with pytest.raises(ConfigCompositionException, match="dtpye"):
        compose("dtpye=float64")


def test_unknown_suite_lists_options(compose):
    with pytest.raises(HydraException) as err:
        compose("suite=resnet5")
    assert "resnet50" in str(err.value) and "smoke" in str(err.value)


def test_bad_shape_field_type(compose):
    with pytest.raises(ConfigCompositionException):
        compose("suite.shapes.0.n=many")


def test_bad_device_lists_options(compose):
    with pytest.raises(ValueError, match="cpu, cuda, cuda:N, mps, auto"):
        _conf(compose, "device=gpu")


def test_bad_values_caught_by_checks(compose):
    for override, match in [("batch=0", "batch"), ("budget_s=0", "budget_s"), ("passes=[]", "passes")]:
        with pytest.raises(ValueError, match=match):
            _conf(compose, override)
    with pytest.raises(ConfigCompositionException) as err:
        compose("passes=[sideways]")
    assert "forward" in str(err.value.__cause__) and "backward" in str(err.value.__cause__)


def test_sweep_checked_before_any_job(compose):
    """A typo among swept impls fails at on_multirun_start, listing the known names."""
    cfg = compose(hydra=True)
    cfg.hydra.overrides.task = ["impl=loop,cudnnn"]
    with pytest.raises(implementations.UnknownImplementation, match="known implementations: .*cudnn, fft"):
        check_sweep(cfg)
    cfg.hydra.overrides.task = ["impl=loop,cudnn", "device=cpu,tpu"]
    with pytest.raises(ValueError, match="tpu"):
        check_sweep(cfg)
    cfg.hydra.overrides.task = ["impl=loop,cudnn"]
    check_sweep(cfg)
