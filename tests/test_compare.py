"""Run-to-run comparison: a planted slowdown is flagged, two runs of the same code are not, and a
ratio without statistical support (too few or too noisy samples) is never flagged."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from data.synthetic import fabricate_results, write_sweep
from harness.report import compare as cmp
from harness.report.analysis import IMPL_CASE as KEY

TIMED = ["regression", "improvement", "noise", "no change"]


def _changes(c: pd.DataFrame, impl: str) -> pd.Series:
    return c.loc[c["impl"] == impl, "change"]


def test_planted_2x_slowdown_is_flagged():
    old, new = fabricate_results(seed=1), fabricate_results(seed=2, scale={"unfold": 2.0})
    c = cmp.compare(old, new)
    unfold = c[(c["impl"] == "unfold") & c["change"].isin(TIMED)]
    assert len(unfold) > 0 and (unfold["change"] == "regression").all()
    assert unfold["ratio"].between(1.8, 2.2).all() and (unfold["p_value"] < 0.01).all()
    others = c[(c["impl"] != "unfold") & c["change"].isin(TIMED)]
    assert (others["change"] == "no change").all(), others[others["change"] != "no change"]


def test_same_code_twice_is_not_flagged():
    """Same distributions, different random samples (seeds): nothing may be flagged."""
    for seed in range(3):
        c = cmp.compare(fabricate_results(seed=10 + seed), fabricate_results(seed=20 + seed))
        assert not c["change"].isin(["regression", "improvement", "broken", "fixed"]).any()
        assert c.loc[c["change"].isin(TIMED), "ratio"].between(0.95, 1.05).all()


def test_improvement_is_flagged_as_such():
    c = cmp.compare(fabricate_results(seed=1), fabricate_results(seed=2, scale={"fft": 0.5}))
    assert (c.loc[(c["impl"] == "fft") & c["change"].isin(TIMED), "change"] == "improvement").all()


def _one_row(samples):
    df = fabricate_results().head(1).copy()
    df["status"] = "ok"
    df["samples"] = json.dumps(list(samples)) if samples is not None else pd.NA
    df["time_median_s"] = float(np.median(samples)) if samples is not None else 1.0
    return df


def test_a_big_ratio_on_too_few_samples_is_noise_not_regression():
    """3 samples a side can never reach p < 0.05 in a two-sided Mann-Whitney test."""
    c = cmp.compare(_one_row([1.0, 1.1, 0.9]), _one_row([2.0, 2.2, 1.8]))
    assert c["change"].tolist() == ["noise"] and c["ratio"].iloc[0] == pytest.approx(2.0)


def test_a_median_moved_by_one_noisy_sample_is_not_flagged():
    """Bimodal timings (a noisy neighbour): the medians differ by 1.5x, the distributions do not."""
    old = [1.0, 1.0, 1.0, 1.0, 2.0, 5.0, 5.0, 5.0, 5.0]
    new = [1.0, 1.0, 1.0, 1.0, 3.0, 5.0, 5.0, 5.0, 5.0]
    c = cmp.compare(_one_row(old), _one_row(new))
    assert c["ratio"].iloc[0] == pytest.approx(1.5)
    assert c["p_value"].iloc[0] > 0.5 and c["change"].iloc[0] == "noise"


def test_without_samples_the_ratio_decides_alone():
    old, new = _one_row(None), _one_row(None)
    new["time_median_s"] = 1.5
    c = cmp.compare(old, new)
    assert np.isnan(c["p_value"].iloc[0]) and c["change"].tolist() == ["regression"]


def test_status_changes_added_and_removed_rows():
    old, new = fabricate_results(seed=1), fabricate_results(seed=2)
    ok = new.index[(new["impl"] == "unfold") & (new["status"] == "ok")]
    new.loc[ok[0], "status"] = "incorrect"
    bad = new.index[(new["impl"] == "loop") & (new["status"] == "timeout")]
    new.loc[bad[0], ["status", "time_median_s"]] = ["ok", 1.0]
    new = new.drop(index=new.index[new["impl"] == "fft"][:2])
    extra = new.iloc[[0]].assign(impl="mine")
    c = cmp.compare(old, pd.concat([new, extra]))
    counts = c["change"].value_counts()
    assert counts["broken"] == 1 and counts["fixed"] == 1 and counts["removed"] == 2 and counts["added"] == 1
    assert c.iloc[0]["change"] == "broken"  # the worst news first
    assert not c.duplicated(KEY).any()


def test_cli_writes_table_and_plot_and_fails_on_regression(tmp_path, capsys):
    def table(**kw):  # one dtype and pass: a smaller plot keeps this test quick
        df = fabricate_results(**kw)
        return df[(df["dtype"] == "float32") & (df["pass"] == "forward")]
    old = write_sweep(tmp_path / "old", table(seed=1))
    same = write_sweep(tmp_path / "same", table(seed=2))
    slow = write_sweep(tmp_path / "slow", table(seed=3, scale={"unfold": 2.0}))
    assert cmp.main([str(old), str(same), "--fail-on-regression"]) == 0
    assert cmp.main([str(old), str(slow)]) == 0  # reporting alone never fails
    out = tmp_path / "out"
    assert cmp.main([str(old), str(slow), "--fail-on-regression", "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "regression  unfold" in printed and "0 regression" in printed  # slow run, then the same one
    table = pd.read_csv(out / "compare.csv")
    assert (table["change"] == "regression").sum() == (table["impl"] == "unfold").sum() - table.loc[
        table["impl"] == "unfold", "change"].isin(["not timed", "broken", "fixed"]).sum()
    md = (out / "compare.md").read_text()
    assert "| change | impl | shape |" in md and "![ratio new/old](compare.png)" in md
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (same / "compare.csv").exists()  # default output: next to NEW


def test_cli_rejects_a_bad_threshold_and_missing_tables(tmp_path, capsys):
    old = write_sweep(tmp_path / "old", fabricate_results(seed=1))
    assert cmp.main([str(old), str(old), "--threshold", "0.9"]) == 2
    assert cmp.main([str(old), str(tmp_path / "nope")]) == 2
    assert "threshold" in capsys.readouterr().err


def test_a_moving_baseline_is_called_out():
    """cudnn's code does not change between runs of convbench: if it moves, the machine did."""
    quiet = cmp.compare(fabricate_results(seed=1), fabricate_results(seed=2, scale={"unfold": 2.0}))
    assert cmp.caveats(quiet) == []
    loud = cmp.compare(fabricate_results(seed=1), fabricate_results(seed=2, scale={"cudnn": 1.5}))
    assert any("cudnn itself changed" in w for w in cmp.caveats(loud))


def test_one_sample_a_side_is_tested_not_trusted():
    c = cmp.compare(_one_row([1.0]), _one_row([3.0]))
    assert c["p_value"].iloc[0] == pytest.approx(1.0) and c["change"].tolist() == ["noise"]
