"""winograd's planner and plans: the selection logic with an injected fake clock (no wall-clock
margins), the wisdom file, the reported plan, and convbench's conformance checks (values, layouts,
gradients, gradcheck, the 3x3 fuzz, OpInfo's samples) on every plan the planner may choose, each
forced by `winograd.forced(...)`. Speed is bench-perf's business, not this file's."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import implementations
from implementations import winograd
from implementations.winograd_plan import FULL_ROUNDS, Choice, Planner, machine_key


# ----------------------------------------------------------------------------------------------
# The selection logic, with a fake clock


class FakeClock:
    """Time moves only when a candidate 'runs': by the cost this simulated machine gives it."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _runner(clock: FakeClock, costs: dict, calls: list):
    def run(choice):
        calls.append(choice)
        clock.now += costs[choice]
        return f"output of {choice.label()}"
    return run


CANDS = [Choice(4, "nhwc", 2), Choice(4, "nchw", 2), Choice(2, "nhwc", 4), Choice(2, "nchw", 4)]
# Three machines with different relative costs (seconds per call): each has another fastest plan.
MACHINES = {
    "f4 nhwc fastest": dict(zip(CANDS, (0.010, 0.013, 0.016, 0.017))),
    "f4 nchw fastest": dict(zip(CANDS, (0.012, 0.009, 0.016, 0.015))),
    "f2 nchw fastest": dict(zip(CANDS, (0.030, 0.028, 0.021, 0.0205))),
}


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_the_planner_picks_the_fastest_candidate_on_each_machine(machine):
    costs = MACHINES[machine]
    clock, calls = FakeClock(), []
    planner = Planner(clock=clock, wisdom="")
    decision, result = planner.choose("layer", CANDS, _runner(clock, costs, calls), torch.device("cpu"))
    fastest = min(costs, key=costs.get)
    assert decision.choice == fastest and decision.how == "measured"
    assert result == f"output of {fastest.label()}"  # the first call returns the chosen plan's own output
    assert decision.times_ms == {c.label(): pytest.approx(costs[c] * 1e3) for c in CANDS}
    # the first FULL_ROUNDS rounds time every candidate; later ones only those within KEEP_WITHIN of the best
    later = calls[FULL_ROUNDS * len(CANDS):]
    assert calls[:FULL_ROUNDS * len(CANDS)] == CANDS * FULL_ROUNDS
    assert all(costs[c] <= 1.25 * costs[fastest] for c in later)
    close = [c for c in CANDS if costs[c] <= 1.25 * costs[fastest]]
    assert (fastest in later) == (len(close) > 1)  # one clear winner: no second round


def test_the_planner_takes_each_candidates_best_round():
    """A candidate hit by a slow spell in one round is judged by its best round (the minimum), and
    is not dropped after that round."""
    clock, calls = FakeClock(), []
    a, b = CANDS[:2]
    spells = {a: iter([0.050] + [0.010] * 9), b: iter([0.012] * 10)}

    def run(choice):
        calls.append(choice)
        clock.now += next(spells[choice])
    decision, _ = Planner(clock=clock, wisdom="").choose("k", [a, b], run, torch.device("cpu"))
    assert decision.choice == a  # 10 ms at best against 12, though its first round read 50


def test_a_slow_spell_over_two_rounds_does_not_drop_the_fastest_candidate():
    """A shared host slows one candidate's runs in the first two rounds (a spell that starts and ends
    between its runs and the other's): every candidate gets FULL_ROUNDS (3) rounds before any is
    dropped, so its third, fair, round is seen."""
    clock, calls = FakeClock(), []
    a, b = CANDS[:2]
    spells = {a: iter([0.016, 0.016] + [0.010] * 8), b: iter([0.012] * 10)}

    def run(choice):
        calls.append(choice)
        clock.now += next(spells[choice])
    decision, _ = Planner(clock=clock, wisdom="").choose("k", [a, b], run, torch.device("cpu"))
    assert FULL_ROUNDS >= 3 and decision.choice == a


def test_the_fine_stage_judges_its_candidates_on_its_own_rounds():
    """The coarse winner (F(4x4) nhwc chunk 2) had one lucky coarse run (9.5 ms against its usual
    10.5); its chunk 1 rival, timed only in the fine stage, runs 10 ms every time. The fine stage
    compares them on its own rounds, equal in number, so the lucky minimum does not decide."""
    base, half, double, far = Choice(4, "nhwc", 2), Choice(4, "nhwc", 1), Choice(4, "nhwc", 4), Choice(2, "nhwc", 2)
    costs = {base: iter([0.011, 0.011, 0.0095] + [0.0105] * 50), half: iter([0.010] * 50),
             double: iter([0.012] * 50), far: iter([0.020] * 50)}
    clock, calls = FakeClock(), []

    def run(choice):
        calls.append(choice)
        clock.now += next(costs[choice])
    decision, _ = Planner(clock=clock, wisdom="").choose("k", [base, half, double, far], run, torch.device("cpu"))
    assert calls[:3] == [base, far, base] and decision.choice == half
    assert decision.times_ms[half.label()] == pytest.approx(10.0) and decision.times_ms[base.label()] == pytest.approx(10.5)


def test_the_planner_searches_coarse_to_fine():
    """Each (tile, layout) at its first-listed chunk, then the other chunks of the winner and of any
    (tile, layout) within FINE_WITHIN of it only: 4 + 4 candidates, not 12 (the chunks of a clearly
    losing pair are never timed). Here F(4x4) nchw wins at chunk 2, and F(4x4) nhwc, 5% behind it
    there, is fastest of all at chunk 1 (what an AMD EPYC VM showed at 56x56): the fine stage finds it."""
    cands = [Choice(t, lay, c) for t in (4, 2) for lay in ("nhwc", "nchw") for c in (2, 1, 4)]
    costs = {c: 0.010 + 0.003 * (c.tile == 2) + 0.004 * (c.chunk == 4) for c in cands}
    costs.update({Choice(4, "nhwc", 2): 0.0105, Choice(4, "nhwc", 1): 0.008})
    clock, calls = FakeClock(), []
    decision, _ = Planner(clock=clock, wisdom="").choose("k", cands, _runner(clock, costs, calls), torch.device("cpu"))
    assert decision.choice == Choice(4, "nhwc", 1)
    assert {(c.tile, c.layout) for c in calls} == {(4, "nhwc"), (4, "nchw"), (2, "nhwc"), (2, "nchw")}
    assert {c for c in calls if c.chunk != 2} == {Choice(4, lay, c) for lay in ("nhwc", "nchw") for c in (1, 4)}
    assert set(decision.times_ms) == {c.label() for c in set(calls)}


def test_planning_stops_at_its_budget_after_one_full_round():
    """Slow candidates (0.3 s a call against a 0.5 s budget): every candidate is timed once, then no
    new round starts; the first call's planning cost is bounded by the budget plus one round."""
    clock, calls = FakeClock(), []
    costs = {c: 0.3 + 0.01 * i for i, c in enumerate(CANDS)}
    decision, result = Planner(clock=clock, wisdom="", budget_s=0.5).choose("slow", CANDS, _runner(clock, costs, calls),
                                                                             torch.device("cpu"))
    assert calls == CANDS and decision.choice == CANDS[0] and result == f"output of {CANDS[0].label()}"
    assert decision.planning_s == pytest.approx(sum(costs.values()))
    clock, calls = FakeClock(), []
    Planner(clock=clock, wisdom="", budget_s=60).choose("slow", CANDS, _runner(clock, costs, calls), torch.device("cpu"))
    assert len(calls) > len(CANDS)  # with room, the rounds go on


def test_a_plan_is_chosen_once_per_problem():
    clock, calls = FakeClock(), []
    planner = Planner(clock=clock, wisdom="")
    costs = MACHINES["f4 nchw fastest"]
    first, _ = planner.choose("layer", CANDS, _runner(clock, costs, calls), torch.device("cpu"))
    n = len(calls)
    again, result = planner.choose("layer", CANDS, _runner(clock, costs, calls), torch.device("cpu"))
    assert again is first and result is None and len(calls) == n  # no timing on later calls
    other, _ = planner.choose("another layer", CANDS, _runner(clock, costs, calls), torch.device("cpu"))
    assert len(calls) > n


def test_unmeasured_and_single_candidate_problems_run_nothing_to_decide():
    clock, calls = FakeClock(), []
    planner = Planner(clock=clock, wisdom="")
    run = _runner(clock, MACHINES["f2 nchw fastest"], calls)
    d, result = planner.choose("tiny", CANDS, run, torch.device("cpu"), measure=False)
    assert d.choice == CANDS[0] and d.how == "estimated" and result is None and not calls
    d, _ = planner.choose("one", CANDS[2:3], run, torch.device("cpu"))
    assert d.choice == CANDS[2] and not calls


def test_wisdom_is_written_and_read_back_per_machine(tmp_path):
    path = tmp_path / "wisdom.json"
    clock, calls = FakeClock(), []
    costs = MACHINES["f2 nchw fastest"]
    Planner(clock=clock, wisdom=str(path)).choose("layer", CANDS, _runner(clock, costs, calls), torch.device("cpu"))
    data = json.loads(path.read_text())
    here = machine_key(torch.device("cpu"))
    assert torch.__version__ in here
    assert data["machines"][here]["layer"]["tile"] == 2 and data["machines"][here]["layer"]["layout"] == "nchw"

    def must_not_run(choice):
        raise AssertionError("a plan in the wisdom file is not measured again")
    d, _ = Planner(clock=clock, wisdom=str(path)).choose("layer", CANDS, must_not_run, torch.device("cpu"))
    assert d.choice == Choice(2, "nchw", 4) and d.how == "wisdom"

    # another machine's (or torch version's) wisdom is kept in the file and not used here
    data["machines"] = {"another CPU | AVX2 | torch 0.0": data["machines"][here]}
    path.write_text(json.dumps(data))
    calls.clear()
    d, _ = Planner(clock=clock, wisdom=str(path)).choose("layer", CANDS, _runner(clock, costs, calls), torch.device("cpu"))
    assert d.how == "measured" and calls
    assert set(json.loads(path.read_text())["machines"]) == {"another CPU | AVX2 | torch 0.0", here}


@pytest.mark.parametrize("content", ["not json", json.dumps({"version": 99, "machines": {}}),
                                     "WISDOM_WITH_A_PLAN_NO_LONGER_OFFERED"])
def test_bad_or_stale_wisdom_is_ignored(tmp_path, content):
    path = tmp_path / "wisdom.json"
    if content == "WISDOM_WITH_A_PLAN_NO_LONGER_OFFERED":
        here = machine_key(torch.device("cpu"))
        content = json.dumps({"version": 1, "machines": {here: {"layer": {"tile": 6, "layout": "nhwc", "chunk": 1}}}})
    path.write_text(content)
    clock, calls = FakeClock(), []
    d, _ = Planner(clock=clock, wisdom=str(path)).choose("layer", CANDS, _runner(clock, MACHINES["f4 nhwc fastest"], calls),
                                                        torch.device("cpu"))
    assert d.how == "measured" and d.choice == CANDS[0]


def test_the_wisdom_path_comes_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "env-wisdom.json"
    monkeypatch.setenv("CONVBENCH_WINOGRAD_WISDOM", str(path))
    clock = FakeClock()
    Planner(clock=clock).choose("layer", CANDS, _runner(clock, MACHINES["f4 nhwc fastest"], []), torch.device("cpu"))
    assert path.exists()
    monkeypatch.delenv("CONVBENCH_WINOGRAD_WISDOM")
    assert Planner().wisdom_path() is None  # unset: memory only


# ----------------------------------------------------------------------------------------------
# Candidates, the planner inside `winograd`, the reported plan


def test_candidates_cover_every_tile_in_both_fused_layouts_whatever_the_input_layout(fused_built):
    x = torch.empty(8, 64, 56, 56)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        cands = winograd.candidates(x.contiguous(memory_format=memory_format), 64, (1, 1, 1, 1), 1)
        assert {(c.tile, c.layout) for c in cands} == {(t, lay) for t in (2, 4, 6) for lay in ("fused", "fused_kb")}
        # at most half the batch (the memory bound), but fused_kb (weights in blocks) takes the whole batch too
        assert all(1 <= c.chunk <= 4 for c in cands if c.layout == "fused")
        assert {c.chunk for c in cands if c.layout == "fused_kb"} >= {8} and all(c.chunk <= 8 for c in cands)
        assert cands[0] == Choice(4, "fused", winograd._default_chunk(x, 64, (1, 1, 1, 1), 1, winograd.F4))
    # the torch layouts stay forceable
    assert winograd.candidates(x, 64, (1, 1, 1, 1), 1, layouts=("nhwc", "nchw"))[0].layout == "nhwc"


def test_without_the_c_transforms_the_planner_keeps_the_torch_layouts(monkeypatch):
    """No C compiler (or a failed build): no fused candidate, the forced fused plans refuse with the
    reason and its fix, `winograd` still runs."""
    from implementations import winograd_native
    monkeypatch.setattr(winograd_native, "_lib", None)
    monkeypatch.setattr(winograd_native, "_why", "the fused winograd layout needs a C compiler and `cc` was not "
                        "found: install one (`apt-get install gcc`) or name it with CC=...")
    x = torch.empty(8, 64, 56, 56)
    cands = winograd.candidates(x, 64, (1, 1, 1, 1), 1)
    assert {c.layout for c in cands} == {"nhwc", "nchw"} and cands[0] == Choice(4, "nhwc", winograd._default_chunk(
        x, 64, (1, 1, 1, 1), 1, winograd.F4))
    assert {c.layout for c in winograd.candidates(x.contiguous(memory_format=torch.channels_last), 64,
                                                  (1, 1, 1, 1), 1)} == {"nhwc"}
    fn = winograd.forced(4, "fused")
    assert "apt-get install gcc" in fn.unsupported("cpu", torch.float32)
    with pytest.raises(implementations.Unsupported, match="C compiler"):
        fn(torch.randn(1, 2, 6, 6), torch.randn(2, 2, 3, 3), padding=1)
    xs, w = torch.randn(2, 3, 9, 9, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(implementations.get("winograd")(xs, w, padding=1), F.conv2d(xs, w, padding=1))


def test_the_fused_layout_is_cpu_code():
    assert "CPU code" in winograd.forced(4, "fused").unsupported("cuda", torch.float32)
    assert "float16" in winograd.forced(4, "fused").unsupported("cpu", torch.float16)


@pytest.fixture
def fused_built():
    """The fused layout's C transforms, built here; skipped only where no C compiler exists (where one
    does, a failed build fails the test: `test_the_c_transforms_build_where_a_compiler_exists`)."""
    from implementations import winograd_native
    if not winograd_native.available():
        if _compiler() is None:
            pytest.skip(winograd_native.why_unavailable())
        pytest.fail(winograd_native.why_unavailable())


def _compiler():
    import shutil
    from implementations import winograd_native
    return shutil.which(winograd_native.compiler_name())


@pytest.fixture
def fresh_planner(monkeypatch):
    """`winograd`'s planner, empty, with a fake clock under which the F(2x2) plans of its last layout
    (fused_kb, or nchw where the C transforms cannot run) are fastest (not this CPU's order: the
    choice must come from the clock), measuring every problem. `.fast` names that layout."""
    from implementations import winograd_native
    fast = "fused_kb" if winograd_native.available() else "nchw"
    clock = FakeClock()
    planner = Planner(clock=clock, wisdom="")
    monkeypatch.setattr(winograd, "PLANNER", planner)
    monkeypatch.setattr(winograd, "MEASURE_MIN_MACS", 0)
    real = winograd._conv_with

    def slower_unless_f2_fast(choice, *args):
        clock.now += 1.0 if (choice.tile, choice.layout) == (2, fast) else 2.0 + choice.chunk
        return real(choice, *args)
    monkeypatch.setattr(winograd, "_conv_with", slower_unless_f2_fast)
    winograd.clear_last_plan()
    planner.fast = fast
    return planner


def test_winograd_runs_and_reports_the_planned_choice(fresh_planner):
    x = torch.randn(4, 8, 12, 12, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    fn = implementations.get("winograd")
    out = fn(x, w, b, padding=1)
    plan = fn.last_plan()
    assert plan.startswith(f"forward: F(2x2,3x3) {fresh_planner.fast} chunk") and "measured" in plan
    torch.testing.assert_close(out, F.conv2d(x, w, b, padding=1), rtol=1e-10, atol=1e-10)
    out.backward(torch.ones_like(out))
    ref = [torch.autograd.grad(F.conv2d(x, w, b, padding=1).sum(), t)[0] for t in (x, w)]
    torch.testing.assert_close(x.grad, ref[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(w.grad, ref[1], rtol=1e-10, atol=1e-10)
    report = winograd.last_plan()
    assert set(report) == {"forward", "grad_input", "grad_weight"}
    assert report["grad_input"].startswith(f"F(2x2,3x3) {fresh_planner.fast}")
    # the second call is planned already: same plan, bitwise the same output
    out2 = fn(x, w, b, padding=1)
    assert torch.equal(out, out2) and winograd.last_plan()["forward"] == report["forward"]
    assert winograd.describe(x, w, padding=1) == report["forward"]
    assert winograd.describe(x[:1], w, padding=1) == "not planned yet"
    assert "3x3 kernels only" in winograd.describe(x, torch.randn(6, 8, 5, 5, dtype=x.dtype), padding=1)


def test_fixed_names_do_not_plan(fresh_planner):
    x, w = torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3)
    implementations.get("winograd_f2")(x, w, padding=1)
    assert winograd.last_plan()["forward"] == f"F(2x2,3x3) nhwc chunk {winograd._default_chunk(x, 4, (1,) * 4, 1, winograd.F2)} (forced)"
    winograd.conv2d_winograd_f4(x, w, padding=1)
    assert winograd.last_plan()["forward"].startswith("F(4x4,3x3) nhwc") and not fresh_planner.decisions
    assert implementations.get("implementations.winograd:conv2d_winograd_f4") is winograd.conv2d_winograd_f4


def test_small_problems_are_estimated_not_timed(monkeypatch):
    planner = Planner(clock=FakeClock(), wisdom="")
    monkeypatch.setattr(winograd, "PLANNER", planner)
    x, w = torch.randn(1, 2, 6, 6), torch.randn(2, 2, 3, 3)
    implementations.get("winograd")(x, w, padding=1)
    assert "(estimated)" in winograd.last_plan()["forward"]


def test_forced_rejects_unknown_plans():
    for bad in ((8,), (4, "nhcw"), (6, "nhwc")):  # F(6x6) has GEMM transforms only: nchw
        with pytest.raises(ValueError):
            winograd.forced(*bad)


# ----------------------------------------------------------------------------------------------
# Conformance of every plan the planner may choose

# chunk 2: several chunks and a smaller last one for the fuzz's batches of 3 (its own buffers)
PLANS = [(tile, layout, chunk) for tile in (4, 2, 6) for layout in winograd.LAYOUTS[tile] for chunk in (None, 2)]


def _plan_id(p):
    tile, layout, chunk = p
    return f"f{tile}_{layout}" + (f"_chunk{chunk}" if chunk else "")


def _is_3x3_stride1(case) -> bool:
    k = case.kwargs
    return (tuple(case.weight[2:]) == (3, 3) and k.get("stride", 1) in (1, (1, 1))
            and k.get("dilation", 1) in (1, (1, 1)))


# Every chunk size: values, batching, the 3x3 fuzz. The plans with the rule's chunk: the rest as well.
CHECKS_ALL = ("values", "batch", "fuzz_3x3")
CHECKS_RULE_CHUNK = ("large", "layouts", "grad_outputs", "requires_grad", "deterministic", "gradcheck",
                     "opinfo_samples")


def _case_as_3x3(case):
    """A case winograd refuses (not 3x3 stride 1) as the same tensors and options with a 3x3 kernel at
    stride 1 and dilation 1 (as tests/test_conformance.py's `supported_case`); others unchanged."""
    import dataclasses
    if _is_3x3_stride1(case):
        return case
    kwargs = dict(case.kwargs, stride=1, dilation=1)
    if kwargs.get("padding", 0) != "same":
        kwargs["padding"] = 1
    return dataclasses.replace(case, name=case.name + "_as_3x3", weight=tuple(case.weight[:2]) + (3, 3), kwargs=kwargs)


def _as_3x3(check):
    """The check on `_case_as_3x3` of its case, so it still exercises the plan (checks about
    arguments or OpInfo samples unchanged)."""
    import dataclasses
    case = check.planned.case
    if not hasattr(case, "weight"):
        return check
    return dataclasses.replace(check, planned=dataclasses.replace(check.planned, case=_case_as_3x3(case)))


@pytest.mark.parametrize("plan", [p if p[2] is None else pytest.param(p, marks=pytest.mark.slow) for p in PLANS],
                         ids=_plan_id)
def test_every_plan_passes_conformance(plan, request):
    """Every plan the planner may choose (chunk 2 variants: `make test-slow`)."""
    from harness.public.testing import plan as plan_checks
    tile, layout, chunk = plan
    if layout in winograd.FUSED:
        request.getfixturevalue("fused_built")
    fn = winograd.forced(tile, layout, chunk)
    names = CHECKS_ALL + (CHECKS_RULE_CHUNK if chunk is None else ())
    checks = plan_checks(fn, dtypes=(torch.float32, torch.float64), devices=("cpu",), checks=names)
    results = [(c, c.result()) for c in map(_as_3x3, checks)]
    failed = [r for _, r in results if r.status == "failed"]
    assert not failed, "\n\n".join(f"{r.id}: {r.message}\n{r.reproduce}" for r in failed[:5])
    # a plan may refuse only what winograd does not cover: 3x3 stride-1 cases must all run
    wrongly_skipped = [r.id for c, r in results if r.status == "skipped" and hasattr(c.planned.case, "weight")
                       and _is_3x3_stride1(c.planned.case)]
    assert not wrongly_skipped, wrongly_skipped
    ran = {r.check for _, r in results if r.status == "ok"}
    assert set(names) <= ran, f"checks that never ran a case: {set(names) - ran}"


def test_the_c_transforms_build_where_a_compiler_exists():
    from implementations import winograd_native
    if _compiler() is None:
        assert not winograd_native.available() and "C compiler" in winograd_native.why_unavailable()
    else:
        assert winograd_native.available(), winograd_native.why_unavailable()


@pytest.mark.parametrize("tile", (2, 4, 6))
@pytest.mark.parametrize("memory_format", ("strided", "channels_last"))
def test_fused_blocks_of_output_channels_and_crops_match_the_reference(tile, memory_format, fused_built):
    """The fused plan with the whole batch in one chunk transforms its weights KBLOCK output channels
    at a time (70 channels: two blocks and a remainder); negative padding (grad_input's crop) and a
    strided or channels_last input are read in place. float64 against F.conv2d, all three products."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 20, 23, 14, dtype=torch.float64, generator=g)[:, :, ::2]  # strided rows
    x = x.contiguous(memory_format=torch.channels_last) if memory_format == "channels_last" else x
    x.requires_grad_()
    w = torch.randn(70, 20, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(70, dtype=torch.float64, generator=g, requires_grad=True)
    fn = winograd.forced(tile, "fused_kb", 3)
    for padding in (1, 0, (2, 1)):
        out = fn(x, w, b, padding=padding)
        ref = F.conv2d(x, w, b, padding=padding)
        assert out.is_contiguous(memory_format=torch.channels_last) == (memory_format == "channels_last")
        torch.testing.assert_close(out, ref, rtol=1e-11, atol=1e-11)
        gy = torch.randn(ref.shape, dtype=torch.float64, generator=g)
        got = torch.autograd.grad(out, (x, w, b), gy)
        for a, e in zip(got, torch.autograd.grad(ref, (x, w, b), gy)):
            torch.testing.assert_close(a, e, rtol=1e-11, atol=1e-11)
    assert winograd.last_plan()["grad_input"].startswith(f"F({tile}x{tile},3x3) fused_kb chunk 3")


def test_fused_transforms_split_over_threads_give_the_same_bits(fused_built):
    """With several torch threads the C transforms split the tile rows over threads; each element is
    computed the same way whichever thread does it, so each transform is bitwise its one-thread self
    (and the split covers every row: a missed one would keep the buffer's NaN)."""
    from implementations import winograd_native as native
    m, th, tw = 4, 10, 10
    x, mm = torch.randn(2, 24, 40, 40), torch.randn(36, 2 * th * tw, 16)
    results = {}
    before = torch.get_num_threads()
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            v, gy = torch.full((36, 2 * th * tw, 24), float("nan")), torch.full((36, 2 * th * tw, 24), float("nan"))
            out = torch.full((2, 16, 40, 40), float("nan"))
            native.input_transform(v, x, 0, 2, m, 1, 1, th, tw)
            native.grad_output_transform(gy, x, 0, 2, m, th, tw)
            native.output_transform(out, mm, torch.randn(16, generator=torch.Generator().manual_seed(0)), 0, 2, m, th, tw)
            results[threads] = (v, gy, out)
    finally:
        torch.set_num_threads(before)
    for one, three in zip(results[1], results[3]):
        assert not one.isnan().any() and torch.equal(one, three)


@pytest.mark.parametrize("plan", PLANS[::2], ids=_plan_id)
def test_every_plan_refuses_what_winograd_does_not_cover(plan):
    fn = winograd.forced(*plan)
    x = torch.randn(1, 2, 8, 8)
    for w, kwargs in ((torch.randn(2, 2, 5, 5), {}), (torch.randn(2, 2, 3, 3), dict(stride=2)),
                      (torch.randn(2, 2, 3, 3), dict(dilation=2))):
        with pytest.raises(implementations.Unsupported, match=r"\w"):
            fn(x, w, **kwargs)
    with pytest.raises(implementations.Unsupported, match="float16"):
        fn(x.half(), torch.randn(2, 2, 3, 3).half())


def _margins(fn, cases):
    """Worst error / tolerance per product (out, grad_input, grad_weight) in float32 over `cases`."""
    import math
    from harness.public.testing import compare
    from harness.public.testing.cases import make_tensors
    worst = {}
    for case in cases:
        x, w, b = make_tensors(case, torch.float32)
        out = fn(x, w, b, **case.kwargs)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).float()
        ref, gx, gw, _ = compare.reference(x, w, b, case.kwargs, g)
        out.backward(g)
        red = compare.reductions(case, ref.shape)
        for name, a, e in (("out", out, ref), ("grad_input", x.grad, gx), ("grad_weight", w.grad, gw)):
            if e.numel():
                scale = max(e.norm().item(), math.sqrt(e.numel()))
                ratio = (a.detach().double() - e).norm().item() / scale / compare.tolerance(torch.float32, red[name])
                worst[name] = max(worst.get(name, 0.0), ratio)
    return worst


@pytest.mark.parametrize("layout", ("nchw", "fused"))
def test_f6_holds_the_float32_tolerance_with_margin_where_it_runs(layout, request):
    """F(6x6) runs the forward and grad_input only where it keeps within half the float32 tolerance on
    every conformance shape (convbench's cases, larger images, realistic layers and the 3x3 fuzz's 50,
    as 3x3 stride-1 convolutions); grad_weight, which misses it, is computed with F(4x4) instead."""
    from harness.public.testing import cases as C, fuzz
    cases = [_case_as_3x3(c) for c in C.CASES + C.LARGE_IMAGE_CASES + C.MEDIUM_CASES]
    cases += [c for c, _, _ in fuzz.configs(50, [torch.float32], fuzz.DEFAULT_SEED, True, "fuzz_3x3")]
    if layout == "fused":
        request.getfixturevalue("fused_built")
    worst = _margins(winograd.forced(6, layout), cases)
    assert worst["out"] <= 0.5 and worst["grad_input"] <= 0.5, worst
    assert worst["grad_weight"] <= 0.5, worst  # computed by F(4x4) in the same layout
    x = torch.randn(2, 3, 12, 12, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    winograd.forced(6, layout)(x, w, padding=1).sum().backward()
    plans = winograd.last_plan()
    assert plans["forward"].startswith(f"F(6x6,3x3) {layout}") and plans["grad_input"].startswith(f"F(6x6,3x3) {layout}")
    assert plans["grad_weight"].startswith(f"F(4x4,3x3) {layout}")
