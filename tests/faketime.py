"""A virtual clock for the timing logic: calls take the time a test says, the budget's alarm fires when
virtual time passes it, and nothing depends on how fast or busy the machine is.

`FakeTime.install(monkeypatch)` replaces the budget's clock (`harness.measure.timing.monotonic`), its
interval timer (`signal.setitimer`: the SIGALRM handler is called when virtual time reaches the alarm)
and the sampling clock (`clock_for`: a `FakeClock` whose `time()` measures virtual time and whose
`now()` is virtual wall time), and the pass's first-call clock. An implementation "takes" time with `fake.spend(seconds)`."""
from __future__ import annotations

import signal
import time
import types
from typing import Any, Callable, Optional

import torch.nn.functional as F


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0
        self.alarm_at: Optional[float] = None
        self.armed: list[float] = []   # every interval the code under test asked for
        self.prepares = 0              # flushes run before cold samples

    def now(self) -> float:
        return self.t

    def spend(self, seconds: float) -> None:
        """Advance virtual time; past an armed alarm, run the SIGALRM handler as the kernel would."""
        self.t += seconds
        if self.alarm_at is not None and self.t >= self.alarm_at:
            self.alarm_at = None
            handler = signal.getsignal(signal.SIGALRM)
            if callable(handler):
                handler(signal.SIGALRM, None)

    def setitimer(self, which, seconds: float, interval: float = 0.0):
        left = max(self.alarm_at - self.t, 0.0) if self.alarm_at is not None else 0.0
        self.alarm_at = self.t + seconds if seconds > 0 else None
        if seconds > 0:
            self.armed.append(seconds)
        return left, 0.0

    def clock(self, *_args, **_kw) -> "FakeClock":
        return FakeClock(self)

    def install(self, monkeypatch) -> "FakeTime":
        from harness.measure import passes, timing
        monkeypatch.setattr(timing, "monotonic", self.now)
        # first_call_s: the pass's own wall clock
        monkeypatch.setattr(passes, "time", types.SimpleNamespace(perf_counter=self.now, time=time.time))
        monkeypatch.setattr(signal, "setitimer", self.setitimer)
        monkeypatch.setattr(timing, "clock_for", self.clock)
        return self

    def conv(self, seconds: float, flush_s: float = 0.0) -> Callable:
        """An implementation that takes `seconds` of virtual time per call and is right."""
        def conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
            self.spend(seconds)
            return F.conv2d(input, weight, bias, stride, padding, dilation, groups)
        return conv


class FakeClock:
    """`time(fn, n, prepare)` as harness.measure.clocks.CpuClock, on virtual time."""

    def __init__(self, fake: FakeTime) -> None:
        self.fake = fake

    def now(self) -> float:
        return self.fake.t

    CALL_S = 1e-6  # no call takes no time: a call that spends none (torch's own conv) still takes this

    def time(self, fn: Callable[[], Any], n: int = 1, prepare: Optional[Callable[[], Any]] = None) -> float:
        if prepare is not None:
            self.fake.prepares += 1
            prepare()
        t0 = self.fake.t
        for _ in range(n):
            fn()
            self.fake.spend(self.CALL_S)
        return (self.fake.t - t0) / n
