"""A row's warm timing pooled over worker processes (`timing.processes`, as pyperf's and asv's
`processes`): the case's first worker checks and times it, each other worker (a process of its own,
harness.measure.passes.repeat_case) times the warm rounds again. Values vary more between processes
(allocator and page state, the address layout) than within one, so the row keeps one value per
process (`TimingResult.rounds`, and the vendor's beside it): its interval, `noisy` and compare's test
see that spread. With `timing.repeats` > 1 a process's rounds are summarised by their median first:
rounds of one process are not independent of each other in the sense compare's test needs.

When each process runs is `schedule`'s: the processes of one case are spread over the job's
duration, not run back to back, so a row's values also see what drifts over tens of seconds (a
Python-heavy loop read 1.6x slower than in the previous sweep for a whole job, in all three
processes run back to back, on a VM whose host was busy)."""
from __future__ import annotations

import math
import statistics
from typing import Sequence

from harness.table.schema import Status

from .machine import GpuReading
from .passes import PassResult
from .stats import TimingResult

FAILED = (Status.crashed, Status.error)  # a repeat that ends so: the implementation failed on this case


def schedule(cases: int, processes: int) -> list[tuple[int, int]]:
    """(case, process) in the order they run: process k of case i at step i + k * lag, lag =
    ceil(cases / processes), the first process of a case before its others (they time only what
    it timed). Each row's processes are spread over the job; a case's rows are final, and written,
    after its last process: at most 2 x lag cases are in flight (lost if the job is killed, measured
    again by resume)."""
    lag = max(1, math.ceil(cases / processes))
    return sorted(((i, k) for i in range(cases) for k in range(processes)), key=lambda t: (t[0] + t[1] * lag, t[1]))


def _process_value(t: TimingResult) -> float:
    return statistics.median(t.rounds) if t.rounds else t.median


def pool(first: PassResult, repeats: Sequence[PassResult]) -> None:
    """Fold the repeats' warm rounds into `first` (the case's first worker's result for a pass): all
    samples pooled, one round value per process, the vendor's per process when every process timed
    it (and the step ratios to it, `paired`, what `noisy` judges). A repeat that crashed or raised
    turns an `ok` row into that status (the implementation failed on a call of this case, only in
    another process); a repeat without a timing is a note (noisy)."""
    if first.timing is None or not repeats:
        return  # nothing timed, or one process: its rounds stay as they are
    timed = [first]
    for k, r in enumerate(repeats, start=2):
        where = f"worker process {k} of {len(repeats) + 1} (a repeat of the warm timing)"
        if r.timing is not None:
            timed.append(r)
        else:
            first.notes.append(f"no warm timing from {where}: {r.message or r.status}")
        if r.status in FAILED:
            text = f"in {where}: {r.message}"
            if first.status == Status.ok:
                first.status, first.message = r.status, text
            else:
                first.message = "; ".join(filter(None, [first.message, text]))
        first.notes.extend(r.notes)
        first.concurrent |= r.concurrent
    samples = tuple(x for r in timed for x in r.timing.samples)
    rounds = tuple(_process_value(r.timing) for r in timed)
    vendor = tuple(statistics.median(r.vendor_rounds) for r in timed) \
        if all(r.vendor_rounds for r in timed) else ()
    first.timing = TimingResult(samples, capped=any(r.timing.capped for r in timed),
                                min_samples=first.timing.min_samples, rounds=rounds)
    first.vendor_rounds = vendor
    if all(r.paired is not None for r in timed):
        first.paired = TimingResult(tuple(x for r in timed for x in r.paired.samples),
                                    capped=any(r.paired.capped for r in timed), min_samples=first.timing.min_samples,
                                    rounds=tuple(_process_value(r.paired) for r in timed))
    else:
        first.paired = None
    if first.gpu is not None:
        first.gpu = GpuReading.worst([r.gpu for r in timed if r.gpu is not None])
