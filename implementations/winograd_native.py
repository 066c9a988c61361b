"""Fused Winograd transforms in C, for the `fused` layout of `winograd` (issue #21): one pass from the
NCHW input (any strides, any padding, negative = a crop) to the transformed tiles V (alpha^2, T, C),
and one pass from the products M (alpha^2, T, K) to the NCHW output, the bias added on the way; for
grad_weight one pass from dY to A dY A^T. No layout copies, no padded buffer, no halo tiles, no
temporaries between the add/sub steps: each tile is loaded once for a block of channels (16 float32
or 8 float64, one 64-byte vector: NCHW rows are loaded whole and shuffled into channel vectors),
transformed in vector registers and stored once.

The C source is generated here from the transform matrices (zeros skipped, +-1 as adds), compiled
once per machine with the system C compiler (`CC`, default `cc`; `-O3 -march=native`), cached under
`CONVBENCH_CACHE_DIR` (default `~/.cache/convbench`) by a hash of the source, the flags and the CPU
(a shared home on a cluster of mixed CPUs never loads another CPU's build), and called through
ctypes, which releases the GIL: with several torch threads the work is split over tile rows. No
compiler (or a failed build): `available()` is False, `why_unavailable()` says why and how to fix it,
and `winograd` plans without the fused layout.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from typing import Optional

import torch

CACHE_ENV = "CONVBENCH_CACHE_DIR"
FLAGS = ("-O3", "-march=native", "-std=c99", "-shared", "-fPIC", "-fno-math-errno")
PORTABLE_FLAGS = tuple(f for f in FLAGS if f != "-march=native")  # for compilers without -march=native
TILES = (2, 4, 6)
BLOCK = {torch.float32: 16, torch.float64: 8}  # channels per block: one AVX-512 register
CTYPE = {torch.float32: ("float", "f32"), torch.float64: ("double", "f64")}
PARALLEL_MIN_ROWS = 4  # tile rows per thread at least before the work is split over threads

# The transform matrices (Lavin & Gray 2016; F(6x6) on the points 0, +-1, +-2, +-1/2, as wincnn), exact.
_F = Fraction
BT = {2: ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
      4: ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0),
          (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
      6: ((1, 0, _F(-21, 4), 0, _F(21, 4), 0, -1, 0), (0, 1, 1, _F(-17, 4), _F(-17, 4), 1, 1, 0),
          (0, -1, 1, _F(17, 4), _F(-17, 4), -1, 1, 0), (0, _F(1, 2), _F(1, 4), _F(-5, 2), _F(-5, 4), 2, 1, 0),
          (0, _F(-1, 2), _F(1, 4), _F(5, 2), _F(-5, 4), -2, 1, 0), (0, 2, 4, _F(-5, 2), -5, _F(1, 2), 1, 0),
          (0, -2, 4, _F(5, 2), -5, _F(-1, 2), 1, 0), (0, -1, 0, _F(21, 4), 0, _F(-21, 4), 0, 1))}
AT = {2: ((1, 1, 1, 0), (0, 1, -1, -1)),
      4: ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1)),
      6: ((1, 1, 1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, _F(1, 2), _F(-1, 2), 0),
          (0, 1, 1, 4, 4, _F(1, 4), _F(1, 4), 0), (0, 1, -1, 8, -8, _F(1, 8), _F(-1, 8), 0),
          (0, 1, 1, 16, 16, _F(1, 16), _F(1, 16), 0), (0, 1, -1, 32, -32, _F(1, 32), _F(-1, 32), 1))}


# ----- the C source ------------------------------------------------------------------------------

def _expr(row, ctype: str) -> str:
    """sum_k row[k] * d<k> as C, zeros skipped, +-1 as plain adds (exact: every coefficient here is a
    dyadic rational, so `(T)c` is the coefficient itself)."""
    terms = []
    for k, c in enumerate(row):
        c = Fraction(c)
        if c == 0:
            continue
        sign = "-" if c < 0 else "+"
        mag = abs(c)
        term = f"d{k}" if mag == 1 else f"({ctype}){float(mag)!r}*d{k}"
        terms.append((sign, term))
    if not terms:
        return f"({ctype})0"
    first = ("-" if terms[0][0] == "-" else "") + terms[0][1]
    return first + "".join(f" {s} {t}" for s, t in terms[1:])


def _transform_1d(name: str, mat, ctype: str, dt: str) -> str:
    """out[r] = sum_k mat[r][k] in[k], each a block of channels (in + k*is, out + r*os), as GCC/Clang
    vector types: one 64-byte vector a block (left to the auto-vectoriser, GCC 12 kept a scalar copy
    of these loops behind its alias checks and ran it: 380 ns a 16-channel F(4x4) tile)."""
    loads = " ".join(f"v{dt} d{k} = ld_{dt}(in + {k} * is);" for k in range(len(mat[0])))
    stores = " ".join(f"st_{dt}(out + {r} * os, {_expr(row, ctype)});" for r, row in enumerate(mat))
    return (f"static inline void {name}(const {ctype} *restrict in, long is, {ctype} *restrict out, long os) {{\n"
            f"  {loads}\n  {stores}\n}}\n")


def _patch_kernel(name: str, step: str, m: int, rin: int, rout: int, ctype: str, block: int) -> str:
    """dst (rout^2, T, C) from rin x rin patches of src (N, C, H, W) at tile stride m, offset (-top,
    -left), zero outside: dst[(a*rout + b)][t][c] = (X d X^T)[a][b] with X the step's matrix. Tile
    rows q0..q1 of the (n1 - n0) * th rows, t = q * tw + j. A whole block of channels inside the
    image is read in place when channels are contiguous (channels_last); float32 NCHW rows are loaded
    16 channels at a time and shuffled into `d`; the rest is gathered into `d` element by element.
    The second step writes straight into dst (a last, partial block goes through `v`)."""
    rows_fast = "WINO_ROWS" if ctype == "float" else "0"
    # rows wholly inside the image are loaded 8 floats at a time; at an edge, by a masked load
    rows_code = (f"""const long ra = r0 < 0 ? -r0 : 0, rb = H - r0 < {rin} ? H - r0 : {rin};
            const long sa = s0 < 0 ? -s0 : 0, sb = W - s0 < {rin} ? W - s0 : {rin};
            const int inside = s0 >= 0 && s0 + 8 <= W;
            for (long r = 0; r < {rin}; r++) {{
              v8f32 rows[16]; vf32 cols[8];
              if (r < ra || r >= rb) {{
                for (long s = 0; s < {rin}; s++) for (int l = 0; l < 16; l++) d[(r * {rin} + s) * 16 + l] = 0;
                continue;
              }}
              const float *base = xb + (r0 + r) * sh + s0;
              if (inside) {{
                for (int l = 0; l < 16; l++) __builtin_memcpy(&rows[l], base + l * sc, 32);
              }} else {{
                for (int l = 0; l < 16; l++) rows[l] = load_part_f32(base + l * sc, sa, sb);
              }}
              rows_to_cols_f32(rows, cols);
              for (long s = 0; s < {rin}; s++) st_f32(d + (r * {rin} + s) * 16, cols[s]);
            }}""" if ctype == "float" else "")
    return f"""
void {name}({ctype} *restrict dst, const {ctype} *restrict src, long n0, long q0, long q1, long C, long H,
            long W, long sn, long sc, long sh, long sw, long top, long left, long th, long tw, long total) {{
  {ctype} d[{rin * rin * block}], t[{rout * rin * block}], v[{rout * rout * block}];
  const long plane = total * C;
  for (long q = q0; q < q1; q++) {{
    const long n = n0 + q / th, i = q % th, r0 = i * {m} - top;
    for (long j = 0; j < tw; j++) {{
      const long s0 = j * {m} - left;
      for (long c0 = 0; c0 < C; c0 += {block}) {{
        const long cb = C - c0 < {block} ? C - c0 : {block};
        const {ctype} *xb = src + n * sn + c0 * sc;
        {ctype} *o = dst + (q * tw + j) * C + c0;
        const int whole = cb == {block} && r0 >= 0 && r0 + {rin} <= H && s0 >= 0 && s0 + {rin} <= W;
        if (whole && sc == 1) {{
          const {ctype} *at = xb + r0 * sh + s0 * sw;
          for (long s = 0; s < {rin}; s++) {step}(at + s * sw, sh, t + s * {block}, {rin * block});
        }} else {{
          if ({rows_fast} && cb == {block} && sw == 1) {{  /* NCHW: 16 rows at a time, shuffled into channels */
            {rows_code}
          }} else if (whole) {{
            for (long l = 0; l < {block}; l++)
              for (long r = 0; r < {rin}; r++) {{
                const {ctype} *row = xb + l * sc + (r0 + r) * sh + s0 * sw;
                for (long s = 0; s < {rin}; s++) d[(r * {rin} + s) * {block} + l] = row[s * sw];
              }}
          }} else {{  /* at an edge or a last, partial block: zeros, then the part inside the image */
            const long ra = r0 < 0 ? -r0 : 0, rb = H - r0 < {rin} ? H - r0 : {rin};
            const long sa = s0 < 0 ? -s0 : 0, sb = W - s0 < {rin} ? W - s0 : {rin};
            for (long k = 0; k < {rin * rin * block}; k++) d[k] = 0;
            if (sc == 1) {{
              for (long r = ra; r < rb; r++)
                for (long s = sa; s < sb; s++) {{
                  const {ctype} *at = xb + (r0 + r) * sh + (s0 + s) * sw;
                  for (long l = 0; l < cb; l++) d[(r * {rin} + s) * {block} + l] = at[l];
                }}
            }} else {{
              for (long l = 0; l < cb; l++)
                for (long r = ra; r < rb; r++)
                  for (long s = sa; s < sb; s++)
                    d[(r * {rin} + s) * {block} + l] = xb[l * sc + (r0 + r) * sh + (s0 + s) * sw];
            }}
          }}
          for (long s = 0; s < {rin}; s++) {step}(d + s * {block}, {rin * block}, t + s * {block}, {rin * block});
        }}
        if (cb == {block}) {{
          for (long a = 0; a < {rout}; a++) {step}(t + a * {rin * block}, {block}, o + a * {rout} * plane, plane);
        }} else {{
          for (long a = 0; a < {rout}; a++) {step}(t + a * {rin * block}, {block}, v + a * {rout * block}, {block});
          for (long p = 0; p < {rout * rout}; p++)
            for (long l = 0; l < cb; l++) o[p * plane + l] = v[p * {block} + l];
        }}
      }}
    }}
  }}
}}
"""


def _output_kernel(name: str, m: int, ctype: str, block: int) -> str:
    """dst (N, K, Ho, Wo) tiles from M (alpha^2, T, K): A^T M A (+ bias), only the part inside Ho x Wo.
    A whole block of channels is read from M in place (a last, partial one through `u`); the result
    is stored as contiguous runs of channels when they are contiguous in dst (channels_last)."""
    a = m + 2
    rows_fast = "WINO_ROWS" if ctype == "float" else "0"
    rows_code = (f"""const vf32 bv = ld_f32(b);
          for (long r = 0; r < rows; r++) {{
            vf32 cols[8]; v8f32 out[16];
            for (int s = 0; s < 8; s++) cols[s] = s < {m} ? ld_f32(y + (r * {m} + s) * 16) + bv : bv - bv;
            cols_to_rows_f32(cols, out);
            for (int l = 0; l < 16; l++) __builtin_memcpy(yb + l * sc + (r0 + r) * sh + s0, &out[l], {m} * sizeof(float));
          }}""" if ctype == "float" else "")
    return f"""
void {name}({ctype} *restrict dst, const {ctype} *restrict mm, const {ctype} *restrict bias, long n0, long q0,
            long q1, long K, long Ho, long Wo, long sn, long sc, long sh, long sw, long th, long tw, long total) {{
  {ctype} u[{a * a * block}], z[{m * a * block}], y[{m * m * block}], b[{block}];
  for (long k = 0; k < {a * a * block}; k++) u[k] = 0;
  const long plane = total * K;
  for (long q = q0; q < q1; q++) {{
    const long n = n0 + q / th, i = q % th, r0 = i * {m};
    const long rows = Ho - r0 < {m} ? Ho - r0 : {m};
    for (long k0 = 0; k0 < K; k0 += {block}) {{
      const long kb = K - k0 < {block} ? K - k0 : {block};
      for (long l = 0; l < {block}; l++) b[l] = (bias && l < kb) ? bias[k0 + l] : ({ctype})0;
      {ctype} *yb = dst + n * sn + k0 * sc;
      for (long j = 0; j < tw; j++) {{
        const long s0 = j * {m}, cols = Wo - s0 < {m} ? Wo - s0 : {m};
        const {ctype} *src = mm + (q * tw + j) * K + k0;
        if (kb == {block}) {{
          for (long s = 0; s < {a}; s++) at{m}(src + s * plane, {a} * plane, z + s * {block}, {a * block});
        }} else {{
          for (long p = 0; p < {a * a}; p++)
            for (long l = 0; l < kb; l++) u[p * {block} + l] = src[p * plane + l];
          for (long s = 0; s < {a}; s++) at{m}(u + s * {block}, {a * block}, z + s * {block}, {a * block});
        }}
        for (long r = 0; r < {m}; r++) at{m}(z + r * {a * block}, {block}, y + r * {m * block}, {block});
        if (sc == 1 && kb == {block}) {{
          for (long r = 0; r < rows; r++)
            for (long s = 0; s < cols; s++) {{
              {ctype} *out = yb + (r0 + r) * sh + (s0 + s) * sw;
              const {ctype} *val = y + (r * {m} + s) * {block};
              for (long l = 0; l < {block}; l++) out[l] = val[l] + b[l];
            }}
        }} else if ({rows_fast} && kb == {block} && sw == 1 && cols == {m}) {{  /* NCHW rows: shuffles, 16 row stores */
          {rows_code}
        }} else {{
          for (long l = 0; l < kb; l++)
            for (long r = 0; r < rows; r++) {{
              {ctype} *row = yb + l * sc + (r0 + r) * sh + s0 * sw;
              for (long s = 0; s < cols; s++) row[s * sw] = y[(r * {m} + s) * {block} + l] + b[l];
            }}
        }}
      }}
    }}
  }}
}}
"""


def source() -> str:
    """The C source: per dtype and tile size m, `wino_in_<m>_<dt>` (B^T d B from the input),
    `wino_out_<m>_<dt>` (A^T M A + bias into the output), `wino_gout_<m>_<dt>` (A g A^T from dY)."""
    parts = ["/* generated by implementations/winograd_native.py: do not edit */\n#include <stddef.h>\n"]
    for dtype in (torch.float32, torch.float64):
        ctype, dt = CTYPE[dtype]
        block = BLOCK[dtype]
        parts.append(f"typedef {ctype} v{dt} __attribute__((vector_size({block * dtype.itemsize})));\n"
                     f"static inline v{dt} ld_{dt}(const {ctype} *p) {{ v{dt} v; __builtin_memcpy(&v, p, sizeof v); return v; }}\n"
                     f"static inline void st_{dt}({ctype} *p, v{dt} v) {{ __builtin_memcpy(p, &v, sizeof v); }}\n")
        if dtype == torch.float32:
            parts.append(_TRANSPOSE)
        parts.append(f"#define at2 at2_{dt}\n#define at4 at4_{dt}\n#define at6 at6_{dt}\n")
        for m in TILES:
            a_mat = tuple(zip(*AT[m]))  # A = (A^T)^T, alpha x m
            parts.append(_transform_1d(f"bt{m}_{dt}", BT[m], ctype, dt))
            parts.append(_transform_1d(f"at{m}_{dt}", AT[m], ctype, dt))
            parts.append(_transform_1d(f"a{m}_{dt}", a_mat, ctype, dt))
            parts.append(_patch_kernel(f"wino_in_{m}_{dt}", f"bt{m}_{dt}", m, m + 2, m + 2, ctype, block))
            parts.append(_patch_kernel(f"wino_gout_{m}_{dt}", f"a{m}_{dt}", m, m, m + 2, ctype, block))
            parts.append(_output_kernel(f"wino_out_{m}_{dt}", m, ctype, block))
        parts.append("#undef at2\n#undef at4\n#undef at6\n")
    return "".join(parts)


_TRANSPOSE = r"""
/* 16 rows of 8 floats <-> 8 vectors of 16 (a float32 block of channels), by four rounds of two-input
   shuffles (vpermt2ps under AVX-512): NCHW planes read and written as rows instead of one float at a
   time. Where the compiler has no __builtin_shufflevector, the scalar loops run. */
#if defined(__has_builtin) && !defined(WINO_NO_ROWS)
#if __has_builtin(__builtin_shufflevector)
#define WINO_SHUFFLE 1
#endif
#endif
#ifdef WINO_SHUFFLE
#define WINO_ROWS 1
typedef float v8f32 __attribute__((vector_size(32)));
#define SV __builtin_shufflevector
static inline void rows_to_cols_f32(const v8f32 *r, vf32 *c) {
  vf32 t[8], u[8], w[8];
  for (int k = 0; k < 8; k++) t[k] = SV(r[2 * k], r[2 * k + 1], 0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
  for (int g = 0; g < 4; g++) {
    u[2 * g] = SV(t[2 * g], t[2 * g + 1], 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
    u[2 * g + 1] = SV(t[2 * g], t[2 * g + 1], 8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
  }
  /* u[2g + h]: rows 4g..4g+3, s = 4h..4h+3 */
  for (int G = 0; G < 2; G++)
    for (int h = 0; h < 2; h++) {
      w[4 * G + 2 * h] = SV(u[4 * G + h], u[4 * G + 2 + h], 0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
      w[4 * G + 2 * h + 1] = SV(u[4 * G + h], u[4 * G + 2 + h], 8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
    }
  /* w[4G + 2h + p]: rows 8G..8G+7, s = 4h + 2p + {0, 1} */
  for (int h = 0; h < 2; h++)
    for (int p = 0; p < 2; p++) {
      c[4 * h + 2 * p] = SV(w[2 * h + p], w[4 + 2 * h + p], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
      c[4 * h + 2 * p + 1] = SV(w[2 * h + p], w[4 + 2 * h + p], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    }
}
static inline void cols_to_rows_f32(const vf32 *c, v8f32 *r) {
  vf32 t[8], u[8], w[8];
  for (int h = 0; h < 2; h++)
    for (int p = 0; p < 2; p++) {
      w[2 * h + p] = SV(c[4 * h + 2 * p], c[4 * h + 2 * p + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
      w[4 + 2 * h + p] = SV(c[4 * h + 2 * p], c[4 * h + 2 * p + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    }
  for (int G = 0; G < 2; G++)
    for (int h = 0; h < 2; h++) {
      u[4 * G + h] = SV(w[4 * G + 2 * h], w[4 * G + 2 * h + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
      u[4 * G + 2 + h] = SV(w[4 * G + 2 * h], w[4 * G + 2 * h + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    }
  for (int g = 0; g < 4; g++) {
    t[2 * g] = SV(u[2 * g], u[2 * g + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29);
    t[2 * g + 1] = SV(u[2 * g], u[2 * g + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
  }
  for (int k = 0; k < 8; k++) {
    r[2 * k] = SV(t[k], t[k], 0, 2, 4, 6, 8, 10, 12, 14);
    r[2 * k + 1] = SV(t[k], t[k], 1, 3, 5, 7, 9, 11, 13, 15);
  }
}
#endif
#ifdef WINO_ROWS
/* lanes sa..sb-1 of p[0..7], zeros elsewhere, never touching the others (they lie outside the row):
   a masked load where the CPU has one (filling a row by scalar stores and reading it back as a vector
   stalls store forwarding: 30% of an NCHW input transform's time at its edge tiles) */
#if defined(__AVX512F__) && defined(__AVX512VL__)
#include <immintrin.h>
static inline v8f32 load_part_f32(const float *p, long sa, long sb) {
  return (v8f32)_mm256_maskz_loadu_ps((__mmask8)(((1u << sb) - 1u) & ~((1u << sa) - 1u)), p);
}
#elif defined(__AVX2__)
#include <immintrin.h>
static inline v8f32 load_part_f32(const float *p, long sa, long sb) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i keep = _mm256_and_si256(_mm256_cmpgt_epi32(lane, _mm256_set1_epi32((int)sa - 1)),
                                        _mm256_cmpgt_epi32(_mm256_set1_epi32((int)sb), lane));
  return (v8f32)_mm256_maskload_ps(p, keep);
}
#else
static inline v8f32 load_part_f32(const float *p, long sa, long sb) {
  v8f32 v = {0};
  for (long s = sa; s < sb; s++) v[s] = p[s];
  return v;
}
#endif
#endif
#ifndef WINO_ROWS
#define WINO_ROWS 0
typedef float v8f32 __attribute__((vector_size(32)));
static inline void rows_to_cols_f32(const v8f32 *r, vf32 *c) { (void)r; (void)c; }
static inline void cols_to_rows_f32(const vf32 *c, v8f32 *r) { (void)c; (void)r; }
static inline v8f32 load_part_f32(const float *p, long sa, long sb) { (void)p; (void)sa; (void)sb; return (v8f32){0}; }
#endif
"""


# ----- building and loading ----------------------------------------------------------------------

_lib = None
_why: Optional[str] = None
_load_lock = threading.Lock()


def _cpu_id() -> str:
    """What -march=native depends on: the CPU model and its flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))][:2]
        return "".join(lines)
    except OSError:
        return platform.processor() + platform.machine()


def compiler_name() -> str:
    """The C compiler the build runs: `CC`, else `cc`."""
    return os.environ.get("CC") or "cc"


def cache_dir() -> str:
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "convbench")
    return base


def _build(src: str, compiler: str) -> str:
    """The shared library for `src`, compiled once per machine (the cache key has the CPU) and kept in
    `cache_dir()`; with -march=native, or without it where the compiler refuses it."""
    errors = []
    for flags in (FLAGS, PORTABLE_FLAGS):
        try:
            return _compile(src, compiler, flags)
        except RuntimeError as e:
            errors.append(str(e))
    raise RuntimeError("; ".join(errors))


def _compile(src: str, compiler: str, flags: tuple) -> str:
    key = hashlib.sha256("\0".join((src, compiler, *flags, _cpu_id(), sys.platform)).encode()).hexdigest()[:16]
    folder = cache_dir()
    path = os.path.join(folder, f"winograd-{key}.so")
    if os.path.exists(path):
        return path
    os.makedirs(folder, exist_ok=True)
    fd, c_path = tempfile.mkstemp(dir=folder, prefix=".winograd-", suffix=".c")
    with os.fdopen(fd, "w") as f:
        f.write(src)
    tmp = c_path[:-2] + ".so"
    try:
        proc = subprocess.run([compiler, *flags, c_path, "-o", tmp], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"{compiler} {' '.join(flags)} failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}")
        os.replace(tmp, path)  # atomic: workers building at once each leave a whole file
    finally:
        for p in (c_path, tmp):
            if os.path.exists(p):
                os.remove(p)
    return path


def _declare(lib) -> None:
    L, P = ctypes.c_long, ctypes.c_void_p
    for dtype in (torch.float32, torch.float64):
        dt = CTYPE[dtype][1]
        for m in TILES:
            for kind in ("in", "gout"):
                fn = getattr(lib, f"wino_{kind}_{m}_{dt}")
                fn.argtypes = [P, P] + [L] * 15
                fn.restype = None
            fn = getattr(lib, f"wino_out_{m}_{dt}")
            fn.argtypes = [P, P, P] + [L] * 13
            fn.restype = None


def load():
    """The compiled library, built on first use; None when it cannot be (see `why_unavailable`)."""
    global _lib, _why
    if _lib is not None or _why is not None:
        return _lib
    with _load_lock:
        if _lib is None and _why is None:
            compiler = compiler_name()
            try:
                lib = ctypes.CDLL(_build(source(), compiler))
                _declare(lib)
                _lib = lib
            except FileNotFoundError:
                _why = (f"the fused winograd layout needs a C compiler and `{compiler}` was not found: install one "
                        "(`apt-get install gcc`) or name it with CC=...")
            except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as e:
                _why = (f"the fused winograd layout could not be built with `{compiler}` in {cache_dir()} "
                        f"(another folder: {CACHE_ENV}=...; another compiler: CC=...): {e}")
    return _lib


def available() -> bool:
    return load() is not None


def why_unavailable() -> Optional[str]:
    load()
    return _why


# ----- calling -----------------------------------------------------------------------------------

_pool: Optional[ThreadPoolExecutor] = None
_pool_pid = 0  # a forked child inherits the pool object but not its threads: it makes its own
_pool_lock = threading.Lock()


def _split(rows: int, call) -> None:
    """call(q0, q1) over tile rows 0..rows, split over torch's thread count when there is enough work
    (ctypes releases the GIL, so the parts run at once)."""
    global _pool, _pool_pid
    threads = min(torch.get_num_threads(), rows // PARALLEL_MIN_ROWS)
    if threads <= 1:
        call(0, rows)
        return
    with _pool_lock:
        if _pool is None or _pool._max_workers < threads or _pool_pid != os.getpid():
            _pool, _pool_pid = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="winograd"), os.getpid()
        pool = _pool
    bounds = [rows * k // threads for k in range(threads + 1)]
    futures = [pool.submit(call, bounds[k], bounds[k + 1]) for k in range(1, threads)]
    call(bounds[0], bounds[1])
    for f in futures:
        f.result()


def _check(t: torch.Tensor, dtype: torch.dtype) -> None:
    if t.device.type != "cpu" or t.dtype != dtype:
        raise ValueError(f"fused winograd: CPU {dtype} tensors only, got {t.dtype} on {t.device}")


def input_transform(dst: torch.Tensor, x: torch.Tensor, n0: int, n1: int, m: int, top: int, left: int,
                    th: int, tw: int) -> None:
    """dst (alpha^2, (n1 - n0) * th * tw, C) = B^T d B of images n0:n1 of x (N, C, H, W), padded by
    (top, left) (negative: cropped) and with zeros past its bottom and right edges."""
    _patches("in", dst, x, n0, n1, m, top, left, th, tw, m + 2)


def grad_output_transform(dst: torch.Tensor, g: torch.Tensor, n0: int, n1: int, m: int, th: int, tw: int) -> None:
    """dst (alpha^2, (n1 - n0) * th * tw, K) = A g A^T of dY's m x m tiles, zeros past its edges."""
    _patches("gout", dst, g, n0, n1, m, 0, 0, th, tw, m)


def _patches(kind, dst, x, n0, n1, m, top, left, th, tw, rin) -> None:
    lib = load()
    _check(x, dst.dtype)
    _check(dst, x.dtype)
    n, c, h, w = x.shape
    total = (n1 - n0) * th * tw
    if not (0 <= n0 <= n1 <= n) or tuple(dst.shape) != ((m + 2) ** 2, total, c) or not dst.is_contiguous():
        raise ValueError(f"fused winograd: dst {tuple(dst.shape)} does not fit images {n0}:{n1} of {tuple(x.shape)}")
    if total == 0 or c == 0:
        return
    fn = getattr(lib, f"wino_{kind}_{m}_{CTYPE[x.dtype][1]}")
    sn, sc, sh, sw = x.stride()
    base, xp = dst.data_ptr(), x.data_ptr()
    _split((n1 - n0) * th, lambda q0, q1: fn(base, xp, n0, q0, q1, c, h, w, sn, sc, sh, sw, top, left, th, tw, total))


def output_transform(dst: torch.Tensor, mm: torch.Tensor, bias: Optional[torch.Tensor], n0: int, n1: int, m: int,
                     th: int, tw: int) -> None:
    """Images n0:n1 of dst (N, K, Ho, Wo) (any strides) = A^T M A + bias from mm (alpha^2, T, K)."""
    lib = load()
    _check(mm, dst.dtype)
    n, k, ho, wo = dst.shape
    total = (n1 - n0) * th * tw
    if not (0 <= n0 <= n1 <= n) or tuple(mm.shape) != ((m + 2) ** 2, total, k) or not mm.is_contiguous():
        raise ValueError(f"fused winograd: products {tuple(mm.shape)} do not fit images {n0}:{n1} of {tuple(dst.shape)}")
    if th * m < ho or tw * m < wo:
        raise ValueError(f"fused winograd: {th}x{tw} tiles of {m} do not cover {ho}x{wo}")
    if bias is not None:
        _check(bias, dst.dtype)
        bias = bias.contiguous()
        if bias.numel() != k:
            raise ValueError(f"fused winograd: bias of {bias.numel()} for {k} channels")
    if total == 0 or k == 0:
        return
    fn = getattr(lib, f"wino_out_{m}_{CTYPE[dst.dtype][1]}")
    sn, sc, sh, sw = dst.stride()
    base, src, bp = dst.data_ptr(), mm.data_ptr(), (bias.data_ptr() if bias is not None else None)
    _split((n1 - n0) * th, lambda q0, q1: fn(base, src, bp, n0, q0, q1, k, ho, wo, sn, sc, sh, sw, th, tw, total))
