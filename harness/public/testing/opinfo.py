"""PyTorch's own OpInfo for `nn.functional.conv2d`, read from the installed torch at run time (so the
checks follow torch upgrades, not a copied list; torch.testing._internal needs the `expecttest`
package): every `error_inputs` entry must raise the same exception type with a message matching
PyTorch's regex, and every `sample_inputs` / `reference_inputs` entry must give F.conv2d's result."""
from __future__ import annotations

import functools
import re
import warnings

import torch
import torch.nn.functional as F

# Norm-relative, as every conformance check here: OpInfo draws values up to ~9, so outputs reach
# hundreds and an elementwise atol would judge a transform-based method (winograd) by its
# cancellation near zero rather than by its error.
REL_TOL = {torch.float32: 1e-5, torch.float64: 1e-10, torch.float16: 1e-2, torch.bfloat16: 5e-2}


class OpInfoUnavailable(ImportError):
    """torch.testing._internal cannot be imported here (expecttest missing, or a torch without it)."""


@functools.lru_cache(maxsize=1)
def op():
    """The OpInfo entry; importing torch.testing._internal freezes torch.backends' global flags
    (disable_global_flags), which would break later code setting cudnn.benchmark: undone here."""
    try:
        from torch.testing._internal.common_methods_invocations import op_db
    except Exception as exc:  # noqa: BLE001 - ImportError, or torch's own errors importing it
        raise OpInfoUnavailable(f"PyTorch's OpInfo database cannot be imported ({type(exc).__name__}: {exc}); "
                                "pip install expecttest") from exc
    torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True
    return next(o for o in op_db if o.name == "nn.functional.conv2d")


@functools.lru_cache(maxsize=None)
def samples(device: str, dtype: torch.dtype) -> tuple:
    """sample_inputs then reference_inputs, in OpInfo's order (the index names a case)."""
    o = op()
    return tuple(s for source in (o.sample_inputs, o.reference_inputs) for s in source(device, dtype, requires_grad=False))


@functools.lru_cache(maxsize=None)
def error_inputs(device: str) -> tuple:
    return tuple(op().error_inputs(device))


def _call(fn, sample):
    return fn(sample.input, *sample.args, **sample.kwargs)


def sample_matches(fn, index: int, dtype: torch.dtype, device: str) -> None:
    """OpInfo sample `index` gives F.conv2d's float64 result on the same values, within REL_TOL."""
    sample = samples(device, dtype)[index]

    def up(v):
        return v.detach().double() if isinstance(v, torch.Tensor) else v

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        want = F.conv2d(up(sample.input), *[up(a) for a in sample.args], **sample.kwargs)
    got = _call(fn, sample)
    assert isinstance(got, torch.Tensor), f"returned a {type(got).__name__}, not a tensor"
    assert got.shape == want.shape and got.dtype == dtype, (f"shape {tuple(got.shape)} {got.dtype}, expected "
                                                            f"{tuple(want.shape)} {dtype}")
    norm = float(want.norm())
    rel = float((got.double() - want).norm()) / norm if norm else float((got.double() - want).abs().max())
    assert rel <= REL_TOL[dtype], f"relative error {rel:.3g} > {REL_TOL[dtype]:g}"


def error_matches(fn, index: int, device: str) -> None:
    """OpInfo error input `index` raises PyTorch's exception type with a message matching its regex."""
    error = error_inputs(device)[index]
    try:
        _call(fn, error.sample_input)
    except error.error_type as exc:
        assert re.search(error.error_regex, str(exc)), f"message {str(exc)!r} does not match {error.error_regex!r}"
        return
    except Exception as exc:  # noqa: BLE001 - the wrong type is the finding
        raise AssertionError(f"raised {type(exc).__name__}: {exc}; PyTorch raises {error.error_type.__name__} "
                             f"matching {error.error_regex!r}") from exc
    raise AssertionError(f"accepted it; PyTorch raises {error.error_type.__name__} matching {error.error_regex!r}")


def describe(sample) -> str:
    """A one-line description of an OpInfo sample, for messages and reproductions."""
    def d(v):
        return f"tensor{tuple(v.shape)}" if isinstance(v, torch.Tensor) else repr(v)
    return ", ".join([d(sample.input), *map(d, sample.args), *(f"{k}={d(v)}" for k, v in sample.kwargs.items())])
