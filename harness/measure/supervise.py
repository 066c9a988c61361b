"""The job process's side of isolation: it starts a worker (harness.measure.worker) in a fresh
interpreter, hands it one case at a time and waits for its rows. A worker that dies (a signal,
os._exit, sys.exit, the OOM killer) or stops answering past its phase's budget plus a grace period
(a native call that never returns, which SIGALRM cannot interrupt) is killed; the case in flight
gets `crashed` rows (how it ended, the tail of its stderr) and the next case gets a new worker.

One worker serves every case of a job while it stays healthy (torch's import is paid once per job);
a worker in which torch's own functions were replaced is retired after its case. The worker's
stderr goes to `worker.log` in the job folder; its stdout is the job's."""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Callable, Optional

from harness.config import Shape
from harness.table.schema import Status, clip

from .passes import PassResult
from .worker import WorkerSpec, serve, serve_call

STARTUP_S = 300.0     # importing torch and the plug-ins; a safety net, not a measurement
UNBUDGETED_S = 300.0  # phases without a budget (the inputs and the float64 reference): a safety net
MIN_GRACE_S = 5.0     # past a pass's budget before the worker counts as hung: max(this, the budget)
TAIL_LINES = 6
EXIT_S = 10.0         # for a worker whose connection closed to exit, before it counts as hung


def _context():
    """Workers are forked from a forkserver: a fresh interpreter started once per job process that has
    imported torch and the harness but never a plug-in nor run an implementation, so each worker
    starts pristine without paying torch's import (~1.5 s) again; nothing a worker does reaches the
    server or another worker."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["harness.measure.worker"])
    return ctx


@contextlib.contextmanager
def _main_left_alone():
    """multiprocessing re-runs the parent's __main__ in every child (a script, submitit's or Ray's
    runner): the worker is the harness's own code and needs none of it, so while a worker is
    started __main__ shows neither a spec nor a file to re-run."""
    main = sys.modules["__main__"]
    saved = {k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__}
    main.__spec__ = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def grace(budget_s: float) -> float:
    """How long a worker may stay silent after its budget ran out: SIGALRM needs the running call to
    return to Python, and the rows still have to be sent."""
    return max(MIN_GRACE_S, budget_s)


@dataclass
class Phase:
    """What the worker is doing now and until when it may (the supervisor's watch, clock injected)."""
    name: str
    budget_s: Optional[float]
    kill_at: float

    @classmethod
    def starting(cls, name: str, seconds: Optional[float], now: float) -> "Phase":
        limit = UNBUDGETED_S if seconds is None else max(seconds, 0.0) + grace(seconds)
        return cls(name, seconds, now + limit)


def describe_exit(code: Optional[int]) -> str:
    """'was killed by SIGSEGV (Segmentation fault)', 'exited with status 3'."""
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            sig = signal.Signals(-code)
            return f"was killed by {sig.name} ({signal.strsignal(sig)})"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def tail(path: Path, offset: int, lines: int = TAIL_LINES) -> str:
    """What the worker wrote to `path` after `offset`, for a message: after a fatal signal,
    faulthandler's first line and innermost frames (where it happened); else the last lines."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Extension modules:")]
    fatal = next((i for i, line in enumerate(kept) if line.startswith("Fatal Python error")), None)
    if fatal is not None:
        frames = [line for line in kept[fatal + 1:] if line.startswith("File ")][:lines - 1]
        kept = [kept[fatal], *frames]
    else:
        kept = kept[-lines:]
    return clip(" | ".join(kept), 700)


def crashed_results(passes: tuple[str, ...], phase: str, text: str, done: Optional[dict]) -> dict[str, PassResult]:
    """Rows for a case whose worker ended: passes already final keep their results, the one in flight
    is `crashed`, later ones say which pass crashed first."""
    res = {}
    for p in passes:
        if done and p in done:
            res[p] = done[p]
        elif p == phase or phase not in passes:
            res[p] = PassResult(status=Status.crashed, message=text, done=True)
        else:
            res[p] = PassResult(status=Status.crashed, message=f"{phase} pass crashed first: {text}", done=True)
    return res


def call_isolated(fn: Callable, args: tuple, log_path: Path, timeout_s: float,
                  clock: Callable[[], float] = time.monotonic):
    """`fn(*args)` in a fresh worker (fn importable by name, args and result picklable): (result,
    None), or (None, how the worker ended: a signal, an exit status, no answer within timeout_s).
    An exception `fn` raises is raised here."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"--- worker for {getattr(fn, '__qualname__', fn)}\n".encode())
        offset = log.tell()
    ctx = _context()
    conn, there = ctx.Pipe()
    proc = ctx.Process(target=serve_call, args=(there, str(log_path), dict(os.environ), fn, args))
    with _main_left_alone():
        proc.start()
    there.close()
    end, msg = clock() + timeout_s, None
    try:
        while msg is None and clock() < end:
            if conn.poll(min(end - clock(), 1.0)):
                msg = conn.recv()
            elif not proc.is_alive():
                break
    except (EOFError, OSError):
        pass
    if msg is None:
        proc.join(EXIT_S if clock() < end else 0)
        hung = proc.exitcode is None
        if hung:
            proc.kill()
        proc.join()
        what = f"stopped answering within {timeout_s:g} s, so it was killed" if hung else describe_exit(proc.exitcode)
        stderr = tail(log_path, offset)
        return None, f"the worker {what}" + (f"; its stderr: {stderr}" if stderr else "; no stderr")
    proc.join(EXIT_S)
    conn.close()
    if msg[0] == "raised":
        raise msg[1]
    return msg[1], None


class Supervisor:
    """Context manager: a job's worker process. `start()` -> (status, message) of the job (None:
    cases can run); `run(shape)` -> {pass: PassResult}, never raising for what the worker does."""

    def __init__(self, spec: WorkerSpec, log_path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec, self.log_path, self.clock = spec, Path(log_path), clock
        self.proc: Optional[multiprocessing.process.BaseProcess] = None
        self.conn: Optional[Connection] = None
        self.started = 0
        self.problem: tuple[Optional[Status], str] = (None, "")

    # ------------------------------------------------------------------ the process
    def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- worker {self.started + 1} for {self.spec.impl}\n".encode())
            self.offset = log.tell()
        ctx = _context()
        self.conn, there = ctx.Pipe()
        self.proc = ctx.Process(target=serve, args=(there, str(self.log_path), dict(os.environ)),
                                name=f"convbench-worker-{self.spec.impl}")
        with _main_left_alone():
            self.proc.start()
        there.close()
        self.started += 1
        self.conn.send(self.spec)

    def _receive(self, phase: Phase) -> Optional[tuple]:
        """The worker's next message before `phase.kill_at`; None when it ran out of time or its end of
        the connection closed (it died, or is dying)."""
        while True:
            left = phase.kill_at - self.clock()
            if left <= 0:
                return None
            try:
                if self.conn.poll(min(left, 1.0)):
                    return self.conn.recv()
            except (EOFError, OSError):
                return None
            if not self.proc.is_alive() and not self.conn.poll(0):
                return None

    def _end(self, phase: Phase) -> str:
        """Stop the worker for good and say how it ended: if its connection closed, give it time to
        exit (its exit status comes through the forkserver); one still running is hung: killed."""
        timed_out = phase.kill_at - self.clock() <= 0
        if not timed_out:
            self.proc.join(EXIT_S)
        timed_out = timed_out or self.proc.exitcode is None
        if timed_out:
            self.proc.kill()
        self.proc.join(EXIT_S)
        code = self.proc.exitcode
        self.conn.close()
        self.proc = self.conn = None
        if timed_out:
            silent = (f"{phase.budget_s:g} s of budget left when it last reported + {grace(phase.budget_s):g} s grace"
                      if phase.budget_s is not None else f"{UNBUDGETED_S:g} s, a phase without a budget")
            what = (f"stopped answering: no reply within {silent} (a call that never returns to Python, e.g. a "
                    "hung native kernel), so it was killed")
        else:
            what = describe_exit(code)
        where = ("while starting (importing torch and the plug-ins)" if phase.name == "start" else
                 "while making the inputs and the float64 reference" if phase.name == "reference" else
                 f"in the {phase.name} pass")
        stderr = tail(self.log_path, self.offset)
        return f"the worker {what} {where}" + (f"; its stderr: {stderr}" if stderr else "; no stderr")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    # ------------------------------------------------------------------ the job
    def start(self) -> tuple[Optional[Status], str]:
        """Start a worker: (status, message) that applies to every case (unsupported, error, crashed),
        or (None, '') when cases can run."""
        self._spawn()
        phase = Phase("start", None, self.clock() + STARTUP_S)
        msg = self._receive(phase)
        if msg is None or msg[0] != "ready":
            self.problem = (Status.crashed, self._end(phase))
        else:
            self.problem = (msg[1], msg[2])
        return self.problem

    def run(self, shape: Shape, repeat: Optional[tuple[str, ...]] = None) -> dict[str, PassResult]:
        """Every pass of the case; with `repeat`, only those passes' warm rounds (a repeat worker)."""
        passes = self.spec.settings.passes if repeat is None else tuple(p for p in self.spec.settings.passes
                                                                        if p in repeat)
        if not self.alive():
            status, message = self.start()
            if status is not None:
                return {p: PassResult(status=status, message=message, done=True) for p in passes}
        self.conn.send(("case", shape) if repeat is None else ("repeat", shape, tuple(passes)))
        phase, done = Phase.starting("reference", None, self.clock()), None
        while True:
            msg = self._receive(phase)
            if msg is None:
                return crashed_results(passes, phase.name, self._end(phase), done)
            if msg[0] == "deadline":
                _, name, seconds, finished = msg
                phase = Phase.starting(name, seconds, self.clock())
                done = {**(done or {}), **(finished or {})}
            elif msg[0] == "result":
                _, res, tampered = msg
                if tampered:
                    self.stop()  # a worker whose torch was patched measures nothing more
                return res

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            self.conn.send(("stop",))
        except OSError:
            pass
        self.proc.join(30)
        if self.proc.exitcode is None:
            self.proc.kill()
            self.proc.join()
        self.conn.close()
        self.proc = self.conn = None

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None and self.alive():
            self.proc.kill()
        self.stop()
