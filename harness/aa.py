"""Does `compare` tell a change from the machine? (`make bench-aa`)

    python -m harness.aa [--skip-aa] [--factors 1.3 1.1] [--out DIR] [hydra overrides ...]

1. **A/A**: the default sweep (or the one the overrides describe) twice, back to back, from the same
   commit, then `harness.report.compare`: every flagged row is a false alarm. Target on a quiet
   machine: at most 2 % of the timed rows.
2. **A/B**: `examples/planted_slowdown.py` (`planted`: F.conv2d plus a calibrated busy-wait) swept
   with `cudnn` twice under the same name, the second time `factor` x slower
   (`CONVBENCH_PLANTED_FACTOR`). Targets: a 1.3x slowdown flagged on >= 90 % of its rows, 1.1x on
   >= 50 %, and no other row flagged.

Exit status 1 when a target is missed (the machine warning of the sweeps is printed with it: on a busy
machine the tool may rightly say 'cannot tell')."""
from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import time

import pandas as pd

from harness.report.analysis import load_results
from harness.report.compare import compare

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
FLAGS = ("regression", "improvement")
TARGETS = {"aa": 0.02, 1.3: 0.90, 1.1: 0.50}


def sweep(folder: pathlib.Path, overrides: list[str], env: dict | None = None) -> float:
    """One multirun into `folder`; returns its wall time."""
    cmd = [sys.executable, "-m", "harness", "-m", f"hydra.sweep.dir={folder}", "results_link=null", *overrides]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def timed(c: pd.DataFrame) -> pd.DataFrame:
    """Rows timed ok on both sides (what a flag could land on)."""
    return c[c["change"].isin(["regression", "improvement", "noise", "no change", "cannot tell", "reference moved"])]


def machine_note(folder: pathlib.Path) -> str:
    df = load_results(folder)
    warnings = sorted(set(df.get("machine_warning", pd.Series(dtype=str)).dropna()) - {""})
    return f" (machine: {warnings[0]})" if warnings else ""


def aa(root: pathlib.Path, overrides: list[str]) -> bool:
    a, b = root / "aa-1", root / "aa-2"
    ta, tb = sweep(a, overrides), sweep(b, overrides)
    c = timed(compare(load_results(a), load_results(b)))
    flagged = c["change"].isin(FLAGS)
    share = flagged.mean() if len(c) else 0.0
    ok = share <= TARGETS["aa"]
    print(f"A/A: {int(flagged.sum())} of {len(c)} timed rows flagged ({share:.1%}; target <= {TARGETS['aa']:.0%}), "
          f"{int((c['change'] == 'cannot tell').sum())} cannot tell; sweeps {ta:.0f} s and {tb:.0f} s"
          f"{machine_note(b)} -> {'PASS' if ok else 'FAIL'}")
    return ok


def ab(root: pathlib.Path, overrides: list[str], factor: float) -> bool:
    a, b = root / f"ab-{factor:g}-old", root / f"ab-{factor:g}-new"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(EXAMPLES), os.environ.get("PYTHONPATH", "")]))}
    planted = ["plugins=[planted_slowdown]", "impl=planted,cudnn", *overrides]
    sweep(a, planted, {**env, "CONVBENCH_PLANTED_FACTOR": "1.0"})
    sweep(b, planted, {**env, "CONVBENCH_PLANTED_FACTOR": f"{factor:g}"})
    c = timed(compare(load_results(a), load_results(b)))
    mine, others = c[c["impl"] == "planted"], c[c["impl"] != "planted"]
    share = (mine["change"] == "regression").mean() if len(mine) else 0.0
    target = TARGETS.get(factor)
    ok = (target is None or share >= target) and not others["change"].isin(FLAGS).any()
    print(f"A/B planted {factor:g}x: {int((mine['change'] == 'regression').sum())} of {len(mine)} rows flagged as "
          f"regression ({share:.0%}" + (f"; target >= {target:.0%}" if target else "") +
          f"), median judged ratio {mine['judged'].median():.3f}; other rows flagged: "
          f"{int(others['change'].isin(FLAGS).sum())}{machine_note(b)} -> {'PASS' if ok else 'FAIL'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.aa", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=pathlib.Path, default=None, help="folder for the sweeps (default results/aa-<time>)")
    ap.add_argument("--factors", type=float, nargs="*", default=[1.3, 1.1], help="planted slowdowns (A/B)")
    ap.add_argument("--skip-aa", action="store_true", help="only the A/B runs")
    args, overrides = ap.parse_known_args(argv)
    root = args.out or pathlib.Path("results") / time.strftime("aa-%Y-%m-%d_%H-%M-%S")
    ok = True
    if not args.skip_aa:
        ok &= aa(root, overrides)
    for factor in args.factors:
        ok &= ab(root, overrides, factor)
    print(f"sweeps in {root}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
