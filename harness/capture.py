"""`python -m harness.capture package.module:factory --input 1,3,224,224`: a suite from any model's convolutions.

    python -m harness.capture examples.hf_models:resnet50 --input 1,3,224,224        # -> ./conf/suite/resnet50.yaml
    python -m harness.capture mypkg.nets:make_net --input 2,3,64,64 --name mynet width=32 --kwargs '{"depth": 4}'
    python -m harness -m suite=model suite.model=mypkg.nets:make_net suite.input=[2,3,64,64]   # captured per job

The factory (any callable returning an `nn.Module`, with keyword arguments from `key=value` or
`--kwargs JSON`) is built and run once, in eval mode under `torch.no_grad`, on a random input of the
given shape. Every 2-D convolution of that forward pass is recorded, and each unique shape becomes one
suite entry with its `count` (calls per forward pass) and the module `paths` making them; its layer
name is the first path.

How the calls are seen: a `TorchFunctionMode` rather than forward hooks on `nn.Conv2d`. The mode sees
every `torch.conv2d` call (`F.conv2d` is the same function), so convolutions called functionally
inside custom modules are counted too, and it records the call as it is computed: an `nn.Conv2d` with
`padding_mode='reflect'` pads first and convolves with padding 0, and that is the shape worth timing.
Forward pre-hooks on every module only keep a stack of module names, so each call gets the path of the
innermost module making it.

Where it runs: on the meta device by default (shapes only: no memory, no arithmetic, so a ResNet-50
takes about a second), falling back to the CPU for models that cannot run on meta (`--device cpu`
asks for the CPU directly)."""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib
import json
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import yaml
from torch import nn
from torch.overrides import TorchFunctionMode

from .config import Config, Shape
from .configs import capture_dir, on_search_path
from .table.schema import clip

ROOT_PATH = "(model)"  # the path of a model that is itself one conv module


class CaptureError(ValueError):
    """Bad input to a capture (factory, input shape, model): the message names the problem and the fix."""


# ------------------------------------------------------------------------------- the user's model
def load_factory(target: str) -> Callable[..., Any]:
    """'package.module:factory' -> the callable (a class counts), with errors that say what to fix."""
    module_name, sep, attr = str(target).partition(":")
    if not sep or not module_name or not attr:
        raise CaptureError(f"{target!r}: name the model factory as package.module:factory "
                           "(e.g. examples.hf_models:resnet50)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CaptureError(f"{target}: cannot import {module_name!r} ({type(exc).__name__}: {exc}). Is its "
                           "folder on PYTHONPATH (e.g. PYTHONPATH=examples), and are its dependencies installed?") from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            callables = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
            raise CaptureError(f"{target}: {module_name!r} has no {attr!r}; its callables: "
                               f"{', '.join(callables) or 'none'}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise CaptureError(f"{target}: {attr!r} is a {type(obj).__name__}, not a callable returning an nn.Module")
    return obj


def parse_input(text: str | Sequence[int]) -> tuple[int, ...]:
    """'1,3,224,224' (or [1, 3, 224, 224]) -> (1, 3, 224, 224)."""
    if isinstance(text, str):
        parts = [p for p in re.split(r"[,x\s]+", text.strip().strip("[]()")) if p]
    else:
        parts = list(text)
    try:
        sizes = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        sizes = ()
    if not sizes or any(s <= 0 for s in sizes) or any(isinstance(p, float) for p in parts):
        raise CaptureError(f"--input {text!r}: give the model input's shape as comma-separated positive integers, "
                           "e.g. --input 1,3,224,224 (batch, channels, height, width)")
    return sizes


def parse_kwargs(kwargs_json: Optional[str] = None, pairs: Sequence[str] = ()) -> dict[str, Any]:
    """Factory keyword arguments from `--kwargs '{"num_classes": 10}'` and `key=value` words (values read
    as YAML: 10 is an int, true a bool, [1,2] a list, anything else a string)."""
    kwargs: dict[str, Any] = {}
    if kwargs_json:
        try:
            kwargs = json.loads(kwargs_json)
        except json.JSONDecodeError as exc:
            raise CaptureError(f"--kwargs {kwargs_json!r} is not JSON ({exc}); e.g. --kwargs '{{\"num_classes\": 10}}'") from exc
        if not isinstance(kwargs, dict):
            raise CaptureError(f"--kwargs must be a JSON object like '{{\"num_classes\": 10}}', got {kwargs_json!r}")
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise CaptureError(f"{pair!r}: factory keyword arguments are key=value (e.g. num_classes=10)")
        kwargs[key] = yaml.safe_load(value) if value else ""
    return kwargs


def build_model(target: str, kwargs: dict[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    """Call the factory (its tensors created on `device`) and check it returned a module, in eval mode."""
    factory = load_factory(target)
    try:
        with torch.device(device):
            model = factory(**kwargs)
    except TypeError as exc:
        raise CaptureError(f"{target}: calling it with {kwargs or 'no arguments'} failed: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise CaptureError(f"{target} returned a {type(model).__name__}, not an nn.Module")
    return model.eval()


def first_tensor(out: Any) -> torch.Tensor:
    """The tensor a model 'outputs': itself, `.logits`, or the first tensor in a tuple, list or dict."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    values = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else ()
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
    raise CaptureError(f"the model returned a {type(out).__name__} holding no tensor")


# --------------------------------------------------------------------------------- the recording
@dataclass
class Call:
    """One conv2d call of the forward pass: who made it and what it computed."""
    path: str
    shape: dict[str, Any]   # Shape's fields, without layer/count/paths


def _pair(v: Any) -> Any:
    """An int, or [h, w] (an int when both agree); 'same' / 'valid' as they are."""
    if isinstance(v, str):
        return v
    items = [int(x) for x in v] if isinstance(v, (tuple, list)) else [int(v)] * 2
    if len(items) == 1:
        items *= 2
    return items[0] if items[0] == items[1] else items


def _conv_shape(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> dict[str, Any]:
    """F.conv2d's arguments -> Shape's fields (an unbatched 3-D input counts as batch 1)."""
    size = tuple(input.shape)
    n, (c_in, h, w) = (size[0], size[1:]) if len(size) == 4 else (1, size)
    c_out, _, kh, kw = weight.shape
    return dict(n=int(n), c_in=int(c_in), h=int(h), w=int(w), c_out=int(c_out), kernel=_pair((kh, kw)),
                stride=_pair(stride), padding=_pair(padding), dilation=_pair(dilation), groups=int(groups),
                bias=bias is not None)


class _Recorder(TorchFunctionMode):
    """Records every torch.conv2d (= F.conv2d) call with the innermost running module's path."""

    def __init__(self, stack: list[str]) -> None:
        super().__init__()
        self.stack = stack
        self.calls: list[Call] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.conv2d:
            self.calls.append(Call(self.stack[-1] if self.stack else ROOT_PATH, _conv_shape(*args, **kwargs)))
        return func(*args, **kwargs)


def record_calls(model: nn.Module, example: torch.Tensor) -> list[Call]:
    """Run `model(example)` once under no_grad and return its conv2d calls in order."""
    stack: list[str] = []

    def enter(path: str):
        def hook(module, args) -> None:  # returning None keeps the module's input as it is
            stack.append(path)
        return hook

    def leave(module, args, output) -> None:
        if stack:
            stack.pop()

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(enter(name or ROOT_PATH)))
        handles.append(module.register_forward_hook(leave, always_call=True))
    recorder = _Recorder(stack)
    try:
        with torch.no_grad(), recorder, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # e.g. 'same' with an even kernel copies its input
            model(example)
    finally:
        for h in handles:
            h.remove()
    return recorder.calls


def unique_shapes(calls: list[Call]) -> list[Shape]:
    """One Shape per distinct problem, in order of first call: count = calls, paths = callers (once each),
    layer = the first path (made unique if one module runs several shapes)."""
    groups: dict[str, dict[str, Any]] = {}
    for call in calls:
        key = json.dumps(call.shape, sort_keys=True)
        g = groups.setdefault(key, dict(call.shape, count=0, paths=[]))
        g["count"] += 1
        if call.path not in g["paths"]:
            g["paths"].append(call.path)
    shapes, used = [], set()
    for g in groups.values():
        layer, i = g["paths"][0], 2
        while layer in used:
            layer, i = f"{g['paths'][0]}#{i}", i + 1
        used.add(layer)
        shapes.append(Shape(layer=layer, **g))
    return shapes


@dataclass
class Captured:
    """The result of one capture: the suite's shapes and how they were found."""
    target: str
    input: tuple[int, ...]
    kwargs: dict[str, Any]
    shapes: list[Shape]
    calls: int
    device: str          # where the forward pass ran (meta, or cpu after a fallback)
    seconds: float
    notes: list[str] = field(default_factory=list)


def capture(target: str, input: str | Sequence[int], kwargs: Optional[dict[str, Any]] = None,
            device: str = "auto") -> Captured:
    """Build the model, run it once on a random `input`-shaped tensor, return its unique conv shapes.
    device: 'meta', 'cpu', or 'auto' (meta, falling back to the CPU when the model cannot run there)."""
    start = time.perf_counter()
    sizes = parse_input(input)
    kwargs = dict(kwargs or {})
    if device not in ("auto", "meta", "cpu"):
        raise CaptureError(f"device={device!r}: capture runs on 'meta', 'cpu' or 'auto' (meta, else cpu)")
    notes: list[str] = []
    calls: Optional[list[Call]] = None
    for dev in (["meta", "cpu"] if device == "auto" else [device]):
        model = build_model(target, kwargs, dev)  # CaptureError (bad factory) is not retried
        try:
            with torch.device(dev):
                gen = None if dev == "meta" else torch.Generator().manual_seed(0)
                example = torch.randn(sizes, generator=gen)
                calls = record_calls(model, example)
            used = dev
            break
        except Exception as exc:
            notes.append(f"forward pass on {dev} failed: {clip(f'{type(exc).__name__}: {exc}', 300)}")
    if calls is None:
        raise CaptureError(f"{target}: the forward pass on a {','.join(map(str, sizes))} input failed ({'; '.join(notes)}). "
                           "Is --input the shape this model expects (e.g. 1,3,224,224)?")
    if not calls:
        raise CaptureError(f"{target}: the forward pass made no conv2d call, so there is nothing to capture "
                           "(convbench measures 2-D convolutions: nn.Conv2d or F.conv2d)")
    return Captured(target, sizes, kwargs, unique_shapes(calls), len(calls), used, time.perf_counter() - start, notes)


# ----------------------------------------------------------------------------------- suite files
def suite_name(target: str) -> str:
    """A config-group-safe default name from the factory: 'examples.hf_models:resnet50' -> 'resnet50'."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", target.rpartition(":")[2]).strip("_").lower()
    return name or "model"


def _shape_yaml(s: Shape) -> str:
    d = {f.name: getattr(s, f.name) for f in dataclasses.fields(Shape)}
    for k in ("kernel", "stride", "dilation", "padding"):
        d[k] = _pair(d[k])
    defaults = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "bias": True}
    d = {k: v for k, v in d.items() if defaults.get(k, object()) != v}
    return yaml.safe_dump(d, default_flow_style=True, width=1 << 20, sort_keys=False).strip()


def suite_yaml(c: Captured, name: str, description: Optional[str] = None) -> str:
    """The suite file: provenance in comments and keys, then one flow-style line per unique shape."""
    command = " ".join(["python -m harness.capture", c.target, "--input", ",".join(map(str, c.input))]
                       + ([f"--kwargs '{json.dumps(c.kwargs)}'"] if c.kwargs else []) + [f"--name {name}"])
    head = yaml.safe_dump({"name": name,
                           "description": description or f"conv shapes of {c.target} on a {'x'.join(map(str, c.input))} input",
                           "model": c.target, "input": list(c.input), "kwargs": c.kwargs},
                          default_flow_style=None, width=1 << 20, sort_keys=False)
    lines = [f"# Captured {dt.date.today().isoformat()} by: {command}",
             f"# {c.calls} conv2d calls per forward pass, {len(c.shapes)} unique shapes; `count` = calls, `paths` =",
             "# the modules making them. The listed shapes are measured as they are (suite.model is the provenance).",
             head.rstrip(), "shapes:"]
    lines += [f"  - {_shape_yaml(s)}" for s in c.shapes]
    return "\n".join(lines) + "\n"


def expand_suite(cfg: Config) -> Config:
    """`suite=model suite.model=... suite.input=[...]`: a suite with a model and no shapes gets them
    captured now (the same model and input give the same shapes, so resume and aggregation see the
    same cases in every job). A suite that lists shapes is returned as it is."""
    suite = cfg.suite
    if suite.shapes:
        return cfg
    if not suite.model:
        raise CaptureError(f"suite {suite.name!r} lists no shapes: give a model to capture them from, "
                           "suite=model suite.model=package.module:factory suite.input=[1,3,224,224]")
    c = capture(suite.model, suite.input, suite.kwargs)
    name = suite.name if suite.name not in ("", "model") else suite.model
    description = suite.description or f"conv shapes of {suite.model}"
    return dataclasses.replace(cfg, suite=dataclasses.replace(suite, name=name, description=description,
                                                              shapes=c.shapes))


# ------------------------------------------------------------------------------------------- CLI
def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments capture and the swap check (harness.network) share."""
    parser.add_argument("model", help="the model factory, package.module:callable (returns an nn.Module)")
    parser.add_argument("--input", required=True, help="the input tensor's shape, e.g. 1,3,224,224")
    parser.add_argument("--kwargs", default=None, help="factory keyword arguments as JSON, e.g. '{\"num_classes\": 10}'")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.capture", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("pairs", nargs="*", metavar="key=value", help="more factory keyword arguments")
    parser.add_argument("--name", help="the suite's name (default: the factory's name)")
    parser.add_argument("--out", help="where to write the suite: a .yaml path, or - for stdout "
                                      "(default ./conf/suite/NAME.yaml, or ./convbench/suite/ when that folder "
                                      "exists: usable as suite=NAME from this folder)")
    parser.add_argument("--description", help="the suite's description")
    parser.add_argument("--device", default="auto", choices=("auto", "meta", "cpu"),
                        help="where the forward pass runs (auto: meta, else cpu)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing suite file")
    args = parser.parse_intermixed_args(argv)
    try:
        name = args.name or suite_name(args.model)
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
            raise CaptureError(f"--name {name!r}: use letters, digits, '_', '-' or '.' (it becomes suite=NAME)")
        out = None if args.out == "-" else Path(args.out) if args.out else capture_dir() / f"{name}.yaml"
        if out is not None and out.exists() and not args.force:
            raise CaptureError(f"{out} exists: choose another --name or --out, or --force to overwrite it")
        c = capture(args.model, args.input, parse_kwargs(args.kwargs, args.pairs), args.device)
    except CaptureError as exc:
        print(f"convbench: capture: {exc}", file=sys.stderr)
        return 2
    text = suite_yaml(c, name, args.description)
    if out is None:
        sys.stdout.write(text)
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    for note in c.notes:
        print(f"note: {note}; ran on {c.device} instead", file=sys.stderr)
    print(f"captured {c.calls} conv2d calls, {len(c.shapes)} unique shapes from {c.target} "
          f"(input {','.join(map(str, c.input))}, on {c.device}) in {c.seconds:.2f} s")
    print(f"suite:  {out}")
    if on_search_path(out.parent):
        print(f"sweep:  python -m harness -m suite={out.stem} impl=unfold,fft,cudnn")
    elif out.resolve().parent.name == "suite":
        print(f"sweep:  python -m harness -m --config-dir {out.resolve().parent.parent} suite={out.stem} impl=unfold,fft,cudnn")
    else:
        print(f"sweep:  move it into conf/suite/ (or DIR/suite/ and add --config-dir DIR), then suite={out.stem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
