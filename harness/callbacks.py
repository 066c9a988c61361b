"""End of a sweep: aggregate the jobs, point `results/latest` at the sweep, build the report, print
the summary. The table is written first and nothing after it can lose it: a report failure is
printed, not raised.

`ConvbenchCallback.on_multirun_start` also checks every swept `impl` and `device` value before the
first job, so a typo fails the sweep at once instead of after hours of other jobs."""
from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Any, Iterable, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from .aggregate import aggregate
from .summary import summarize

STRICT_FAILURES = ("incorrect", "error")


def point_link(link: Path, target: Path) -> None:
    """Atomically (re)point the symlink `link` at `target` (relative, so the tree can move)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.exists() and not link.is_symlink():
        print(f"convbench: {link} exists and is not a symlink; not updating it")
        return
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target.resolve(), link.parent.resolve()), tmp)
    os.replace(tmp, link)


def build_report(sweep_dir: Path) -> Optional[Any]:
    """harness.report.write_report(sweep_dir), tolerating its absence and printing its failures."""
    try:
        from harness.report import write_report
    except ImportError as exc:
        print(f"convbench: no report ({exc})")
        return None
    try:
        return write_report(sweep_dir)
    except Exception:  # the table is already written; say what broke and go on
        print("convbench: building the report failed (the table is intact):")
        traceback.print_exc()
        return None


def finish(sweep_dir: Path, results_link: Optional[str] = "results/latest", strict: bool = False) -> int:
    """Aggregate, link, report, summarise. Returns the exit status: 1 when `strict` and any row is
    incorrect or error, else 0."""
    sweep_dir = Path(sweep_dir)
    df = aggregate(sweep_dir)
    if results_link:
        try:
            point_link(Path(results_link), sweep_dir)
        except OSError as exc:
            print(f"convbench: could not point {results_link} at {sweep_dir}: {exc}")
    report = build_report(sweep_dir)
    console = Console()
    if len(df):
        summarize(df, console)
    # plain print: paths must not be wrapped by rich, so they can be copied
    print(f"table:  {sweep_dir / 'results.parquet'}  ({len(df)} rows; also results.csv)")
    if report is not None:
        print(f"report: {report}")
    if results_link:
        print(f"latest: {results_link} -> {sweep_dir}")
    bad = df[df["status"].isin(STRICT_FAILURES)]
    if strict and len(bad):
        console.print(f"[bold red]strict: {len(bad)} incorrect/error rows[/]")
        return 1
    return 0


def _swept_values(overrides: Iterable[str], key: str) -> list:
    """Every value `key` takes in these override strings (sweeps expanded)."""
    values = []
    for o in OverridesParser.create().parse_overrides(list(overrides)):
        if o.key_or_group != key or o.is_delete():
            continue
        values.extend(o.sweep_string_iterator() if o.is_sweep_override() else [o.value()])
    return values


def check_sweep(config: DictConfig) -> None:
    """Fail before any job if a swept impl, device or plugin is invalid (messages list the options)."""
    from .config import _DEVICE_RE, DEVICES, check_impl, import_plugins
    overrides = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    overrides += list(config.hydra.overrides.task)
    for plugins in _swept_values(overrides, "plugins") or [config.get("plugins") or []]:
        import_plugins(list(plugins) if not isinstance(plugins, str) else [plugins])
    for device in _swept_values(overrides, "device"):
        if not _DEVICE_RE.match(str(device)):
            raise ValueError(f"device={device!r} is not valid; use one of: {', '.join(DEVICES)}")
    for impl in _swept_values(overrides, "impl") or [config.impl]:
        check_impl(str(impl))


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
            raise SystemExit(f"convbench: invalid sweep: {exc}") from exc
        for note in overlap_warnings(config) + resume_warnings(config):
            print(f"convbench: warning: {note}", file=sys.stderr)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        code = finish(sweep_dir, config.get("results_link"), bool(config.get("strict")))
        from .launch import report_unfinished
        code = report_unfinished(config) or code  # jobs the launcher lost: say so and how to complete the sweep
        if code:
            raise SystemExit(code)
