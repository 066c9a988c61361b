"""Launchers that send a sweep's jobs elsewhere (SLURM, Ray, submitit_local), made to behave as a real
scheduler does: resources follow `device` (`gpus`), SLURM requests are checked against the partition
before submission and waited on with progress (`slurm`), and a job that is cancelled, fails or is lost
is recorded here instead of crashing the sweep, so the callback still aggregates what finished and
prints the `resume=true` command that completes it.

The launcher classes import their plug-ins (submitit, Ray) lazily: this package imports neither."""
from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from omegaconf import DictConfig


@dataclass
class Unfinished:
    """A job that did not finish: its number, the scheduler's id and state, and why."""
    job: int
    state: str
    reason: str
    job_id: str = ""


# Filled by the launchers during the sweep, read by ConvbenchCallback.on_multirun_end (same process).
UNFINISHED: list[Unfinished] = []


def record_unfinished(job: int, state: str, reason: str, job_id: str = "") -> None:
    UNFINISHED.append(Unfinished(job, state, reason, job_id))


def completed_return(overrides: Sequence[str], cfg: Optional[DictConfig] = None) -> Any:
    """A JobReturn Hydra's sweeper accepts for a job that did not finish: a failed JobReturn would make
    the sweeper raise, and then `on_multirun_end` (aggregate, report) would never run."""
    from hydra.core.utils import JobReturn, JobStatus
    ret = JobReturn(overrides=list(overrides), cfg=cfg, status=JobStatus.COMPLETED)
    ret.return_value = None
    return ret


def resume_command(config: DictConfig) -> str:
    """The command line that re-runs this sweep into its folder with resume=true (finished jobs and
    cases are kept, the rest is measured)."""
    hydra_over = [o for o in config.hydra.overrides.hydra
                  if not o.startswith(("hydra.sweep.dir=", "hydra.mode="))]
    task_over = [o for o in config.hydra.overrides.task if not o.startswith(("resume=", "+resume="))]
    args = ["python", "-m", "harness", "-m", *hydra_over, *task_over,
            f"hydra.sweep.dir={config.hydra.sweep.dir}", "resume=true"]
    return " ".join(shlex.quote(str(a)) for a in args)


def report_unfinished(config: DictConfig) -> int:
    """Print the jobs that did not finish and the command that completes the sweep; 1 if any."""
    if not UNFINISHED:
        return 0
    jobs = sorted(UNFINISHED, key=lambda u: u.job)
    print(f"convbench: {len(jobs)} job(s) did not finish; the table above holds every row they wrote "
          "before they stopped:", file=sys.stderr)
    for u in jobs:
        ident = f" ({u.job_id})" if u.job_id else ""
        print(f"  job {u.job}{ident}: {u.state}: {u.reason}", file=sys.stderr)
    print("Complete the sweep (finished jobs and cases are kept) with:", file=sys.stderr)
    print(f"  {resume_command(config)}", file=sys.stderr, flush=True)
    UNFINISHED.clear()
    return 1


def register() -> None:
    """Register the launcher configs (conf/launcher/*.yaml select them) when their plug-ins are installed;
    hydra_plugins/convbench_launchers calls it during Hydra's plug-in scan."""
    try:
        from . import local, slurm
    except ImportError:  # hydra-submitit-launcher absent: +launcher=slurm then says the option is missing
        return
    slurm.register()
    local.register()
