"""For people: analysis of a results table (speedups, winners, environment), the plots, the report
files and the comparison of two sweeps. It reads tables through `harness.table` and never imports
`harness.measure` or `harness.config`."""
from .render import write_report

__all__ = ["write_report"]
