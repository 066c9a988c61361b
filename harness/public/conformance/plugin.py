"""The pytest plugin (entry point `pytest11: convbench`): the --convbench-* options, and at the end of a
run the count of conformance checks by outcome, so a green run that skipped most checks shows it.
It imports nothing heavy and does nothing unless a conformance check is collected."""
from __future__ import annotations

from collections import Counter

KEY = "_convbench_outcomes"


def pytest_addoption(parser):
    group = parser.getgroup("convbench", "convbench conformance suite (pytest --pyargs convbench.conformance)")
    group.addoption("--convbench-impl", action="append", default=[], metavar="PKG.MOD:FN",
                    help="implementation to check: package.module:function or a registered name (repeatable)")
    group.addoption("--convbench-xfails", metavar="FILE",
                    help="expected failures: one check id or substring a line, # comments")
    group.addoption("--convbench-dtype", action="append", default=[], metavar="DTYPE",
                    help="float32, float64, float16, bfloat16 (repeatable or comma-separated; default all)")
    group.addoption("--convbench-device", action="append", default=[], metavar="DEVICE",
                    help="cpu, cuda, ... (repeatable or comma-separated; default cpu, and cuda when present)")
    group.addoption("--convbench-full", action="store_true",
                    help="the full suite: realistic layer sizes, 500 fuzz examples in every dtype, OpInfo float64")
    group.addoption("--convbench-max-examples", type=int, metavar="N", help="fuzz examples per fuzz check")
    group.addoption("--convbench-timeout", type=float, metavar="S", help="time limit per check, seconds")


def listed(values: list[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def read_xfails(path: str) -> list[str]:
    """One check id or substring a line; blank lines and # comments ignored."""
    with open(path, encoding="utf-8") as f:
        return [line.split("#", 1)[0].strip() for line in f if line.split("#", 1)[0].strip()]


def _is_check(item) -> bool:
    spec = getattr(item, "callspec", None)
    return spec is not None and hasattr(spec.params.get("check"), "planned")


def pytest_collection_finish(session):
    """The conformance checks left to run (after -k, -m and --lf deselected what they do)."""
    checks = {item.nodeid for item in session.items if _is_check(item)}
    if checks:
        session.config.stash_convbench = {"ids": checks, "outcome": {}}


def pytest_runtest_logreport(report):
    state = getattr(_config, "stash_convbench", None) if _config else None
    if not state or report.nodeid not in state["ids"]:
        return
    outcome = state["outcome"]
    if hasattr(report, "wasxfail"):
        outcome[report.nodeid] = "xfailed" if report.skipped else "passed"
    elif report.failed:
        outcome[report.nodeid] = "failed"
    elif report.skipped:
        outcome[report.nodeid] = "skipped"
    elif report.when == "call" and outcome.get(report.nodeid) is None:
        outcome[report.nodeid] = "passed"


_config = None


def pytest_configure(config):
    global _config
    _config = config


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    state = getattr(config, "stash_convbench", None)
    if not state or config.option.collectonly:
        return
    counts = Counter(state["outcome"].values())
    ran = sum(counts.values())
    terminalreporter.write_line(
        f"convbench conformance: {ran} checks ran: {counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['skipped']} skipped, {counts['xfailed']} xfailed"
        + (f" ({len(state['ids']) - ran} collected but not run)" if len(state["ids"]) > ran else ""))
