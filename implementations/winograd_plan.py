"""The Winograd planner: for each problem (pass, shapes, padding, groups, dtype, device, layout,
thread count) it times its candidate plans once, on the first call, keeps the fastest in memory and,
when `CONVBENCH_WINOGRAD_WISDOM` names a file, on disk (FFTW's `FFTW_MEASURE` and wisdom; cuDNN's
`benchmark=True`).

A plan (`Choice`) is a tile size (F(2x2,3x3), F(4x4,3x3) or F(6x6,3x3)), a chunk (images per pass
through the transforms and products) and a layout: `fused` or `fused_kb` (C transforms straight from
the input and into the output; `fused_kb` transforms the weights in blocks of output channels), or,
with the transforms as torch ops, `nhwc` (channels-last work buffers, the input copied in and the
output back unless they are channels_last already) or `nchw` (space-to-depth planes, no layout
copies). `implementations.winograd` says which it offers; this module only times and remembers.

The wisdom file is JSON: {"version": 1, "machines": {"<cpu model> | <capability> | torch <version>":
{"<problem key>": {"tile": 4, "chunk": 2, "layout": "nhwc", "times_ms": {...}}}}}. Entries of other
machines and torch versions are kept and ignored. The clock is injectable (`Planner(clock=...)`), so
the selection logic is tested with a fake timer, never with wall-clock margins.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import torch

WISDOM_ENV = "CONVBENCH_WINOGRAD_WISDOM"
WISDOM_VERSION = 1
ROUNDS = 10       # timing rounds per stage at most: every candidate in the first FULL_ROUNDS, the close ones after
FULL_ROUNDS = 3   # one slow spell of a shared machine (its start and its end) can spoil at most two interleaved
                  # rounds for some candidates and not others: with three, each candidate keeps a fair one
KEEP_WITHIN = 1.25  # candidates slower than this times the best after FULL_ROUNDS are not timed again
FINE_WITHIN = 1.10  # the fine stage tries the chunks of every (tile, layout) this close to the coarse best
PLAN_BUDGET_S = 0.6  # per problem: no new round past it (each candidate timed once first); half of it for the coarse stage.
                     # A backward first call plans two problems, within a sweep case's default budget_s of 2 s: at
                     # 1 s, ResNet-50's 56x56 and 7x7 layers at batch 16 took 2.1-2.4 s (`timeout`), at 0.6 s 1.3-1.6 s


@dataclass(frozen=True, order=True)
class Choice:
    """One plan: F(tile x tile, 3x3), `chunk` images at a time, work buffers in `layout`."""

    tile: int
    layout: str
    chunk: int

    def label(self) -> str:
        return f"F({self.tile}x{self.tile},3x3) {self.layout} chunk {self.chunk}"

    def to_json(self) -> dict:
        return {"tile": self.tile, "layout": self.layout, "chunk": self.chunk}

    @classmethod
    def from_json(cls, d: dict) -> "Choice":
        return cls(int(d["tile"]), str(d["layout"]), int(d["chunk"]))


@dataclass
class Decision:
    """What the planner decided for one problem, and how: 'measured' (timed now), 'wisdom' (read from
    the file), 'estimated' (too small to be worth timing: the first candidate), 'forced'."""

    choice: Choice
    how: str
    times_ms: dict = field(default_factory=dict)  # candidate label -> best time, when measured
    planning_s: float = 0.0                       # wall time the measuring took (first call only)

    def describe(self) -> str:
        text = f"{self.choice.label()} ({self.how}"
        if self.how == "measured":
            text += f" over {len(self.times_ms)} candidates in {self.planning_s:.2f} s"
        return text + ")"


def machine_key(device: torch.device) -> str:
    """The wisdom's machine: CPU model (or CUDA device name), instruction set, torch version."""
    if device.type == "cuda":
        model = torch.cuda.get_device_name(device)
    else:
        model = _cpu_model()
    return f"{model} | {torch.backends.cpu.get_cpu_capability()} | torch {torch.__version__}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _default_clock(device: torch.device) -> Callable[[], float]:
    if device.type == "cuda":
        def clock():
            torch.cuda.synchronize(device)
            return time.perf_counter()
        return clock
    return time.perf_counter


class Planner:
    """Chooses among candidates by timing them, once per problem key.

    `clock`: a function of no arguments returning seconds (default: perf_counter, synchronized on
    CUDA); `wisdom`: a JSON file path, default the `CONVBENCH_WINOGRAD_WISDOM` environment variable
    read when a plan is first needed (unset: memory only)."""

    def __init__(self, clock: Optional[Callable[[], float]] = None, wisdom: Optional[str] = None,
                 rounds: int = ROUNDS, budget_s: float = PLAN_BUDGET_S):
        self.clock = clock
        self._wisdom_path = wisdom
        self.rounds = rounds
        self.budget_s = budget_s
        self.decisions: dict[str, Decision] = {}
        self._lock = threading.Lock()

    # -- wisdom ----------------------------------------------------------------------------------
    def wisdom_path(self) -> Optional[str]:
        return self._wisdom_path if self._wisdom_path is not None else (os.environ.get(WISDOM_ENV) or None)

    def _read_wisdom(self) -> dict:
        path = self.wisdom_path()
        if not path or not os.path.exists(path):
            return {"version": WISDOM_VERSION, "machines": {}}
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            return {"version": WISDOM_VERSION, "machines": {}}  # unreadable wisdom is no wisdom
        if not isinstance(data, dict) or data.get("version") != WISDOM_VERSION:
            return {"version": WISDOM_VERSION, "machines": {}}
        data.setdefault("machines", {})
        return data

    def _from_wisdom(self, machine: str, key: str, candidates: list[Choice]) -> Optional[Choice]:
        entry = self._read_wisdom()["machines"].get(machine, {}).get(key)
        if not entry:
            return None
        try:
            choice = Choice.from_json(entry)
        except (KeyError, TypeError, ValueError):
            return None
        return choice if choice in candidates else None  # a plan this code no longer offers is ignored

    def _to_wisdom(self, machine: str, key: str, decision: Decision) -> None:
        path = self.wisdom_path()
        if not path:
            return
        data = self._read_wisdom()  # re-read: another process may have added plans meanwhile (two
        # writing at once: the file stays whole, os.replace is atomic, but one's new plan may be lost)
        data["machines"].setdefault(machine, {})[key] = {**decision.choice.to_json(), "times_ms": decision.times_ms}
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".wisdom-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)

    # -- choosing --------------------------------------------------------------------------------
    def choose(self, key: str, candidates: Iterable[Choice], run: Callable[[Choice], Any],
               device: torch.device, measure: bool = True) -> tuple[Decision, Any]:
        """The plan for `key` and, when it was decided by running candidates now, the result of the
        chosen one's fastest run (else None: the caller runs the plan itself). `run(choice)` computes
        the real result with that plan. With `measure=False` the first candidate is taken untimed."""
        candidates = list(dict.fromkeys(candidates))
        if not candidates:
            raise ValueError("no candidate plans")
        with self._lock:
            known = self.decisions.get(key)
        if known is not None and known.choice in candidates:
            return known, None
        machine = machine_key(device)
        from_file = self._from_wisdom(machine, key, candidates)
        if from_file is not None:
            decision = Decision(from_file, "wisdom")
            result = None
        elif not measure or len(candidates) == 1:
            decision, result = Decision(candidates[0], "estimated" if len(candidates) > 1 else "only"), None
        else:
            decision, result = self._measure(candidates, run, device)
            self._to_wisdom(machine, key, decision)
        with self._lock:
            self.decisions[key] = decision
        return decision, result

    def _measure(self, candidates: list[Choice], run, device) -> tuple[Decision, Any]:
        """Coarse to fine, so the first call stays short: each (tile, layout) at its first-listed chunk
        (the memory rule's), then the other chunks of every (tile, layout) within FINE_WITHIN of the
        best one (the winner's, and a runner-up's whose chunk may be the one that wins: on an AMD EPYC
        VM F(4x4) nchw at its memory-rule chunk beat nhwc at its own, while nhwc at half that chunk was
        1.28x faster than both). Within a stage, rounds as `_rounds` times them."""
        clock = self.clock or _default_clock(device)
        start = clock()
        best: dict[Choice, float] = {}
        coarse = list({(c.tile, c.layout): c for c in reversed(candidates)}.values())[::-1]
        rank = candidates.index  # ties go to the earlier-listed candidate
        kept = self._rounds(coarse, run, clock, start + self.budget_s / 2, best, rank)
        floor = min(best.values())
        close = {(c.tile, c.layout) for c in coarse if c in best and best[c] <= FINE_WITHIN * floor}
        fine = [c for c in candidates if (c.tile, c.layout) in close]
        judged = best
        if len(fine) > len(close):
            # judged on this stage's rounds alone: a coarse candidate's minimum over more rounds than
            # its new rivals had would favour it (chunk 2 over a 5% faster chunk 1 at 56x56 on an AMD
            # EPYC VM, its host noisy)
            judged = {}
            kept = self._rounds(fine, run, clock, start + self.budget_s, judged, rank)
            best.update(judged)
        choice = min(judged, key=lambda c: (judged[c], rank(c)))
        decision = Decision(choice, "measured", {c.label(): round(best[c] * 1e3, 4) for c in candidates if c in best},
                            clock() - start)
        return decision, (kept[1] if kept and kept[0] == choice else None)

    def _rounds(self, alive: list[Choice], run, clock, until: float, best: dict, rank):
        """Time `alive` in interleaved rounds (a slow spell of the machine hits them all), each
        candidate judged by its best round: every one in the first FULL_ROUNDS, then only those within
        KEEP_WITHIN of the best; no new round once the clock reads `until` (the first round always
        completes). Returns (choice, output) of the fastest run's own result, kept so the first call
        returns it; the others' outputs are dropped at once."""
        kept = None
        for round_ in range(max(1, self.rounds)):
            if round_ and clock() >= until:
                break
            for choice in alive:
                t0 = clock()
                out = run(choice)
                elapsed = clock() - t0
                if elapsed < best.get(choice, float("inf")):
                    best[choice] = elapsed
                fastest = min(best, key=lambda c: (best[c], rank(c)))
                if choice == fastest:
                    kept = (choice, out)
                elif kept is not None and kept[0] != fastest:
                    kept = None
                del out
            if round_ + 1 >= FULL_ROUNDS:
                floor = min(best[c] for c in alive)
                alive = [c for c in alive if best[c] <= KEEP_WITHIN * floor]
                if len(alive) == 1:
                    break
        return kept

    def forget(self) -> None:
        """Drop the plans held in memory (the wisdom file is left alone)."""
        with self._lock:
            self.decisions.clear()
