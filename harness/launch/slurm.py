"""SLURM as a real scheduler behaves: hydra-submitit-launcher's SlurmLauncher, with

- requests that follow `device`: a CPU job asks for no GPU and gets a whole node (`--exclusive`), so no
  two CPU timings share cores; a GPU job asks for one GPU (SLURM then shows it only that one);
- a check of the request against the partition (`sinfo`) before anything is submitted, whose message
  names the override that makes it fit (a request that cannot fit would otherwise pend forever);
- waiting by polling `squeue` (no accounting needed): progress with SLURM's pending reasons, and a job
  that is cancelled, fails, is lost or can never start ends the wait in bounded time. It is recorded
  (harness.launch.UNFINISHED) instead of raised, so the sweep still aggregates what finished and
  prints the `resume=true` command that completes it.

conf/launcher/slurm.yaml selects it (hydra/launcher=convbench_slurm, registered by `register`)."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

from . import completed_return, record_unfinished
from .gpus import check_launcher_device, gpus_for, job_device

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
            "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT"}
# Pending reasons that mean the job can never start as submitted (SLURM would keep it pending forever).
NEVER_STARTS = {"PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints",
                "InvalidAccount", "InvalidQOS", "DependencyNeverSatisfied", "QOSMaxCpuPerJobLimit",
                "QOSMaxGRESPerJob", "QOSMaxMemoryPerJob", "AssocMaxCpuPerJobLimit", "AssocMaxMemPerJobLimit",
                "AssocMaxGRESPerJob", "QOSMaxWallDurationPerJobLimit", "AssocMaxWallDurationPerJobLimit"}
RESULT_GRACE_S = 15.0    # a finished job's result file may reach a shared file system late
UNKNOWN_GRACE_S = 20.0   # a job just submitted may not be listed by squeue yet
NO_ANSWER_LIMIT_S = 600.0  # squeue failing this long: the remaining jobs are reported lost
OURS = ("preflight", "poll_max_s")  # fields of ConvbenchSlurmConf that are not submitit parameters


@dataclass
class ConvbenchSlurmConf(SlurmQueueConf):
    """hydra-submitit-launcher's SLURM config plus convbench's fields; null means "follow device"."""
    _target_: str = "hydra_plugins.convbench_launchers.ConvbenchSlurmLauncher"
    gpus_per_node: Optional[int] = None   # null: 1 for device=cuda (or auto on a GPU partition), else 0
    exclusive: Optional[bool] = None      # null: CPU jobs get a whole node (no shared cores), GPU jobs do not
    cpus_per_task: Optional[int] = 2
    mem_gb: Optional[int] = None          # null: nothing asked for a whole node (it has all), else 8
    preflight: bool = True                # check the request against the partition (sinfo) before sbatch
    poll_max_s: float = 30.0              # longest pause between two squeue polls while waiting


def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------------- preflight
@dataclass
class Node:
    partition: str
    default: bool
    up: bool
    time_min: Optional[float]   # None: no limit
    cpus: int
    mem_mb: int
    gpus: int
    name: str


def _minutes(limit: str) -> Optional[float]:
    """sinfo's time limit ('infinite', 'D-HH:MM:SS', 'HH:MM:SS', 'MM:SS', 'MM') in minutes."""
    if limit in ("infinite", "UNLIMITED", "n/a", ""):
        return None
    days, _, rest = limit.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    h, m, s = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
    return (int(days or 0) * 24 + h) * 60 + m + s / 60


def _gpus(gres: str) -> int:
    """GPUs in a node's gres string ('(null)', 'gpu:4', 'gpu:a100:4(S:0-1),shard:8')."""
    return sum(int(n) for n in re.findall(r"(?:^|,)gpu(?::[^:,()]+)?:(\d+)", gres))


def read_nodes() -> list[Node]:
    """Every (partition, node) pair SLURM knows, from `sinfo`."""
    try:
        proc = _run(["sinfo", "-h", "-N", "-o", "%P|%a|%l|%c|%m|%G|%N"])
    except FileNotFoundError:
        raise ValueError("`sinfo` not found: run the SLURM launcher where SLURM's commands work (a login "
                         "node), or submit without the check with hydra.launcher.preflight=false") from None
    if proc.returncode:
        raise ValueError(f"`sinfo` failed, is SLURM up? {proc.stderr.strip()}")
    nodes = []
    for line in proc.stdout.splitlines():
        part, avail, limit, cpus, mem, gres, name = line.split("|")
        nodes.append(Node(part.rstrip("*"), part.endswith("*"), avail == "up", _minutes(limit),
                          int(re.match(r"\d+", cpus).group()), int(re.match(r"\d+", mem).group()), _gpus(gres), name))
    return nodes


def check_fits(nodes: list[Node], partition: Optional[str], cpus: int, mem_gb: Optional[float], gpus: int,
               timeout_min: float) -> str:
    """The partition the jobs go to, or ValueError saying what does not fit and what to override."""
    names = sorted({n.partition for n in nodes})
    if partition is None:
        default = [n.partition for n in nodes if n.default]
        if not default:
            raise ValueError(f"SLURM has no default partition: choose one with hydra.launcher.partition=<name> "
                             f"(partitions: {', '.join(names)})")
        partition = default[0]
    ours = [n for n in nodes if n.partition == partition]
    if not ours:
        raise ValueError(f"SLURM has no partition {partition!r}: set hydra.launcher.partition to one of "
                         f"{', '.join(names)}")
    mem_mb = (mem_gb or 0) * 1024

    def fits(n: Node) -> bool:
        return (n.cpus >= cpus and n.mem_mb >= mem_mb and n.gpus >= gpus
                and (n.time_min is None or n.time_min >= timeout_min))

    if any(fits(n) for n in ours):
        return partition
    most_cpus, most_mem, most_gpus = (max(getattr(n, k) for n in ours) for k in ("cpus", "mem_mb", "gpus"))
    limits = [n.time_min for n in ours]
    problems = []
    if cpus > most_cpus:
        problems.append(f"{cpus} CPUs, but its largest node has {most_cpus}: hydra.launcher.cpus_per_task={most_cpus}")
    if mem_mb > most_mem:
        problems.append(f"{mem_gb:g} GB of memory, but its largest node has {most_mem // 1024} GB: "
                        f"hydra.launcher.mem_gb={max(most_mem // 1024, 1)}")
    if gpus > most_gpus:
        problems.append(f"{gpus} GPU(s), but " + ("no node of it has a GPU" if not most_gpus else
                        f"its nodes have at most {most_gpus}") +
                        ": run on the CPU with device=cpu, or pick a GPU partition with hydra.launcher.partition=...")
    if all(t is not None for t in limits) and timeout_min > max(limits):
        problems.append(f"{timeout_min:g} minutes, but its time limit is {max(limits):g}: "
                        f"hydra.launcher.timeout_min={int(max(limits))}")
    if not problems:
        problems.append("no single node has all of it at once")
    raise ValueError(f"the SLURM jobs cannot run on partition {partition!r}: each asks for "
                     + "; ".join(problems))


# ------------------------------------------------------------------------------------- launcher
class ConvbenchSlurmLauncher(SlurmLauncher):
    """SlurmLauncher whose requests follow each job's device, checked before submission, waited on
    with progress and bounded when jobs are lost (module docstring)."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.ours = {k: self.params.pop(k) for k in OURS if k in self.params}

    # -- what each job asks for
    def requests(self, job_overrides: Sequence[Sequence[str]], has_gpu: bool) -> list[dict]:
        """Per job: the submitit parameters that depend on its device."""
        out = []
        for overrides in job_overrides:
            device = job_device(self, overrides)
            check_launcher_device(device, "SLURM")
            p = self.params
            gpus = p.get("gpus_per_node")
            gpus = gpus_for(device, has_gpu) if gpus is None else gpus
            exclusive = p.get("exclusive")
            exclusive = (gpus == 0) if exclusive is None else exclusive
            mem = p.get("mem_gb")
            mem = (None if exclusive else 8) if mem is None else mem
            out.append({"gpus_per_node": gpus or None, "exclusive": exclusive or None, "mem_gb": mem})  # None: no flag
        return out

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
        import submitit
        from hydra.core.singleton import Singleton
        from hydra.core.utils import filter_overrides

        assert self.config is not None
        partition = self.params.get("partition")
        nodes = None
        if self.ours.get("preflight", True):
            try:
                nodes = read_nodes()
            except ValueError as exc:
                raise SystemExit(f"convbench: {exc}") from None
        part_nodes = [n for n in nodes or [] if n.partition == partition or (partition is None and n.default)]
        try:
            requests = self.requests(job_overrides, has_gpu=any(n.gpus for n in part_nodes))
        except ValueError as exc:
            raise SystemExit(f"convbench: {exc}") from None
        groups: dict[tuple, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(tuple(sorted(req.items())), []).append(i)
        if nodes is not None:
            for key in groups:
                req = dict(key)
                try:
                    check_fits(nodes, partition, (self.params.get("cpus_per_task") or 1) *
                               (self.params.get("tasks_per_node") or 1), req["mem_gb"], req["gpus_per_node"] or 0,
                               self.params.get("timeout_min") or 0)
                except ValueError as exc:
                    raise SystemExit(f"convbench: {exc}. Nothing was submitted.") from None

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        base = {"timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb", "nodes", "name",
                "stderr_to_stdout"}
        for key, members in groups.items():
            req = dict(key)
            for i in members:
                print(f"convbench: SLURM job #{initial_job_idx + i}: {' '.join(filter_overrides(job_overrides[i]))} "
                      f"({req['gpus_per_node'] or 0} GPU{', whole node' if req['exclusive'] else ''})", file=sys.stderr)
        jobs: dict[int, Any] = {}
        for key, members in groups.items():
            req = dict(key)
            executor = submitit.AutoExecutor(cluster="slurm", folder=self.params["submitit_folder"],
                                             slurm_max_num_timeout=self.params.get("max_num_timeout", 0))
            params = {k: v for k, v in {**self.params, **req}.items() if k not in ("submitit_folder", "max_num_timeout")}
            executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
            if not req["gpus_per_node"] and not req["exclusive"] and (self.params.get("array_parallelism") or 1) > 1:
                print("convbench: warning: CPU jobs without hydra.launcher.exclusive may share a node's cores: "
                      "their rows are then marked concurrent=True", file=sys.stderr)
            args = []
            for i in members:
                idx = initial_job_idx + i
                args.append((list(job_overrides[i]), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
            try:
                submitted = executor.map_array(self, *zip(*args))
            except Exception as exc:  # sbatch refused: say so; jobs already submitted still count
                if not jobs:
                    raise SystemExit(f"convbench: SLURM refused the jobs: {exc}".rstrip()) from None
                for i in members:
                    record_unfinished(initial_job_idx + i, "NOT SUBMITTED", f"sbatch refused it: {exc}")
                continue
            jobs.update(zip(members, submitted))
        ids = sorted({j.job_id.split("_")[0] for j in jobs.values()})
        if ids:
            print(f"convbench: submitted SLURM job {', '.join(ids)}; waiting (Ctrl-C stops waiting, not the jobs)",
                  file=sys.stderr, flush=True)
        try:
            outcome = wait(jobs, initial_job_idx, self.ours.get("poll_max_s", 30.0))
        except KeyboardInterrupt:
            print(f"convbench: stopped waiting; the jobs keep running (scancel {' '.join(ids)} stops them). "
                  f"When they end: python -m harness.aggregate {sweep_dir}  (or re-run with resume=true)",
                  file=sys.stderr)
            raise
        return [collect(jobs.get(i), outcome.get(i), job_overrides[i], initial_job_idx + i)
                for i in range(len(job_overrides))]


# ------------------------------------------------------------------------------------- waiting
def squeue(ids: Sequence[str]) -> Optional[dict[str, tuple[str, str]]]:
    """{job id (e.g. 7_3): (state, reason)} for these jobs and their array tasks, finished ones included
    while SLURM remembers them; None when squeue does not answer."""
    states: dict[str, tuple[str, str]] = {}
    for master in ids:
        try:
            proc = _run(["squeue", "-h", "-r", "--states=all", "-j", master, "-o", "%i|%T|%r"], timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if proc.returncode and "Invalid job id" not in proc.stderr:
            return None
        for line in proc.stdout.splitlines():
            job_id, state, reason = (line.split("|") + ["", ""])[:3]
            states[job_id.strip()] = (state.strip(), reason.strip())
    return states


def wait(jobs: dict[int, Any], first: int, poll_max_s: float = 30.0) -> dict[int, tuple[str, str]]:
    """Poll until every job has a result or is known not to produce one. Returns {index: (state, reason)}
    for the jobs that did not finish (state e.g. CANCELLED, LOST, NEVER STARTS)."""
    lost: dict[int, tuple[str, str]] = {}
    seen_end: dict[int, float] = {}       # when a job was first seen ended (or absent)
    stuck: dict[int, int] = {}            # consecutive polls pending with a NEVER_STARTS reason
    start = last_answer = last_print = time.monotonic()
    pause, last_line = 1.0, ""
    while True:
        now = time.monotonic()
        open_jobs = {i: j for i, j in jobs.items() if i not in lost and not j.paths.result_pickle.exists()}
        if not open_jobs:
            break
        states = squeue(sorted({j.job_id.split("_")[0] for j in open_jobs.values()}))
        if states is None:
            if now - last_answer > NO_ANSWER_LIMIT_S:
                for i in open_jobs:
                    lost[i] = ("LOST", f"SLURM did not answer squeue for {NO_ANSWER_LIMIT_S / 60:g} minutes")
                break
        else:
            last_answer = now
            for i, job in open_jobs.items():
                state, reason = states.get(job.job_id, ("", ""))
                if state == "PENDING" and reason in NEVER_STARTS:
                    stuck[i] = stuck.get(i, 0) + 1
                    if stuck[i] >= 2:
                        _run(["scancel", job.job_id])
                        lost[i] = ("NEVER STARTS", f"pending with reason {reason}: the partition cannot run this "
                                   "request (check hydra.launcher.cpus_per_task, mem_gb, gpus_per_node, timeout_min "
                                   "against `sinfo -N -l`)")
                    continue
                if state in TERMINAL or (not state and now - start > UNKNOWN_GRACE_S):
                    seen_end.setdefault(i, now)
                    if now - seen_end[i] > RESULT_GRACE_S:
                        lost[i] = (state or "LOST", _why(state, reason))
        counts = _progress(jobs, lost, states)
        line = f"convbench: SLURM {len(jobs)} jobs: {counts}"
        if line != last_line or now - last_print > 300:
            print(f"{line}  [{now - start:.0f} s]", file=sys.stderr, flush=True)
            last_line, last_print, pause = line, now, 1.0
        else:
            pause = min(pause * 1.5, poll_max_s)
        time.sleep(pause)
    line = f"convbench: SLURM {len(jobs)} jobs: {_progress(jobs, lost, None)}"
    if line != last_line:
        print(f"{line}  [{time.monotonic() - start:.0f} s]", file=sys.stderr, flush=True)
    return lost


def _why(state: str, reason: str) -> str:
    if state == "CANCELLED":
        return "cancelled (scancel, or by an administrator)"
    if state == "TIMEOUT":
        return "ran past hydra.launcher.timeout_min"
    if state == "OUT_OF_MEMORY":
        return "ran out of memory: raise hydra.launcher.mem_gb"
    if not state:
        return "SLURM no longer knows the job and it wrote no result (cancelled, killed or timed out)"
    return f"ended {state} without a result" + (f" ({reason})" if reason and reason != "None" else "")


def _progress(jobs: dict[int, Any], lost: dict, states: Optional[dict]) -> str:
    """'2 pending (Resources), 1 running, 1 done, 1 lost'."""
    done = sum(1 for i, j in jobs.items() if i not in lost and j.paths.result_pickle.exists())
    pending, running, reasons = 0, 0, set()
    for i, job in jobs.items():
        if i in lost or job.paths.result_pickle.exists() or states is None:
            continue
        state, reason = states.get(job.job_id, ("", ""))
        if state == "PENDING":
            pending += 1
            if reason and reason != "None":
                reasons.add(reason)
        elif state and state not in TERMINAL:
            running += 1
    parts = [f"{pending} pending" + (f" ({', '.join(sorted(reasons))})" if reasons else "")] if pending else []
    parts += [f"{running} running"] if running else []
    parts += [f"{done} done"]
    parts += [f"{len(lost)} did not finish"] if lost else []
    return ", ".join(parts)


def collect(job: Any, lost: Optional[tuple[str, str]], overrides: Sequence[str], job_num: int) -> Any:
    """The job's JobReturn, or (recorded as unfinished) a completed stand-in that the sweeper accepts."""
    from hydra.core.utils import JobStatus
    from submitit.core.utils import pickle_load
    if job is None:
        return completed_return(overrides)
    if lost is not None:
        record_unfinished(job_num, lost[0], lost[1], job.job_id)
        return completed_return(overrides)
    try:
        outcome, result = pickle_load(job.paths.result_pickle)
    except Exception as exc:  # a half-written or unreadable result file
        record_unfinished(job_num, "NO RESULT", f"cannot read {job.paths.result_pickle}: {exc}", job.job_id)
        return completed_return(overrides)
    if outcome != "success":
        last = str(result).strip().splitlines()[-1:] or [""]
        record_unfinished(job_num, "FAILED", f"{last[0]} (log: {job.paths.stderr})", job.job_id)
        return completed_return(overrides)
    if getattr(result, "status", None) == JobStatus.FAILED:
        record_unfinished(job_num, "FAILED", f"{result._return_value!r} (log: {job.paths.stderr})", job.job_id)
        return completed_return(overrides, result.cfg)
    return result


def register() -> None:
    """Make `hydra/launcher=convbench_slurm` known (conf/launcher/slurm.yaml selects it)."""
    from hydra.core.config_store import ConfigStore
    ConfigStore.instance().store(group="hydra/launcher", name="convbench_slurm", node=ConvbenchSlurmConf,
                                 provider="convbench")
