"""Run-to-run comparison: a planted slowdown is flagged, two runs of the same code are not, and a
ratio without statistical support (too few or too noisy samples) is never flagged."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from data.synthetic import fabricate_results, write_sweep
from harness.report import compare as cmp, moderated
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
    df = fabricate_results()
    df = df[df["impl"] == "unfold"].head(1).copy()
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
    assert not any("cudnn itself" in w for w in cmp.caveats(quiet))
    assert any("raw samples" in w for w in cmp.caveats(quiet))  # tables without rounds: said so
    loud = cmp.compare(fabricate_results(seed=1), fabricate_results(seed=2, scale={"cudnn": 1.5}))
    assert any("cudnn itself moved" in w for w in cmp.caveats(loud))
    assert (_changes(loud, "cudnn").isin(["reference moved", "not timed"])).all()


def test_one_sample_a_side_is_tested_not_trusted():
    c = cmp.compare(_one_row([1.0]), _one_row([3.0]))
    assert c["p_value"].iloc[0] == pytest.approx(1.0) and c["change"].tolist() == ["noise"]


# ------------------------------------------------------------ rounds and the vendor in the same rounds
def _rounds(df: pd.DataFrame, seed: int, drift: float = 1.0, scale: dict | None = None, noise: float = 0.02,
            repeats: int = 3) -> pd.DataFrame:
    """A sweep as the harness writes it now: per row `repeats` round medians, the vendor's median in
    the same rounds and the per-round ratios. `drift` moves every time alike (the machine), `scale` one
    implementation (the code)."""
    rng = np.random.default_rng(seed)
    df = df.copy()
    vendor = df[df["impl"] == "cudnn"].set_index(["shape", "device", "dtype", "pass"])["time_median_s"]
    rounds, ratios, vs, vmed, med = [], [], [], [], []
    for r in df.to_dict("records"):
        v = vendor.get((r["shape"], r["device"], r["dtype"], r["pass"]), np.nan) * drift
        base = r["time_median_s"] * drift * (scale or {}).get(r["impl"], 1.0)
        common = rng.lognormal(0, noise, repeats)  # what a round shares: both sides move with it
        own = base * common * rng.lognormal(0, noise / 2, repeats)
        ven = v * common * rng.lognormal(0, noise / 2, repeats)
        rounds.append(json.dumps(own.tolist()))
        med.append(float(np.median(own)))
        if r["impl"] == "cudnn" or np.isnan(v):
            ratios.append(None), vs.append(np.nan), vmed.append(np.nan)
        else:
            q = own / ven
            ratios.append(json.dumps(q.tolist())), vs.append(float(np.median(q))), vmed.append(float(np.median(ven)))
    return df.assign(round_medians=rounds, vs_vendor_rounds=ratios, vs_vendor=vs, vendor_median_s=vmed,
                     time_median_s=med)


def test_a_machine_that_moved_between_runs_is_not_a_change_of_the_code():
    """A/A: the second run's machine is 25% faster on everything (as on the second machine: geometric
    mean 0.797): judged against the vendor in the same rounds, no row is flagged; cudnn's own rows
    say the reference moved."""
    base = fabricate_results(seed=1)
    c = cmp.compare(_rounds(base, seed=1), _rounds(base, seed=2, drift=0.75))
    assert not c["change"].isin(["regression", "improvement"]).any(), c[c["change"].isin(["regression", "improvement"])]
    assert (c.loc[c["basis"] == "vs vendor", "judged"].between(0.9, 1.1)).all()
    assert (_changes(c, "cudnn").isin(["reference moved", "not timed"])).all()
    assert any("cudnn itself moved" in w for w in cmp.caveats(c))


@pytest.mark.parametrize("factor, share", [(1.3, 1.0), (1.15, 0.9)])
def test_a_planted_slowdown_is_flagged_against_the_vendor_even_on_a_drifting_machine(factor, share):
    base = fabricate_results(seed=1)
    c = cmp.compare(_rounds(base, seed=1), _rounds(base, seed=2, drift=0.8, scale={"unfold": factor}))
    unfold = c[(c["impl"] == "unfold") & (c["basis"] == "vs vendor")]
    assert len(unfold) and (unfold["change"] == "regression").mean() >= share
    others = c[(c["impl"] != "unfold") & c["change"].isin(["regression", "improvement"])]
    assert others.empty, others


def test_without_a_vendor_ratio_a_moved_reference_means_cannot_tell():
    base = fabricate_results(seed=1)
    old, new = _rounds(base, seed=1), _rounds(base, seed=2, drift=1.5)
    for df in (old, new):
        df["vs_vendor"], df["vs_vendor_rounds"] = np.nan, None  # timing.vs_vendor=false
    c = cmp.compare(old, new)
    timed = c[(c["impl"] != "cudnn") & (c["basis"] == "rounds") & (c["change"] != "not timed")]
    assert len(timed) and (timed["change"].isin(["cannot tell", "noise"])).all()


def _sides(rng, rows: int, sigma, change: float = 1.0, n: int = 3):
    """(old, new) per-process values of `rows` rows, log-normal with spread `sigma` (a scalar or one a row)."""
    sigma = np.broadcast_to(sigma, (rows,))
    return [(np.exp(rng.normal(0, s, n)), change * np.exp(rng.normal(0, s, n))) for s in sigma]


def _moderated_p(pairs):
    stats = [moderated.row_stats(a, b) for a, b in pairs]
    s0_2, d0 = moderated.prior(stats)
    return np.array([moderated.p_value(st, s0_2, d0) for st in stats]), (s0_2, d0)


def test_the_variance_prior_is_the_rows_common_variance():
    rng = np.random.default_rng(0)
    _, (s0_2, d0) = _moderated_p(_sides(rng, 300, 0.03))
    assert np.sqrt(s0_2) == pytest.approx(0.03, rel=0.1) and d0 > 30  # alike rows: a strong prior
    _, (s0_2, d0) = _moderated_p(_sides(rng, 300, np.geomspace(0.005, 0.2, 300)))
    assert d0 < 10  # rows of very different spreads: each keeps much of its own variance
    assert moderated.prior([moderated.row_stats(*pair) for pair in _sides(rng, 5, 0.03)]) == (pytest.approx(np.nan, nan_ok=True), 0.0)


def test_unchanged_rows_reach_p_005_one_time_in_twenty():
    """Calibration: 3000 unchanged rows of one machine's spread, 3 processes a side."""
    p, _ = _moderated_p(_sides(np.random.default_rng(1), 3000, 0.04))
    assert 0.035 < (p < 0.05).mean() < 0.065


def test_shrinking_the_variance_finds_a_10_percent_change_three_values_cannot():
    """100 rows 1.1x slower among 200 unchanged, 3 processes a side, spread 4%: a plain t-test on each
    row's 3+3 values finds few; the same test with the variance shared across rows finds most."""
    rng = np.random.default_rng(2)
    pairs = _sides(rng, 100, 0.04, change=1.1) + _sides(rng, 200, 0.04)
    p, _ = _moderated_p(pairs)
    own = np.array([moderated.p_value(moderated.row_stats(a, b), np.nan, 0.0) for a, b in pairs])
    assert (own[:100] < 0.01).mean() < 0.5 < (p[:100] < 0.01).mean()
    assert (p[100:] < 0.01).mean() < 0.03


def test_identical_or_too_few_values_are_no_test():
    one = np.array([1.0])
    assert moderated.row_stats(one, one) is None
    same = moderated.row_stats(np.array([1.0, 1.0]), np.array([2.0, 2.0]))
    assert moderated.p_value(same, np.nan, 0.0) == 0.0  # constant sides that differ
    assert moderated.p_value(moderated.row_stats(np.array([1.0, 1.0]), np.array([1.0, 1.0])), np.nan, 0.0) == 1.0


def test_changes_measured_on_a_busy_machine_are_cannot_tell():
    base = fabricate_results(seed=1)
    old, new = _rounds(base, seed=1), _rounds(base, seed=2, scale={"unfold": 1.5})
    new["machine_warning"] = "load average 4.1 on 2 cores; other processes use 97% of the CPUs"
    c = cmp.compare(old, new)
    assert not c["change"].isin(["regression", "improvement"]).any()
    assert (_changes(c, "unfold").isin(["cannot tell", "not timed", "broken", "fixed"])).all()
    assert any("unfit to time" in w for w in cmp.caveats(c))
    new["machine_warning"] = "CPU frequency governor is 'powersave', not 'performance'"  # the same in both runs
    assert (cmp.compare(old, new).pipe(_changes, "unfold") == "regression").any()


def test_q_values_adjust_for_the_number_of_rows_compared():
    """Benjamini-Hochberg over the rows timed ok on both sides. 99 unchanged rows give p-values spread
    evenly over (0, 1], so a few land below 0.05 by chance: adjusted, none does; one real change at
    p = 1e-5 among them still does. A row not timed ok on both sides is not a test."""
    m = pd.DataFrame({"status_old": "ok", "status_new": "ok", "judged": 1.2,
                      "p_value": [1e-5, *np.linspace(0.01, 1.0, 99)]})
    m.loc[len(m)] = {"status_old": "ok", "status_new": "incorrect", "judged": 1.2, "p_value": 1e-9}
    q = cmp.q_values(m)
    assert (m["p_value"].iloc[1:100] < 0.05).sum() == 4 and (q.iloc[1:100] >= 0.05).all()
    assert q.iloc[0] < 0.05 and np.isnan(q.iloc[100])
    assert cmp.q_values(m.iloc[[1]]).iloc[0] == pytest.approx(0.01)  # one row compared: q is p


def test_every_tested_row_carries_a_q_value_no_smaller_than_its_p():
    c = cmp.compare(fabricate_results(seed=1), fabricate_results(seed=2))
    tested = c["q_value"].notna()
    assert tested.sum() > 10 and (c.loc[tested, "q_value"] >= c.loc[tested, "p_value"] - 1e-12).all()
