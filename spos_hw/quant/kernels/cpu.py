"""CPU fast path of the fake-quant op: a small C kernel (AVX2 + OpenMP), compiled at first use.

The kernel is plain C called through ``ctypes`` on the tensors' memory, so building it needs
only a C compiler (``$CC``, else ``cc``/``gcc``), not torch's headers or ninja, and takes
about a second. It is compiled for this machine (``-march=native``) and cached under
``$SPOS_HW_CACHE_DIR`` (default ``$XDG_CACHE_HOME/spos_hw``, else ``~/.cache/spos_hw``),
keyed by the source, the flags, the compiler version and the CPU's feature flags. OpenMP
comes from the ``libgomp`` torch has already loaded, so the kernel shares torch's threads
(``torch.set_num_threads``). Nothing is compiled at install time.

Bit-exactness: the vector loop uses the same IEEE operations as the formula (``vdivps`` is
a correctly rounded division, ``vroundps`` with round-to-nearest-even), never a reciprocal
and no fast-math flags. Only float32 inputs take this path; other dtypes use the reference.

Large outputs (>= 8 MiB) are allocated as anonymous private mappings advised for
transparent huge pages: faulting in fresh 4 KiB pages otherwise costs more than the kernel
itself (measured in ``bench/quant_cpu_kernel.py``).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import mmap
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
from torch import Tensor

from spos_hw.quant.kernels import flat_layout, is_dense, like_input, mode, unavailable

log = logging.getLogger(__name__)

CHUNK = 16384
"""Elements per parallel work item; the scale gradient is reduced per chunk in fp64."""

_SOURCE = r"""
#include <stdint.h>
#include <math.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#define CHUNK %(chunk)d

int fq_chunk(void) { return CHUNK; }

/* y = (clamp(rint(x / s) + zp, qmin, qmax) - zp) * s, rows of `inner` elements, scale s[row %% nch].
   NaN propagates (comparisons are written so that a NaN q survives the clamps). */
void fq_forward(const float* restrict x, float* restrict y, const float* restrict scale, int64_t rows,
                int64_t nch, int64_t inner, float qmin, float qmax, float zp) {
  const int64_t per_row = (inner + CHUNK - 1) / CHUNK;
  const int64_t total = rows * per_row;
  #pragma omp parallel for schedule(static) if (total > 1)
  for (int64_t j = 0; j < total; ++j) {
    const int64_t r = j / per_row, b = (j %% per_row) * CHUNK;
    const int64_t e = b + CHUNK < inner ? b + CHUNK : inner;
    const float s = scale[r %% nch];
    const float* restrict xp = x + r * inner;
    float* restrict yp = y + r * inner;
    int64_t i = b;
#if defined(__AVX2__)
    const __m256 vs = _mm256_set1_ps(s), vlo = _mm256_set1_ps(qmin), vhi = _mm256_set1_ps(qmax);
    const __m256 vzp = _mm256_set1_ps(zp);
    for (; i + 8 <= e; i += 8) {
      __m256 v = _mm256_div_ps(_mm256_loadu_ps(xp + i), vs);
      __m256 q = _mm256_add_ps(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), vzp);
      q = _mm256_max_ps(vlo, q); /* maxps returns its second operand when either is NaN */
      q = _mm256_min_ps(vhi, q);
      _mm256_storeu_ps(yp + i, _mm256_mul_ps(_mm256_sub_ps(q, vzp), vs));
    }
#endif
    for (; i < e; ++i) {
      float q = nearbyintf(xp[i] / s) + zp;
      q = q < qmin ? qmin : q;
      q = q > qmax ? qmax : q;
      yp[i] = (q - zp) * s;
    }
  }
}

/* gx = g where lo <= x/s <= hi else 0;  partial[j] = sum over chunk j of g * t,
   t = lo | hi where clipped, rint(v) - v inside (lo = qmin - zp, hi = qmax - zp). */
void fq_backward(const float* restrict g, const float* restrict x, float* restrict gx,
                 const float* restrict scale, int64_t rows, int64_t nch, int64_t inner, float qmin,
                 float qmax, float zp, double* restrict partial) {
  const int64_t per_row = (inner + CHUNK - 1) / CHUNK;
  const int64_t total = rows * per_row;
  const float lo = qmin - zp, hi = qmax - zp;
  #pragma omp parallel for schedule(static) if (total > 1)
  for (int64_t j = 0; j < total; ++j) {
    const int64_t r = j / per_row, b = (j %% per_row) * CHUNK;
    const int64_t e = b + CHUNK < inner ? b + CHUNK : inner;
    const float s = scale[r %% nch];
    const float* restrict xp = x + r * inner;
    const float* restrict gp = g + r * inner;
    float* restrict op = gx + r * inner;
    double acc = 0.0;
    int64_t i = b;
#if defined(__AVX2__)
    const __m256 vs = _mm256_set1_ps(s), vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    for (; i + 8 <= e; i += 8) {
      const __m256 gv = _mm256_loadu_ps(gp + i);
      const __m256 v = _mm256_div_ps(_mm256_loadu_ps(xp + i), vs);
      const __m256 below = _mm256_cmp_ps(v, vlo, _CMP_LT_OQ), above = _mm256_cmp_ps(v, vhi, _CMP_GT_OQ);
      const __m256 inside = _mm256_and_ps(_mm256_cmp_ps(v, vlo, _CMP_GE_OQ), _mm256_cmp_ps(v, vhi, _CMP_LE_OQ));
      __m256 t = _mm256_sub_ps(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), v);
      t = _mm256_blendv_ps(t, vhi, above);
      t = _mm256_blendv_ps(t, vlo, below);
      _mm256_storeu_ps(op + i, _mm256_and_ps(inside, gv));
      const __m256 p = _mm256_mul_ps(gv, t);
      a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(p)));
      a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(p, 1)));
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(a0, a1));
    acc = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
#endif
    for (; i < e; ++i) {
      const float v = xp[i] / s;
      const int inside = (v >= lo) & (v <= hi);
      const float t = v < lo ? lo : (v > hi ? hi : nearbyintf(v) - v);
      op[i] = inside ? gp[i] : 0.0f;
      acc += (double)(gp[i] * t);
    }
    partial[j] = acc;
  }
}
""" % {"chunk": CHUNK}

_FLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=c99")
_FALLBACK_FLAGS = ("-O3", "-fopenmp", "-fPIC", "-shared", "-std=c99")

_lock = threading.Lock()
_state: dict[str, object] = {}


class _BuildError(Exception):
    pass


def cache_dir() -> Path:
    """Where compiled kernels are cached."""
    if os.environ.get("SPOS_HW_CACHE_DIR"):
        base = Path(os.environ["SPOS_HW_CACHE_DIR"])
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spos_hw"
    return base / "kernels"


def _compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise _BuildError("no C compiler found; set CC or install gcc")
    return cc


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build() -> ctypes.CDLL:
    cc = _compiler()
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise _BuildError(f"cannot run the C compiler {cc!r}: {exc}") from None
    key = hashlib.sha256("\0".join([_SOURCE, " ".join(_FLAGS), version, _cpu_flags()]).encode()).hexdigest()[:16]
    folder = cache_dir()
    path = folder / f"fake_quant_cpu-{key}.so"
    if not path.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _BuildError(f"cannot create the kernel cache {folder}: {exc}") from None
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            src = Path(tmp) / "fake_quant_cpu.c"
            src.write_text(_SOURCE)
            out = Path(tmp) / path.name
            errors = []
            for flags in (_FLAGS, _FALLBACK_FLAGS):
                res = subprocess.run([cc, *flags, str(src), "-o", str(out), "-lm"], capture_output=True, text=True)
                if res.returncode == 0:
                    break
                errors.append(res.stderr.strip().splitlines()[-1:] or ["?"])
            else:
                raise _BuildError(f"compiling the kernel failed: {errors[-1][0]}")
            os.replace(out, path)  # atomic: concurrent builders leave one complete file
        log.info("compiled the CPU fake-quant kernel to %s", path)
    lib = ctypes.CDLL(str(path))
    p, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    lib.fq_forward.argtypes = [p, p, p, i64, i64, i64, f32, f32, f32]
    lib.fq_forward.restype = None
    lib.fq_backward.argtypes = [p, p, p, p, i64, i64, i64, f32, f32, f32, p]
    lib.fq_backward.restype = None
    if lib.fq_chunk() != CHUNK:
        raise _BuildError(f"stale kernel {path}")
    return lib


def library() -> ctypes.CDLL | None:
    """The compiled kernel, or None when the reference must run (see ``kernels`` for the policy)."""
    if mode() == "reference":
        return None
    lib = _state.get("lib")
    if lib is None and "error" not in _state:
        with _lock:
            if "lib" not in _state and "error" not in _state:
                try:
                    _state["lib"] = _build()
                except _BuildError as exc:
                    _state["error"] = str(exc)
        lib = _state.get("lib")
    if lib is None:
        unavailable("cpu", str(_state["error"]))
    return lib  # type: ignore[return-value]


_HUGE_BYTES = 8 << 20


def empty_like(x: Tensor) -> Tensor:
    """``torch.empty_like(x)`` for a dense ``x``; large ones backed by transparent huge pages."""
    nbytes = x.numel() * x.element_size()
    if nbytes < _HUGE_BYTES or not hasattr(mmap, "MADV_HUGEPAGE") or not is_dense(x):
        return torch.empty_like(x)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buf.madvise(mmap.MADV_HUGEPAGE)
    storage = torch.frombuffer(buf, dtype=torch.uint8).untyped_storage()  # keeps `buf` alive
    return torch.empty(0, dtype=x.dtype).set_(storage, 0, x.shape, x.stride())


def forward(x: Tensor, scale: Tensor, qmin: int, qmax: int, zero_point: int, axis: int | None) -> Tensor | None:
    """Fake-quant of a float32 CPU tensor, or None when the reference must run."""
    if x.dtype != torch.float32 or x.device.type != "cpu" or x.numel() == 0:
        return None
    lib = library()
    if lib is None:
        return None
    xk, rows, nch, inner = flat_layout(x, axis)
    s = scale.detach().contiguous()
    y = empty_like(xk)
    lib.fq_forward(xk.data_ptr(), y.data_ptr(), s.data_ptr(), rows, nch, inner, float(qmin), float(qmax), float(zero_point))
    return y if xk is x else like_input(x, y)


def backward(
    grad: Tensor, x: Tensor, scale: Tensor, qmin: int, qmax: int, zero_point: int, axis: int | None
) -> tuple[Tensor, Tensor] | None:
    """STE and LSQ gradients for float32 CPU tensors, or None when the reference must run."""
    if x.dtype != torch.float32 or grad.dtype != torch.float32 or x.device.type != "cpu" or x.numel() == 0:
        return None
    lib = library()
    if lib is None:
        return None
    xk, rows, nch, inner = flat_layout(x, axis)
    g = grad if grad.stride() == xk.stride() else _like(grad, xk)  # same shape and strides as xk: dense
    s = scale.detach().contiguous()
    per_row = (inner + CHUNK - 1) // CHUNK
    partial = torch.empty(rows * per_row, dtype=torch.float64)
    gx = empty_like(xk)
    lib.fq_backward(
        g.data_ptr(),
        xk.data_ptr(),
        gx.data_ptr(),
        s.data_ptr(),
        rows,
        nch,
        inner,
        float(qmin),
        float(qmax),
        float(zero_point),
        partial.data_ptr(),
    )
    gs = partial.sum() if nch == 1 else partial.view(rows // nch, nch, per_row).sum((0, 2))
    return (gx if xk is x else like_input(x, gx)), gs.to(scale.dtype).reshape(scale.shape)


def _like(t: Tensor, ref: Tensor) -> Tensor:
    out = torch.empty_like(ref, dtype=t.dtype)
    out.copy_(t)
    return out
