"""The measuring side of a job, run in a worker process that the job process supervises
(harness.measure.supervise, `serve`): the only place where plug-ins are imported and
implementations are called, so a crash, a hang or a patched torch ends here.

Protocol over the connection (pickles): the job sends a `WorkerSpec`; the worker answers
("ready", status, message) once the plug-ins are imported and the implementation resolved (a status
means no case can run); then per ("case", Shape) it sends ("deadline", phase, seconds, done) as
each phase of the case starts (None: no budget; `done`: passes already final) and finally
("result", {pass: PassResult}, tampered). ("repeat", Shape, passes) asks for the warm rounds of
those passes only (harness.measure.passes.repeat_case), answered the same way. ("stop",) or EOF ends it."""
from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from multiprocessing.connection import Connection
from typing import Callable, Optional

import torch

import implementations

from harness.config import Shape, import_plugins
from harness.table.schema import Status

from . import guard
from .concurrency import DeviceClaim
from .devices import on_device
from .fresh import warm_libraries
from .machine import GpuProbe
from .passes import CaseSettings, PassResult, error_text, repeat_case, run_case, torch_settings


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to measure one job: small, picklable, no plug-in objects."""
    impl: str
    modules: tuple[str, ...]           # plug-in modules to import first (their @register runs)
    device: str                        # resolved: 'cpu', 'cuda:0'
    settings: CaseSettings
    cudnn_benchmark: bool = True
    allow_tf32: bool = False
    claim: Optional[tuple[str, str, bool]] = None   # the job's DeviceClaim: (folder, own entry, allow)
    probe: bool = False                # read GPU clocks around timings (CUDA)
    warm: bool = True                  # load the shared libraries once before the cases
    memory_limit: Optional[int] = None  # bytes of address space beyond the worker's start-up (RLIMIT_AS)
    sys_path: tuple[str, ...] = ()


def _note(r: PassResult, text: str, status: Optional[Status] = None) -> None:
    """Add `text` to the row's message: first when it sets the status, else after what is there."""
    parts = [text, r.message] if status is not None else [r.message, text]
    r.message = "; ".join(p for p in parts if p)
    if status is not None:
        r.status = status


MEMORY_WORDS = ("can't allocate memory", "MemoryError", "out of memory", "std::bad_alloc")


class JobWorker:
    """One job's cases on one interpreter: resolve the implementation, then per case reset torch's
    global state, run every pass (harness.measure.passes.run_case) and check that torch's own
    functions and switches are as they were (harness.measure.guard)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.own = guard.TorchOwn()  # before any plug-in is imported
        self.device = torch.device(spec.device)
        self.stack = contextlib.ExitStack()
        self.fn: Optional[Callable] = None

    def start(self) -> tuple[Optional[Status], str]:
        """(status, message) when no case of the job can run, else (None, '')."""
        spec = self.spec
        try:
            import_plugins(list(spec.modules))
            self.fn = implementations.get(spec.impl)
            reason = implementations.unsupported_reason(self.fn, self.device, spec.settings.dtype)
        except Exception as exc:
            return Status.error, error_text(exc)
        tampered = self.own.changes()
        if tampered:
            return Status.error, "; ".join(tampered) + " when the plug-ins were imported: nothing they compute is trusted"
        if reason:
            return Status.unsupported, reason
        self.stack.enter_context(on_device(self.device))
        self.stack.enter_context(torch_settings(spec.cudnn_benchmark, spec.allow_tf32, spec.settings.threads))
        self.claim = None
        if spec.claim:
            folder, me, allow = spec.claim
            self.claim = DeviceClaim(folder, self.device, allow=True)  # the job process warns, not the worker
            self.claim.folder, self.claim.me = Path(folder), Path(me)  # the job's entry is not "another job"
        self.probe = GpuProbe(self.device) if spec.probe else None
        if spec.warm:
            warm_libraries(self.device, spec.settings.dtype)
        self.state = guard.GlobalState.capture(spec.settings.seed)
        return None, ""

    def case(self, shape: Shape, watch: Optional[Callable] = None,
             repeat: Optional[tuple[str, ...]] = None) -> tuple[dict[str, PassResult], bool]:
        """Every pass of one case (or, with `repeat`, those passes' warm rounds again); (results,
        whether torch's own functions were replaced)."""
        self.state.reset()
        if repeat is None:
            res = run_case(self.fn, shape, self.spec.settings, self.device, self.claim, self.probe, watch=watch)
        else:
            res = repeat_case(self.fn, shape, self.spec.settings, self.device, repeat, self.claim, self.probe,
                              watch=watch)
        tampered = self.own.changes()
        changed = self.state.restore()
        for r in res.values():
            if tampered:
                _note(r, "; ".join(tampered) + " during this case: its results are not trusted (the worker is "
                      "replaced before the next case)", Status.error)
            if changed:
                _note(r, "the implementation changed torch's global state (undone after the case): " + ", ".join(changed))
            if self.spec.memory_limit and r.status == Status.error and any(w in r.message for w in MEMORY_WORDS):
                _note(r, f"(the worker's address space is limited to {self.spec.memory_limit / 2**30:.3g} GiB "
                      "beyond its start-up: worker_memory_gb)")
        return res, bool(tampered)

    def close(self) -> None:
        self.stack.close()


class InProcess:
    """The Supervisor's interface without a process (`run_job(..., isolate=False)`): for a debugger
    and for tests that patch the harness's own functions. Nothing is isolated."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.worker = JobWorker(spec)

    def start(self) -> tuple[Optional[Status], str]:
        return self.worker.start()

    def run(self, shape: Shape, repeat: Optional[tuple[str, ...]] = None) -> dict[str, PassResult]:
        return self.worker.case(shape, repeat=repeat)[0]

    def __enter__(self) -> "InProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.worker.close()


def limit_memory(extra: Optional[int]) -> None:
    """RLIMIT_AS = what the worker maps now + `extra`: an implementation that allocates past it gets
    an allocation error (an `error` row) instead of the OOM killer's attention."""
    if not extra:
        return
    import resource
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = mapped + extra
    resource.setrlimit(resource.RLIMIT_AS, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def _become_worker(log_path: str, environ: dict) -> None:
    """stderr to the job's worker.log, faulthandler on, the job's environment; and die with the
    forkserver (which exits when the job process does: a kill -9, a cancelled SLURM job), so a hung
    worker does not run on."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass
    sys.stderr.flush()
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 2)  # the job reports the tail of it when this process dies
    faulthandler.enable()  # a crash prints the Python stack to stderr
    os.environ.clear()
    os.environ.update(environ)  # the job's (CUDA_VISIBLE_DEVICES), not the forkserver's


def serve_call(conn: Connection, log_path: str, environ: dict, fn: Callable, args: tuple) -> None:
    """One call in a worker (harness.measure.supervise.call_isolated): ("returned", value) or
    ("raised", exception) back, for tools that run implementations outside a job (harness.network)."""
    _become_worker(log_path, environ)
    try:
        reply = ("returned", fn(*args))
    except Exception as exc:
        reply = ("raised", exc)
    conn.send(reply)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def serve(conn: Connection, log_path: str, environ: dict) -> None:
    """The worker process's loop (the target harness.measure.supervise starts)."""
    _become_worker(log_path, environ)
    spec: WorkerSpec = conn.recv()
    sys.path[:] = list(spec.sys_path) or sys.path
    limit_memory(spec.memory_limit)
    worker = JobWorker(spec)
    conn.send(("ready", *worker.start()))

    def watch(phase: str, seconds: Optional[float], done: Optional[dict] = None) -> None:
        # SIGALRM (the budget) may be due while this runs: held back until the message is whole
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        try:
            conn.send(("deadline", phase, seconds, done))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)

    while True:
        try:
            msg = conn.recv()
        except EOFError:
            break
        if msg[0] == "case":
            conn.send(("result", *worker.case(msg[1], watch)))
        elif msg[0] == "repeat":
            conn.send(("result", *worker.case(msg[1], watch, repeat=tuple(msg[2]))))
        else:
            break
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown: the job is waiting, and nothing is left to save
