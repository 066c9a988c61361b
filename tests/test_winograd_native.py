"""The fused winograd layout's C transforms (`implementations.winograd_native`): how they are built
(once per machine, cached, a portable build where -march=native is refused, a clear reason where no
build is possible) and what they compute, transform by transform, against the transform matrices
applied in float64 by torch. The whole convolutions are checked in tests/test_winograd.py."""
from __future__ import annotations

import shutil
import stat

import pytest
import torch

from implementations import winograd_native as native


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
    """The module as in a new process, its cache in tmp_path."""
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_why", None)
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path


def _script(path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def _real_cc():
    cc = shutil.which(native.compiler_name())
    if cc is None:
        pytest.skip("no C compiler here")
    return cc


def test_it_builds_once_into_the_cache_and_loads_from_there(fresh_build, monkeypatch):
    cc = _real_cc()
    calls = fresh_build / "calls"
    monkeypatch.setenv("CC", _script(fresh_build / "cc", f'echo x >> "{calls}"\nexec "{cc}" "$@"'))
    assert native.available(), native.why_unavailable()
    built = list((fresh_build / "cache").glob("winograd-*.so"))
    assert len(built) == 1 and calls.read_text().count("x") == 1
    monkeypatch.setattr(native, "_lib", None)  # a second process: the cached build, no compiler run
    assert native.available() and calls.read_text().count("x") == 1
    assert not list((fresh_build / "cache").glob(".winograd-*"))  # no temporary files left


def test_a_compiler_without_march_native_gets_the_portable_build(fresh_build, monkeypatch):
    cc = _real_cc()
    monkeypatch.setenv("CC", _script(fresh_build / "cc", 'case "$*" in *-march=native*) echo "unknown flag '
                                     f'-march=native" >&2; exit 1;; esac\nexec "{cc}" "$@"'))
    assert native.available(), native.why_unavailable()


def test_no_build_says_why_and_how_to_fix_it(fresh_build, monkeypatch):
    monkeypatch.setenv("CC", str(fresh_build / "no-such-cc"))
    assert not native.available()
    assert "C compiler" in native.why_unavailable() and "apt-get install gcc" in native.why_unavailable()
    monkeypatch.setattr(native, "_why", None)
    monkeypatch.setenv("CC", _script(fresh_build / "cc", 'echo "error: broken toolchain" >&2; exit 3'))
    assert not native.available()
    why = native.why_unavailable()
    assert "broken toolchain" in why and native.CACHE_ENV in why and "CC=" in why


def test_the_generated_source_skips_zero_coefficients():
    src = native.source()
    assert "*d" in src and "(float)0.0*" not in src and "(double)0.0*" not in src
    # F(2x2)'s B^T is all 0 and +-1: its 1-D transform is adds and subtracts only
    bt2 = src[src.index("static inline void bt2_f32"):].split("}\n", 1)[0]
    assert "*d" not in bt2


# ----- each transform against its matrices in float64 -----------------------------------------------

def _patches(x, m, rin, top, left, th, tw):
    """(N, C, th, tw, rin, rin) patches of x at tile stride m, offset (-top, -left), zeros outside."""
    n, c, h, w = x.shape
    pad = x.new_zeros(n, c, th * m + rin + abs(top), tw * m + rin + abs(left))
    r, s = max(top, 0), max(left, 0)
    src = x[:, :, max(-top, 0):, max(-left, 0):]
    hh, ww = min(src.shape[2], pad.shape[2] - r), min(src.shape[3], pad.shape[3] - s)
    pad[:, :, r:r + hh, s:s + ww] = src[:, :, :hh, :ww]
    return pad.unfold(2, rin, m).unfold(3, rin, m)[:, :, :th, :tw]


def _matrix(rows) -> torch.Tensor:
    return torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float64)


@pytest.mark.parametrize("m", (2, 4, 6))
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_each_transform_is_its_matrices(m, dtype):
    if not native.available():
        pytest.skip(native.why_unavailable())
    g = torch.Generator().manual_seed(m)
    a = m + 2
    bt, at = _matrix(native.BT[m]), _matrix(native.AT[m])
    n, c, h, w, top, left = 2, 19, 11, 9, 1, -1  # a partial channel block, a crop on the left
    th, tw = -(-(h + 2 * top - 2) // m), -(-(w + 2 * left - 2) // m)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-11)

    v = torch.empty(a * a, n * th * tw, c, dtype=dtype)
    native.input_transform(v, x.to(dtype), 0, n, m, top, left, th, tw)
    d = _patches(x, m, a, top, left, th, tw)
    want = torch.einsum("ij,nctujk,lk->ilntuc", bt, d, bt).reshape(a * a, n * th * tw, c)
    torch.testing.assert_close(v.double(), want, **tol)

    gy = torch.empty(a * a, n * th * tw, c, dtype=dtype)
    native.grad_output_transform(gy, x.to(dtype), 0, n, m, th, tw)
    d = _patches(x, m, m, 0, 0, th, tw)
    want = torch.einsum("ji,nctujk,kl->ilntuc", at, d, at).reshape(a * a, n * th * tw, c)
    torch.testing.assert_close(gy.double(), want, **tol)

    mm = torch.randn(a * a, n * th * tw, c, generator=g, dtype=torch.float64)
    bias = torch.randn(c, generator=g, dtype=torch.float64)
    ho, wo = th * m - 1, tw * m - (m - 1)  # the last tiles cut off
    out = torch.full((n, c, ho, wo), float("nan"), dtype=dtype)
    native.output_transform(out, mm.to(dtype), bias.to(dtype), 0, n, m, th, tw)
    y = torch.einsum("ij,jlntuc,kl->nctiuk", at, mm.view(a, a, n, th, tw, c), at).reshape(n, c, th * m, tw * m)
    torch.testing.assert_close(out.double(), y[:, :, :ho, :wo] + bias.view(1, c, 1, 1), **tol)


# Other CPUs: what -march=native picks on this one decides which code paths a test here runs (masked
# loads of AVX-512VL, AVX2's, the plain C ones; the row shuffles or the scalar gathers), so each is
# built here explicitly and must give the same transforms.
PATHS = {"avx2": ("-march=haswell",), "sse2": ("-march=x86-64",), "no shuffles": ("-DWINO_NO_ROWS",)}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_every_instruction_set_path_computes_the_same_transforms(path, tmp_path, monkeypatch):
    import ctypes
    import platform
    import subprocess
    if platform.machine() not in ("x86_64", "AMD64") and path != "no shuffles":
        pytest.skip("x86-64 instruction sets")
    cc = _real_cc()
    c_file, so = tmp_path / "k.c", tmp_path / "k.so"
    c_file.write_text(native.source())
    flags = [f for f in native.PORTABLE_FLAGS] + list(PATHS[path])
    subprocess.run([cc, *flags, str(c_file), "-o", str(so)], check=True, capture_output=True)
    other = ctypes.CDLL(str(so))
    native._declare(other)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 37, 23, 21, generator=g)[:, :, 1:]  # strided rows, a partial channel block
    mm = torch.randn(36, 2 * 6 * 6, 37, generator=g)
    results = []
    for lib in (native.load(), other):
        if lib is None:
            pytest.skip(native.why_unavailable())
        monkeypatch.setattr(native, "_lib", lib)
        v, gy = torch.empty(36, 2 * 6 * 6, 37), torch.empty(36, 2 * 6 * 6, 37)
        out = torch.empty(2, 37, 22, 21)
        native.input_transform(v, x, 0, 2, 4, 1, 1, 6, 6)
        native.grad_output_transform(gy, x, 0, 2, 4, 6, 6)
        native.output_transform(out, mm, None, 0, 2, 4, 6, 6)
        results.append((v, gy, out))
    for here, there in zip(*results):
        torch.testing.assert_close(here, there, rtol=1e-6, atol=1e-5)


def test_buffers_that_do_not_fit_are_refused():
    if not native.available():
        pytest.skip(native.why_unavailable())
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="does not fit"):
        native.input_transform(torch.empty(36, 7, 3), x, 0, 2, 4, 1, 1, 2, 2)
    with pytest.raises(ValueError, match="CPU"):
        native.input_transform(torch.empty(36, 8, 3, dtype=torch.float64), x, 0, 2, 4, 1, 1, 2, 2)
    with pytest.raises(ValueError, match="do not cover"):
        native.output_transform(torch.empty(2, 3, 9, 8), torch.empty(36, 8, 3), None, 0, 2, 4, 2, 2)
