"""`python -m harness` / `convbench`: the Hydra app. One job = one (impl, suite, device, dtype).

    python -m harness -m impl=loop,unfold,fft,cudnn suite=resnet50 batch=4 dtype=float32,float64

In a multirun the `ConvbenchCallback` aggregates, reports and summarises after the last job; a single
run (no -m) does the same for its one job."""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from .capture import expand_suite
from .config import register_configs, to_config
from .measure.names import check_impls
from .configs import builtin_dir

register_configs()


def _sweep_name(sweep_dir: Path) -> str:
    sweep_dir = sweep_dir.resolve()  # `hydra.sweep.dir=results/latest` (a resume) names the real sweep
    return f"{sweep_dir.parent.name}/{sweep_dir.name}"


# An absolute path: `python -m harness` and the `convbench` console script find the same configs, from
# any folder, in a checkout or an installed wheel; ./conf and ./convbench extend them (hydra.searchpath).
CONF_DIR = str(builtin_dir())
# A project without ./conf or ./convbench is the usual case, not worth Hydra's warning.
warnings.filterwarnings("ignore", r"provider=hydra\.searchpath in main, path=(conf|convbench) is not available")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def app(cfg: DictConfig) -> int:
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        conf = to_config(cfg)      # runs the schema's checks before anything is measured
        if not multirun:           # a multirun checked every impl in on_multirun_start; plug-ins are
            check_impls([conf.impl], conf.plugins)  # imported only in worker (and checking) processes
        conf = expand_suite(conf)  # suite=model: capture the model's conv shapes (harness.capture)
    except ValueError as exc:      # ConfigError, UnknownImplementation, CaptureError: their messages say what is allowed
        usage_error(exc)
    sweep_dir = Path(hc.sweep.dir) if multirun else out_dir
    from .measure.job import run_job
    run_job(conf, out_dir, sweep=_sweep_name(sweep_dir), job=hc.job.num if multirun else 0, sweep_dir=sweep_dir)
    if multirun:
        return 0
    from .finish import finish
    code = finish(out_dir, conf.results_link, conf.strict)
    if code:
        sys.exit(code)
    return 0


def usage_error(exc: BaseException) -> None:
    """A bad configuration value: one line and exit status 2, like a bad name; the traceback only
    with HYDRA_FULL_ERROR=1."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise exc
    print(f"convbench: {exc}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    """Console-script entry point (`convbench`): the command line's values are checked against the
    schema before Hydra composes (and would print a traceback for) them."""
    from .overrides import check_command_line
    problem = check_command_line(sys.argv[1:])
    if problem is not None:
        usage_error(problem)
    app()


if __name__ == "__main__":
    main()
