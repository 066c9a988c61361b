"""Hydra's hooks around a sweep. `on_multirun_end` hands over to `harness.finish` (aggregate, link,
report, summary). `on_multirun_start` checks every swept `impl` and `device` value before the
first job, so a typo fails the sweep at once instead of after hours of other jobs."""
from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .finish import finish
from .measure.names import check_impls
from .overrides import check_overrides, swept_values


def check_sweep(config: DictConfig) -> None:
    """Fail before any job if a swept value is invalid: every value the schema checks (including those
    of `hydra.sweeper.params`, which the command-line check does not see), then plugins and impl names.
    Values are read as Hydra reads them (`harness.overrides`): dotted paths and quotes work anywhere."""
    overrides = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    overrides += list(config.hydra.overrides.task)
    check_overrides(overrides)
    plugins = []
    for value in swept_values(overrides, "plugins") or [config.get("plugins") or []]:
        plugins += [p for p in (list(value) if not isinstance(value, str) else [value]) if p not in plugins]
    # in a checking process when plug-ins are involved: this process (under the basic launcher also
    # every job's) never imports one (harness.measure.names)
    check_impls([str(i) for i in swept_values(overrides, "impl") or [config.impl]], plugins)


PARALLEL_LAUNCHERS = ("LocalLauncher", "joblib", "ray")  # submitit_local, joblib, Ray


def overlap_warnings(config: DictConfig) -> list[str]:
    """What the launcher config predicts about jobs sharing a device (the rows record what happened)."""
    target = str(config.hydra.launcher.get("_target_", ""))
    notes = []
    if (any(name in target.lower() for name in (n.lower() for n in PARALLEL_LAUNCHERS))
            and config.hydra.sweeper.get("max_batch_size") != 1 and not config.get("allow_concurrent")):
        notes.append(f"{target.rsplit('.', 1)[-1]} may run several jobs at once: rows timed while another job "
                     "shares the device are marked concurrent=True. hydra.sweeper.max_batch_size=1 runs them "
                     "one at a time; allow_concurrent=true accepts the overlap.")
    ray_gpus = OmegaConf.select(config, "hydra.launcher.ray.remote.num_gpus", default=None)
    if "ray" in target.lower() and ray_gpus == 0 and str(config.get("device", "")) != "cpu":
        notes.append("hydra.launcher.ray.remote.num_gpus=0 with a CUDA device: Ray gives such tasks no GPU "
                     "(convbench hides them, so the jobs run on the CPU or skip). Leave num_gpus null: each "
                     "CUDA job then holds one GPU")
    slurm = OmegaConf.select(config, "hydra.launcher", default={}) if "slurm" in target.lower() else {}
    if (slurm and slurm.get("exclusive") is False and not slurm.get("gpus_per_node")
            and (slurm.get("array_parallelism") or 1) > 1 and not config.get("allow_concurrent")):
        notes.append("SLURM CPU jobs with hydra.launcher.exclusive=false may share a node's cores: such rows are "
                     "marked concurrent=True. Leave exclusive null (a whole node per CPU job) or set "
                     "hydra.launcher.array_parallelism=1")
    return notes


def resume_warnings(config: DictConfig) -> list[str]:
    """resume=true into a folder with no earlier jobs resumes nothing: say so, it is usually a missing
    hydra.sweep.dir=<the sweep>."""
    sweep_dir = Path(str(config.hydra.sweep.dir))
    if config.get("resume") and not (sweep_dir.is_dir() and any(sweep_dir.rglob("job_config.json"))):
        return [f"resume=true, but {sweep_dir} holds no earlier jobs: everything runs. Resume a sweep with "
                "hydra.sweep.dir=<its folder> and the same sweep arguments."]
    return []


class ConvbenchCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns a callback's Exception into a warning and carries on; SystemExit stops it.
        try:
            check_sweep(config)
        except Exception as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                traceback.print_exc()
            print(f"convbench: invalid sweep: {exc}", file=sys.stderr)
            raise SystemExit(2) from exc
        for note in overlap_warnings(config) + resume_warnings(config):
            print(f"convbench: warning: {note}", file=sys.stderr)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        code = finish(sweep_dir, config.get("results_link"), bool(config.get("strict")))
        from .launch import report_unfinished
        code = report_unfinished(config) or code  # jobs the launcher lost: say so and how to complete the sweep
        if code:
            raise SystemExit(code)
