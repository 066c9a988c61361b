"""What a conformance run returns: one `CheckResult` per (check, case, dtype, device), and their sum,
so a green run that skipped most checks shows it (`summary()` counts every status)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

STATUSES = ("ok", "failed", "skipped", "xfailed")


@dataclass(frozen=True)
class CheckResult:
    impl: str
    check: str
    case: str
    dtype: str          # float32, ..., or "any" for a check about arguments
    device: str
    status: str         # one of STATUSES
    message: str = ""   # why it failed, was skipped or was expected to fail; a note when an xfail passed
    reproduce: str = "" # a Python snippet that reruns this one check
    seconds: float = 0.0

    @property
    def id(self) -> str:
        """Stable across runs: implementation-check-case-dtype-device (a pytest id, an xfails line)."""
        return f"{self.impl}-{self.check}-{self.case}-{self.dtype}-{self.device}"


def count_line(counts: Counter, seconds: Optional[float] = None, who: str = "") -> str:
    """'412 checks ran: 400 passed, 2 failed, 10 skipped, 0 xfailed (3.1 s)'."""
    n = sum(counts[s] for s in STATUSES)
    took = f" ({seconds:.1f} s)" if seconds is not None else ""
    return (f"convbench conformance{' ' + who if who else ''}: {n} checks ran: {counts['ok']} passed, "
            f"{counts['failed']} failed, {counts['skipped']} skipped, {counts['xfailed']} xfailed{took}")


@dataclass
class ConformanceResult:
    impl: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def counts(self) -> Counter:
        return Counter(r.status for r in self.results)

    @property
    def ok(self) -> bool:
        """No check failed (skipped and expected failures do not count against it)."""
        return not self.failed

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "failed"]

    def by_status(self, status: str) -> list[CheckResult]:
        return [r for r in self.results if r.status == status]

    def summary(self, max_failures: int = 20) -> str:
        """The count line, the failures (message and reproduction, the first `max_failures`), then the
        skip reasons with how many checks each skipped."""
        lines = [count_line(self.counts, sum(r.seconds for r in self.results), self.impl)]
        for r in self.failed[:max_failures]:
            lines += [f"FAILED {r.id}: {r.message}", *("    " + s for s in r.reproduce.splitlines())]
        if len(self.failed) > max_failures:
            lines.append(f"... and {len(self.failed) - max_failures} more failures")
        reasons = Counter(r.message.splitlines()[0] if r.message else "" for r in self.by_status("skipped"))
        lines += [f"skipped {n}: {reason}" for reason, n in reasons.most_common()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()
