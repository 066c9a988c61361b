"""Every conformance check convbench has, as (check, case, dtype) triples per implementation and device.

A check is a function `run(fn, case, dtype, device, seed)` (values.py, calls.py, errors.py, opinfo.py);
`Spec.cases` lists its cases for a run's options. The quick suite is what convbench's own `make test`
runs on each built-in; `full=True` adds realistic layer sizes, 500 fuzz examples in every dtype and
OpInfo's float64 samples (convbench's `make test-slow`)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import torch

from . import calls, cases as C, errors, fuzz, opinfo, values

ALL_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Options:
    dtypes: tuple = ALL_DTYPES
    full: bool = False
    max_examples: Optional[int] = None   # fuzz examples per fuzz check (default 50, full 500)
    seed: int = fuzz.DEFAULT_SEED

    @property
    def examples(self) -> int:
        return self.max_examples if self.max_examples is not None else (500 if self.full else 50)


@dataclass(frozen=True)
class Planned:
    """One check to run: its case's label (the test id's part), the case itself (a Case, an OpInfo
    index or a table entry's name), the dtype (None: the check is about arguments, not values) and the
    tensors' seed."""
    label: str
    case: Any
    dtype: Optional[torch.dtype]
    seed: int = 0


@dataclass(frozen=True)
class Spec:
    name: str
    run: Callable[..., None]
    cases: Callable[[Options, str], Iterable[Planned]]
    doc: str


def dtype_name(dtype: Optional[torch.dtype]) -> str:
    return "any" if dtype is None else str(dtype).replace("torch.", "")


def _prefer(opts: Options, *wanted: torch.dtype) -> list[torch.dtype]:
    """The first of `wanted` the run includes (a check that needs one dtype), else the run's first."""
    return [next((d for d in wanted if d in opts.dtypes), opts.dtypes[0])] if opts.dtypes else []


def _over(case_list, dtypes) -> list[Planned]:
    return [Planned(c.name, c, d) for c in case_list for d in dtypes]


def _fuzz_cases(only_3x3: bool):
    def cases(opts: Options, device: str) -> list[Planned]:
        dtypes = [d for d in opts.dtypes if opts.full or d in (torch.float32, torch.float64)] or list(opts.dtypes)
        prefix = "fuzz_3x3" if only_3x3 else "fuzz"
        return [Planned(case.name, case, dtype, seed)
                for case, dtype, seed in fuzz.configs(opts.examples, dtypes, opts.seed, only_3x3, prefix)]
    return cases


def _opinfo_samples(opts: Options, device: str) -> list[Planned]:
    dtypes = [d for d in opts.dtypes if d == torch.float32 or (opts.full and d == torch.float64)]
    try:
        return [Planned(f"sample_{i:03d}", i, d) for d in dtypes for i in range(len(opinfo.samples(device, d)))]
    except opinfo.OpInfoUnavailable as exc:
        return [Planned("unavailable", exc, d) for d in dtypes]


def _opinfo_errors(opts: Options, device: str) -> list[Planned]:
    try:
        return [Planned(f"error_{i:02d}", i, None) for i in range(len(opinfo.error_inputs(device)))]
    except opinfo.OpInfoUnavailable as exc:
        return [Planned("unavailable", exc, None)]


def _unavailable_or(check):
    def run(fn, case, dtype, device, seed=0):
        if isinstance(case, opinfo.OpInfoUnavailable):
            raise Skip(str(case))
        return check(fn, case, dtype, device) if dtype is not None else check(fn, case, device)
    return run


class Skip(Exception):
    """Raised by a check that cannot run here (the runner records 'skipped' with the message)."""


def slug(text: str) -> str:
    return re.sub(r"\W+", "_", text).strip("_")


def _invalid(opts: Options, device: str) -> list[Planned]:
    return [Planned(e[0], e[0], None) for e in errors.invalid_arguments("cpu") if e[0] not in errors.STRICTER_THAN_PYTORCH]


def _run_invalid(fn, name, dtype, device, seed=0):
    entry = next(e for e in errors.invalid_arguments(device) if e[0] == name)
    errors.rejects(fn, entry[1], entry[2])


def _several(opts: Options, device: str) -> list[Planned]:
    return [Planned(slug(name), name, None) for name in errors.several_problems("cpu")]


def _run_several(fn, name, dtype, device, seed=0):
    args, kwargs = errors.several_problems(device)[name]
    errors.first_problem(fn, args, kwargs)


def _gradcheck_cases(opts: Options, device: str) -> list[Planned]:
    return _over(C.GRADCHECK_CASES, [torch.float64])


SPECS = [
    Spec("values", values.values, lambda o, d: _over(C.CASES, o.dtypes),
         "forward output and input/weight/bias gradients against float64 F.conv2d"),
    Spec("layouts", values.layouts, lambda o, d: _over(C.LAYOUT_CASES, _prefer(o, torch.float64, torch.float32)),
         "channels_last and transposed copies give the contiguous results"),
    Spec("call_forms", values.call_forms, lambda o, d: _over(C.named(C.CASES, "opinfo_groups2_dil4"),
                                                             _prefer(o, torch.float64, torch.float32)),
         "positional and keyword calls are the same call"),
    Spec("grad_outputs", values.grad_outputs, lambda o, d: _over(C.GRAD_OUT_CASES, _prefer(o, torch.float64, torch.float32)),
         "expanded, channels_last and transposed output gradients"),
    Spec("requires_grad", values.requires_grad,
         lambda o, d: _over(C.named(C.CASES, "opinfo_groups2_dil4"), _prefer(o, torch.float64, torch.float32)),
         "gradients for exactly the tensors that require them"),
    Spec("no_grad", values.no_grad, lambda o, d: _over(C.named(C.CASES, "same_even_kernel_dilated"),
                                                       _prefer(o, torch.float32, torch.float64)),
         "right values under no_grad and inference_mode, nothing requiring grad"),
    Spec("independent", calls.independent, lambda o, d: _over(C.REPEAT_CASES, _prefer(o, torch.float32, torch.float64)),
         "inputs untouched, no aliasing, an earlier output not overwritten by a later call"),
    Spec("repeat", calls.repeat, lambda o, d: _over(C.REPEAT_CASES, _prefer(o, torch.float32, torch.float64)),
         "three calls on the same inputs, forward and backward, all right and all clean"),
    Spec("deterministic", calls.deterministic, lambda o, d: _over(C.REPEAT_CASES, _prefer(o, torch.float32, torch.float64)),
         "repeated calls bitwise equal"),
    Spec("batch", values.batch, lambda o, d: _over(C.BATCH_CASES, _prefer(o, torch.float64, torch.float32)),
         "each image's result depends on that image only"),
    Spec("large", values.values, lambda o, d: _over(C.LARGE_IMAGE_CASES, [t for t in (torch.float32, torch.float64)
                                                                         if t in o.dtypes]),
         "larger images (fft's overlap-save tiles)"),
    Spec("medium", values.values, lambda o, d: _over(C.MEDIUM_CASES, [t for t in (torch.float32, torch.float64)
                                                                      if t in o.dtypes]) if o.full else [],
         "realistic layer sizes (full suite only)"),
    Spec("gradcheck", values.gradcheck, _gradcheck_cases, "finite differences against the backward, float64"),
    Spec("fuzz", values.values, _fuzz_cases(False), "seeded valid configurations"),
    Spec("fuzz_3x3", values.values, _fuzz_cases(True), "seeded 3x3 stride-1 configurations"),
    Spec("opinfo_samples", _unavailable_or(opinfo.sample_matches), _opinfo_samples,
         "PyTorch's OpInfo sample and reference inputs give F.conv2d's result"),
    Spec("opinfo_errors", _unavailable_or(opinfo.error_matches), _opinfo_errors,
         "PyTorch's OpInfo error inputs raise its exception type and message"),
    Spec("invalid_arguments", _run_invalid, _invalid, "what F.conv2d rejects is rejected, with its exception type"),
    Spec("first_error", _run_several, _several, "with several problems, F.conv2d's first one is named"),
]
BY_NAME = {s.name: s for s in SPECS}
NAMES = tuple(BY_NAME)
