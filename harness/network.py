"""`python -m harness.network package.module:factory --input 1,3,224,224 impl=unfold,fft,cudnn`: the
swap-every-conv check. Does the whole network still compute the same thing, and how long does it take,
with every `nn.Conv2d` replaced by `implementations.Conv2d.from_conv(conv, impl=...)`?

Per implementation and dtype (float64 and float32 by default) the model is deep-copied, every
`nn.Conv2d` in it swapped (subclasses with their own forward are left alone and counted), and compared
with the untouched model run in float64 on the same values (the harness's reference): the output
(`.logits`, or the first tensor returned), then the input's and every parameter's gradient after a
backward of a fixed random projection `(output * P).sum()`. Errors are the harness's norm-relative
ones (the worst tensor decides) against its per-dtype tolerances (`harness.measure.check`); a gradient
that is analytically zero (rounding noise in float64) is measured against all gradients' norm. Then the
whole model is timed with the harness's timer: the forward under `torch.no_grad` (inference), and
forward + backward (a training step). The model runs in eval mode (no dropout; batch norm uses its
running statistics), so both runs compute one deterministic function.

Rows go to a results table like a sweep's (`suite` = `network:<name>`, `layer` = `(whole model)`, pass
`forward` or `forward+backward`) in `--out` (default `results/network/<name>/<date>_<time>/`), with the
report. Exit status 1 when any row is `incorrect`, `error` or `crashed`, so it can gate CI. From the
command line each implementation runs in its own worker process (`run_check(isolate=True)`), as in a
sweep: one that crashes, hangs or patches torch gets `crashed` or `error` rows, the others stay as
they are.

Options are `key=value` words, like the Hydra app's: impl, dtype, device, plugins, seed, threads,
budget_s, timing.min_run_time. Any other `key=value` is a keyword argument of the factory (as in
`harness.capture`); a factory argument with one of those names goes in `--kwargs`."""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import yaml
from rich.console import Console
from rich.table import Table
from torch import nn

import implementations

from .capture import CaptureError, add_model_arguments, build_model, first_tensor, parse_input, parse_kwargs, suite_name
from .config import Cache, DType, Timing, import_plugins
from .finish import STRICT_FAILURES, build_report
from .measure import guard
from .measure.check import check_tensors, tolerance
from .measure.job import pass_row
from .measure.passes import CaseSettings, PassResult, PassContext, fail_rest, judge, time_pass
from .measure.devices import absent_reason, resolve
from .measure.env import environment
from .measure.names import check_impls
from .measure.supervise import UNBUDGETED_S, call_isolated, grace
from .measure.timing import CaseTimeout, deadline
from .table.collect import write_results
from .table.row import Row
from .table.schema import MESSAGE_CHARS, Status, clip, frame

LAYER = "(whole model)"
FORWARD, TRAIN = "forward", "forward+backward"


@dataclass
class Options:
    """The check's settings (the `key=value` words), with the harness's defaults where it has them."""
    impl: tuple[str, ...] = ("unfold", "fft", "cudnn")
    dtype: tuple[str, ...] = ("float64", "float32")
    device: str = "cpu"
    plugins: tuple[str, ...] = ()
    seed: int = 0
    threads: Optional[int] = 1
    budget_s: float = 60.0   # per implementation, dtype and pass (a sweep's case has 2 s: a whole model is more)
    min_run_time: float = Timing.min_run_time

    def timing(self) -> Timing:
        """The harness's timing with this check's sampling time: warm only, in one round (a whole
        model is timed for scale, beside its verdict; no vendor to set it against)."""
        return Timing(min_run_time=self.min_run_time, cache=Cache.warm, repeats=1, processes=1, vs_vendor=False)


OPTION_KEYS = {"impl", "dtype", "device", "plugins", "seed", "threads", "budget_s", "timing.min_run_time"}


def split_words(words: Sequence[str]) -> tuple[Options, list[str]]:
    """key=value words -> (the check's options, the factory's key=value words)."""
    opts, factory = Options(), []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep:
            raise CaptureError(f"{word!r}: expected key=value (e.g. impl=unfold,fft,cudnn)")
        if key not in OPTION_KEYS:
            factory.append(word)
            continue
        items = tuple(v for v in value.strip("[]").split(",") if v)
        if key in ("impl", "dtype", "plugins"):
            if key == "dtype" and (bad := [d for d in items if d not in DType.__members__]):
                raise CaptureError(f"dtype={value}: unknown {', '.join(bad)}; use {', '.join(DType.__members__)}")
            setattr(opts, key, items)
        elif key == "device":
            opts.device = value
        elif key == "timing.min_run_time":
            opts.min_run_time = float(value)
        else:
            parsed = yaml.safe_load(value)
            setattr(opts, key, parsed if key == "threads" and parsed is None else type(getattr(Options, key))(parsed))
    if not opts.impl:
        raise CaptureError("impl= names no implementation")
    return opts, factory


def swap_convs(model: nn.Module, impl: str) -> tuple[int, int]:
    """Replace every plain nn.Conv2d (and implementations.Conv2d) in `model` with one computing with
    `impl`, in place; a module used at two places stays shared. Returns (swapped, subclasses left alone):
    a subclass of nn.Conv2d may have its own forward, which a swap would silently drop."""
    swappable = (nn.Conv2d, implementations.Conv2d)
    done: dict[int, nn.Module] = {}
    skipped = set()
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):  # every slot: named_children() skips a second alias
            if type(child) in swappable:
                if id(child) not in done:
                    done[id(child)] = implementations.Conv2d.from_conv(child, impl=impl)
                setattr(parent, name, done[id(child)])
            elif isinstance(child, nn.Conv2d):
                skipped.add(id(child))
    if type(model) in swappable:
        raise CaptureError("the model is a single conv module: nothing around it to check; swap it directly")
    return len(done), len(skipped)


@dataclass
class Reference:
    """The untouched model in float64, on the values a `dtype` run sees (inputs cast to it and back)."""
    x: torch.Tensor         # float64 input
    proj: torch.Tensor      # float64 projection P of the output
    out: torch.Tensor
    grads: dict[str, torch.Tensor]


def reference(model: nn.Module, sizes: tuple[int, ...], dtype: torch.dtype, device: torch.device, seed: int) -> Reference:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(sizes, dtype=torch.float64, generator=gen).to(dtype).to(device, torch.float64)
    ref = copy.deepcopy(model).to(dtype).to(device, torch.float64)
    xr = x.clone().requires_grad_()
    out = first_tensor(ref(xr))
    proj = torch.randn(out.shape, dtype=torch.float64, generator=gen).to(dtype).to(device, torch.float64)
    (out * proj).sum().backward()
    grads = {"input": xr.grad}
    grads.update({f"grad {n}": p.grad for n, p in ref.named_parameters() if p.grad is not None})
    return Reference(x, proj, out.detach(), grads)


def check_impl_on_model(model: nn.Module, impl: str, ref: Reference, dtype: torch.dtype, device: torch.device,
                        opts: Options) -> tuple[dict[str, Row], int, int]:
    """The forward and forward+backward rows of one implementation in one dtype, through the harness's
    pass machinery (harness.measure.passes): each pass under its own budget, judged by `check_tensors`
    (an analytically zero gradient against all gradients' norm), timed by `time_pass`, and whatever
    is raised mapped to a status by `fail_rest`. What is special here is the callable: a whole
    swapped model, built inside the forward's budget."""
    settings = CaseSettings(dtype, (FORWARD, TRAIN), opts.timing(), opts.threads or torch.get_num_threads(),
                            opts.budget_s, opts.seed)
    res = {FORWARD: PassResult(), TRAIN: PassResult()}
    swapped = skipped = 0
    current = FORWARD
    try:
        with deadline(opts.budget_s) as budget:
            m = copy.deepcopy(model).to(device, dtype)
            swapped, skipped = swap_convs(m, impl)
            x = ref.x.to(dtype).clone().requires_grad_()  # a copy: .to() of the same dtype would share ref.x
            out = first_tensor(m(x))
            judge(res[FORWARD], check_tensors({"output": out}, {"output": ref.out}, dtype, device), MESSAGE_CHARS)

            def forward():
                with torch.no_grad():
                    return m(x)
            time_pass(forward, settings, PassContext(device, budget=budget), res[FORWARD])
            res[FORWARD].done = True
        current = TRAIN
        with deadline(opts.budget_s) as budget:
            proj = ref.proj.to(dtype)
            (out * proj).sum().backward()
            got = {"input": x.grad, **{f"grad {n}": p.grad for n, p in m.named_parameters()}}
            judge(res[TRAIN], check_tensors(got, ref.grads, dtype, device, zero_against_all=True), MESSAGE_CHARS)
            xd = x.detach()

            def train_step():
                m.zero_grad(set_to_none=True)
                (first_tensor(m(xd)) * proj).sum().backward()
            time_pass(train_step, settings, PassContext(device, budget=budget), res[TRAIN])
            res[TRAIN].done = True
    except (CaseTimeout, Exception) as exc:  # anything the implementation raises is a row
        fail_rest(res, current, exc)
    return {p: pass_row(p, r, tolerance(dtype)) for p, r in res.items()}, swapped, skipped


def _check_dtype(model: nn.Module, target: str, sizes: tuple[int, ...], dname: str, opts: Options,
                 device: torch.device, base: dict, console: Console) -> list[Row]:
    """The float64 reference for one dtype, then every implementation's two rows in it."""
    dtype = DType[dname].torch
    with console.status(f"float64 reference for {dname}"):
        try:
            ref = reference(model, sizes, dtype, device, opts.seed)
        except Exception as exc:
            raise CaptureError(f"{target}: the forward pass on a {','.join(map(str, sizes))} input failed "
                               f"({type(exc).__name__}: {exc}). Is --input the shape this model expects?") from exc
    rows = []
    for impl in opts.impl:
        with console.status(f"{impl} {dname}"):
            result, swapped, skipped = check_impl_on_model(model, impl, ref, dtype, device, opts)
        label = f"input {','.join(map(str, sizes))}, {swapped} nn.Conv2d swapped"
        label += f", {skipped} Conv2d subclasses kept" if skipped else ""
        for row in result.values():
            for k, v in dict(base, impl=impl, dtype=dname, shape=label).items():
                setattr(row, k, v)
            rows.append(row)
    return rows


def run_check(target: str, sizes: tuple[int, ...], kwargs: dict[str, Any], opts: Options, name: str,
              out_dir: Path, console: Optional[Console] = None, isolate: bool = False) -> "pandas.DataFrame":  # noqa: F821
    """Every implementation x dtype of the swap check; writes the table and report into `out_dir`.
    `isolate` (what the command line does): each implementation in its own worker process
    (harness.measure.supervise.call_isolated) that builds the model afresh, so a crash or a patched
    torch costs that implementation's rows only and no plug-in is imported here."""
    console = console or Console(stderr=True)
    if not isolate:
        import_plugins(list(opts.plugins))  # here, as asked: the names are then checked in this process
    check_impls(opts.impl, () if not isolate else opts.plugins)
    device = resolve(opts.device)
    if (reason := absent_reason(device)) is not None:
        raise CaptureError(f"device={opts.device}: {reason}")
    threads = opts.threads or torch.get_num_threads()
    env = environment(device, threads)
    shape = dict(zip(("n", "c_in", "h", "w"), sizes)) if len(sizes) == 4 else {}
    base = dict(env, sweep=f"{out_dir.parent.name}/{out_dir.name}", job=0, suite=f"network:{name}", model=target,
                layer=LAYER, count=1, device=str(device), **shape)
    if isolate:
        rows = []
        for impl in opts.impl:
            with console.status(f"{impl}, in a worker process"):
                rows += _isolated(target, sizes, kwargs, replace(opts, impl=(impl,)), device, base, out_dir)
    else:
        rows = _check_here(target, sizes, kwargs, opts, device, base, console)
    df = frame(rows)
    write_results(df, out_dir)
    return df


def _check_here(target: str, sizes: tuple[int, ...], kwargs: dict[str, Any], opts: Options, device: torch.device,
                base: dict, console: Console) -> list[Row]:
    """The model built (seeded), then every dtype's reference and implementations, in this process."""
    torch.manual_seed(opts.seed)
    model = build_model(target, kwargs, "cpu")
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        raise CaptureError(f"{target} has no nn.Conv2d module: nothing to swap")
    threads = opts.threads or torch.get_num_threads()
    saved_threads = torch.get_num_threads()
    rows: list[Row] = []
    try:
        torch.set_num_threads(threads)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Using padding='same'", UserWarning)  # even kernels copy, as designed
            for dname in opts.dtype:
                rows += _check_dtype(model, target, sizes, dname, opts, device, base, console)
    finally:
        torch.set_num_threads(saved_threads)
    return rows


def _in_worker(target: str, sizes: tuple[int, ...], kwargs: dict[str, Any], opts: Options, device: str,
               base: dict) -> list[Row]:
    """A worker's part: torch's own functions noted before the plug-ins are imported, one
    implementation's rows, then its rows are errors if it replaced any of them (harness.measure.guard)."""
    own = guard.TorchOwn()
    import_plugins(list(opts.plugins))
    rows = _check_here(target, sizes, kwargs, opts, torch.device(device), base, Console(stderr=True))
    tampered = own.changes()
    for row in rows if tampered else ():
        row.status = Status.error
        row.message = "; ".join(filter(None, ["; ".join(tampered) + ": its results are not trusted", row.message]))
    return rows


def _isolated(target: str, sizes: tuple[int, ...], kwargs: dict[str, Any], opts: Options, device: torch.device,
              base: dict, out_dir: Path) -> list[Row]:
    """One implementation's rows from its own worker; `crashed` rows when the worker died or hung."""
    limit = len(opts.dtype) * (2 * opts.budget_s + grace(opts.budget_s)) + UNBUDGETED_S
    rows, crash = call_isolated(_in_worker, (target, sizes, kwargs, opts, str(device), base),
                                out_dir / "worker.log", limit)
    if crash is None:
        return rows
    return [Row(**base, impl=opts.impl[0], dtype=dname, pass_=pass_, status=Status.crashed, message=crash,
                tol=tolerance(DType[dname].torch)) for dname in opts.dtype for pass_ in (FORWARD, TRAIN)]


def print_summary(df, console: Console) -> None:
    """One line per implementation and dtype: the errors, the times, the status."""
    table = Table(title=f"Swap-every-conv check: {df['model'].iloc[0]} ({df['shape'].iloc[0].split(',  ')[0]})",
                  title_justify="left", box=None, show_edge=False, pad_edge=False)
    for col in ("impl", "dtype", "output err", "grad err", "tol", "forward", "fwd+bwd", "status"):
        table.add_column(col, no_wrap=True, min_width=9 if col == "status" else len(col))
    for (impl, dtype), g in df.groupby(["impl", "dtype"], sort=False):
        f, t = g[g["pass"] == FORWARD].iloc[0], g[g["pass"] == TRAIN].iloc[0]
        status = f["status"] if f["status"] == t["status"] else f"{f['status']}/{t['status']}"
        colour = "green" if status == "ok" else "red"
        table.add_row(impl, dtype, _e(f["rel_err"]), _e(t["rel_err"]), f"{f['tol']:.0e}", _s(f["time_median_s"]),
                      _s(t["time_median_s"]), f"[{colour}]{status}[/]")
    console.print(table)
    base = df[(df["impl"] == "cudnn") & df["rel_err"].notna()]
    if len(base):  # cudnn is F.conv2d, what nn.Conv2d runs: its error is the model's own in that dtype
        worst = base.groupby("dtype", sort=False)["rel_err"].max()
        console.print("cudnn (F.conv2d, as nn.Conv2d) shows the model's own error per dtype: "
                      + ", ".join(f"{d} {e:.1e}" for d, e in worst.items()), highlight=False)
    bad = df[df["status"] != "ok"]
    for row in bad.drop_duplicates(["impl", "dtype", "message"]).to_dict("records"):
        console.print(f"  {row['status']:9} {row['impl']} {row['dtype']} {row['pass']}: {clip(row['message'], 150)}",
                      markup=False, highlight=False)


def _e(v) -> str:
    return "" if v != v or v is None else f"{v:.1e}"


def _s(v) -> str:
    if v != v or v is None:
        return ""
    return f"{v:.3g} s" if v >= 1 else f"{v * 1e3:.3g} ms"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.network", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("words", nargs="*", metavar="key=value",
                        help=f"options ({', '.join(sorted(OPTION_KEYS))}) or factory keyword arguments")
    parser.add_argument("--name", help="the network's name in the table (suite network:NAME; default: the factory's)")
    parser.add_argument("--out", help="output folder (default results/network/NAME/DATE_TIME)")
    args = parser.parse_intermixed_args(argv)
    console = Console()
    try:
        opts, factory_words = split_words(args.words)
        sizes = parse_input(args.input)
        kwargs = parse_kwargs(args.kwargs, factory_words)
        name = args.name or suite_name(args.model)
        out = Path(args.out) if args.out else Path("results/network") / name / dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        df = run_check(args.model, sizes, kwargs, opts, name, out, isolate=True)
    except (CaptureError, ValueError) as exc:  # UnknownImplementation is a ValueError listing the names
        print(f"convbench: network: {exc}", file=sys.stderr)
        return 2
    print_summary(df, console)
    report = build_report(out)
    print(f"table:  {out / 'results.parquet'}  ({len(df)} rows; also results.csv)")
    if report is not None:
        print(f"report: {report}")
    bad = df[df["status"].isin(STRICT_FAILURES)]
    if len(bad):
        console.print(f"[bold red]{len(bad)} rows incorrect, error or crashed[/]: the network does not compute the same thing")
        return 1
    return 0


if __name__ == "__main__":
    # run as harness.network, not __main__: a worker finds its functions and Options by that name
    from harness.network import main as _main
    sys.exit(_main())
