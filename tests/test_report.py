"""The sweep report: derived figures (speedup, wins, summary), robustness to partial tables, and
the written report (every plot a real PNG, the HTML self-contained and holding the summary)."""
from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from data.synthetic import fabricate_results, write_sweep  # noqa: E402
from harness.table.io import conform
from harness.table.schema import COLUMNS
from harness.report.__main__ import main as report_main
from harness.report import analysis, plots, render  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(data: bytes, min_side: int = 200):
    """A decodable PNG of some size with more than one colour: a plot, not an empty frame."""
    assert data[:8] == PNG_MAGIC
    img = mpimg.imread(io.BytesIO(data), format="png")
    assert img.shape[0] >= min_side and img.shape[1] >= min_side, img.shape
    assert img.std() > 0.02, "image is (nearly) a single colour"


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return analysis.enrich(fabricate_results())


# ------------------------------------------------------------------------------ derived figures
def test_speedup_is_reference_time_over_own_time(table):
    case = (table["layer"] == "conv2_3x3") & (table["dtype"] == "float32") & (table["pass"] == "forward")
    rows = table[case].set_index("impl")
    assert rows.loc["cudnn", "speedup"] == pytest.approx(1.0)
    assert rows.loc["unfold", "speedup"] == pytest.approx(
        rows.loc["cudnn", "time_median_s"] / rows.loc["unfold", "time_median_s"])
    assert pd.isna(table.loc[table["status"].isin(["timeout", "unsupported", "skipped", "error"]), "speedup"]).all()


def test_incorrect_result_is_never_a_win(table):
    bad = table[table["status"] == "incorrect"]
    assert len(bad) == 1 and bad["speedup"].iloc[0] > 10  # the planted fast, wrong result
    assert not bad["winner"].any()
    case = table.set_index(analysis.CASE).index.isin(bad.set_index(analysis.CASE).index)
    winners = table[case & table["winner"]]
    assert list(winners["status"]) == ["ok"] and winners["impl"].iloc[0] != "fft"


def test_one_winner_per_case_with_an_ok_row(table):
    cases_with_ok = table[table["status"] == "ok"].groupby(analysis.CASE).ngroups
    assert table["winner"].sum() == cases_with_ok
    assert table.loc[table["winner"], "status"].eq("ok").all()


def test_summary_counts(table):
    s = analysis.summary(table)
    raw = fabricate_results()
    for impl, g in raw.groupby("impl"):
        assert s.loc[impl, "cases run"] == (~g["status"].isin(["unsupported", "skipped"])).sum()
        assert s.loc[impl, "correct"] == (g["status"] == "ok").sum()
        assert s.loc[impl, "failures"] == g["status"].isin(["incorrect", "error", "timeout"]).sum()
    assert s["wins"].sum() == table["winner"].sum()
    assert s.loc["cudnn", "median speedup vs cudnn"] == pytest.approx(1.0)
    assert s.loc["loop", "median speedup vs cudnn"] < 0.1


def test_conform_reads_partial_tables():
    """Old or CPU-only tables (no CUDA columns, no samples, text booleans) read like complete ones."""
    raw = fabricate_results().drop(columns=["cuda", "cudnn", "samples", "peak_gflops"])
    raw["correct"] = raw["correct"].astype("string").str.lower()
    df = conform(raw)
    assert list(df.columns)[: len(COLUMNS)] == list(COLUMNS)
    assert df["peak_gflops"].isna().all() and df["correct"].dtype == "boolean"
    assert df["correct"].sum() == (raw["correct"] == "true").sum()


def test_kernel_families_only_where_only_the_kernel_varies(table):
    fam = plots.kernel_families(table)
    assert set(fam["layer"]) == {"k3", "k7", "k15", "k31"}
    assert plots.kernel_families(table[table["suite"] != "kernels"]).empty  # resnet layers differ in more
    twin = table[table["layer"] == "k3"].assign(layer="k3_nobias", bias=False)  # same kernel, no bias
    fam = plots.kernel_families(pd.concat([table, twin], ignore_index=True))
    assert "k3_nobias" not in set(fam["layer"]), "a bias-less twin is another problem, not another kernel size"


def test_plots_without_data_are_left_out(table):
    no_ref = table[table["impl"] != "cudnn"].drop(columns=["speedup", "winner"])
    assert plots.speedup(analysis.enrich(no_ref)) is None
    assert plots.crossover(table[table["suite"] != "kernels"]) is None
    failed = table.assign(status="error", time_median_s=float("nan"), gflops=float("nan"),
                          speedup=float("nan"), rel_err=float("nan"))
    assert plots.time_vs_size(failed) is None and plots.throughput(failed) is None
    fig = plots.correctness(failed)  # failures are still worth a picture
    assert fig is not None
    plt.close(fig)


def test_panels_follow_devices_dtypes_and_passes(table):
    """A second device doubles the panels; reference speedups stay per device (never CPU vs GPU)."""
    one = table[(table["dtype"] == "float32") & (table["suite"] == "kernels")]
    gpu = one.assign(device="cuda:0", time_median_s=one["time_median_s"] / 20)
    two = analysis.enrich(pd.concat([one, gpu], ignore_index=True).drop(columns=["speedup", "winner", "pct_peak"]))
    pd.testing.assert_series_equal(two.loc[two["device"] == "cpu", "speedup"].reset_index(drop=True),
                                   two.loc[two["device"] == "cuda:0", "speedup"].reset_index(drop=True))
    for draw, n in ((plots.speedup, 4), (plots.time_vs_size, 4), (plots.crossover, 4)):
        fig = draw(two)
        titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
        assert len(titles) == n and {"cpu · forward", "cuda:0 · backward"} <= set(titles), titles
        plt.close(fig)


# --------------------------------------------------------------------------------- the report
@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """A report of one dtype and the forward pass (one panel per plot keeps this test quick)."""
    df = fabricate_results()
    df = df[(df["dtype"] == "float32") & (df["pass"] == "forward")]
    sweep = write_sweep(tmp_path_factory.mktemp("sweep"), df)
    out = render.write_report(sweep)
    assert out == sweep / "report.html"
    return sweep


def test_every_plot_is_a_real_png(written):
    pngs = sorted(p.stem for p in written.glob("*.png"))
    assert pngs == sorted(name for name, *_ in plots.PLOTS)
    for name in pngs:
        assert_png((written / f"{name}.png").read_bytes())


def test_html_is_self_contained_and_holds_the_summary(written):
    page = (written / "report.html").read_text(encoding="utf-8")
    assert not re.search(r'src="(?!data:)', page), "the page must not load anything from outside"
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(plots.PLOTS)
    for data in images:
        assert_png(base64.b64decode(data))
    summary = page[page.index("<h2>Summary</h2>"):page.index("<h2>Plots</h2>")]
    for header in ("cases run", "correct", "failures", "median speedup vs cudnn", "wins"):
        assert f"<th>{header}</th>" in summary
    for impl in ("cudnn", "unfold", "fft", "loop"):
        assert f"<td>{impl}</td>" in summary
    assert page.index("Environment") < page.index("Summary") < page.index("Plots") < page.index("All results")
    assert '<tr class="timeout">' in page and "Synthetic CPU" in page


def test_markdown_links_the_plots(written):
    md = (written / "report.md").read_text(encoding="utf-8")
    for name, *_ in plots.PLOTS:
        assert f"]({name}.png)" in md
    assert "| impl | cases run | correct | failures | not run | median speedup vs cudnn | wins |" in md


def test_stale_plots_are_removed_and_csv_is_enough(tmp_path):
    """A rebuilt report of a sweep without a kernels family must not keep an old crossover.png;
    a sweep with only results.csv still reports."""
    df = fabricate_results()
    df = df[(df["dtype"] == "float32") & (df["pass"] == "forward") & (df["suite"] != "kernels")
            & (df["impl"].isin(["cudnn", "unfold"]))]
    df.to_csv(tmp_path / "results.csv", index=False)
    (tmp_path / "crossover.png").write_bytes(PNG_MAGIC)
    render.write_report(tmp_path)
    assert not (tmp_path / "crossover.png").exists()
    assert "Crossover" not in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_a_minimal_table_still_reports(tmp_path):
    """Only the key, status and time: no FLOPs, errors, environment or samples. The report keeps
    what it can and leaves the rest out instead of failing."""
    full = fabricate_results()
    full = full[(full["dtype"] == "float32") & (full["pass"] == "forward")]
    cols = ["impl", "shape", "device", "dtype", "pass", "status", "time_median_s"]
    full[cols].to_parquet(tmp_path / "results.parquet")
    page = render.write_report(tmp_path).read_text(encoding="utf-8")
    # correctness stays: the timeouts in the table are worth a picture even without error figures
    assert sorted(p.stem for p in tmp_path.glob("*.png")) == ["correctness", "speedup"]
    assert "<th>wins</th>" in page and "<td>cudnn</td>" in page


def test_cli_reports_a_missing_table(tmp_path, capsys):
    assert report_main([str(tmp_path)]) == 2
    assert "no results.parquet" in capsys.readouterr().err


# ---------------------------------------------------------------------------- full and real runs
@pytest.mark.slow
def test_full_synthetic_report(tmp_path):
    """Every facet: two dtypes, both passes, all statuses."""
    sweep = write_sweep(tmp_path, fabricate_results())
    render.write_report(sweep)
    for name, *_ in plots.PLOTS:
        assert_png((sweep / f"{name}.png").read_bytes())


@pytest.mark.slow
def test_report_of_a_real_smoke_sweep(tmp_path):
    """The issue's check: a small real sweep, then its report (built by the sweep's callback,
    and again by hand with `python -m harness.report`)."""
    sweep = tmp_path / "sweep"
    run = subprocess.run([sys.executable, "-m", "harness", "-m", "suite=smoke", f"hydra.sweep.dir={sweep}",
                          f"results_link={tmp_path / 'latest'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=540)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (sweep / "report.html").unlink(missing_ok=True)
    by_hand = subprocess.run([sys.executable, "-m", "harness.report", str(sweep)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert by_hand.returncode == 0, by_hand.stderr
    pngs = list(sweep.glob("*.png"))
    assert {p.stem for p in pngs} >= {"time_vs_size", "speedup", "throughput", "correctness"}
    for p in pngs:
        assert_png(p.read_bytes())
    page = (sweep / "report.html").read_text(encoding="utf-8")
    assert "<th>median speedup vs cudnn</th>" in page and "<td>cudnn</td>" in page


def test_merged_machines_are_ranked_apart():
    """Two machines whose device column both read 'cpu' stay separate cases: each has its own
    cudnn reference and its own winner, and the plots facet by the device's model."""
    a = fabricate_results().assign(device="cpu", device_name="CPU A")
    b = fabricate_results().assign(device="cpu", device_name="CPU B", time_median_s=lambda d: d["time_median_s"] * 3)
    merged = analysis.by_device_name(pd.concat([a, b], ignore_index=True))
    assert set(merged["device"]) == {"cpu (CPU A)", "cpu (CPU B)"}
    t = analysis.enrich(merged)
    ok_cudnn = t[(t["impl"] == "cudnn") & (t["status"] == "ok")]
    assert (ok_cudnn["speedup"] - 1).abs().max() < 1e-12  # each machine against its own cudnn
    wins = t[t["winner"]].groupby(["shape", "dtype", "pass"])["device"].nunique()
    assert (wins == 2).all()
    single = fabricate_results()
    assert analysis.by_device_name(single)["device"].equals(single["device"])
