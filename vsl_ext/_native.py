"""Loads the compiled module ``vsl_ext._C`` and hands it tensors as pointers.

Everything here assumes validated, contiguous float32/float64 tensors on one device; the public
functions in :mod:`vsl_ext.sigmoid_rank` and :mod:`vsl_ext.vsl_loss` guarantee that.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from ._version import __version__

try:
    from . import _C
except ImportError as exc:  # pragma: no cover - only when the package was not built
    from pathlib import Path

    here = Path(__file__).resolve().parent
    # Run from a clone, `python -m ...` imports the source tree; every build places _C there too.
    hint = (f" Python imported the source tree {here}, which has no _C built for this Python: `pip install .` "
            f"in {here.parent} builds it and places it there as well." if (here.parent / "setup.py").exists() else "")
    raise ImportError(f"vsl_ext's native module _C is missing or broken: install with `pip install .`.{hint}") from exc

ALGORITHMS = {"auto": 0, "dense": 1, "sorted": 2}
PUBLIC_CODE_CLAMP = 50.0  # the published sigmoid clamps its exponent to [-50, 50]
# On CUDA, algorithm="auto" takes the sorted-window path (vsl_ext.sorted_window) for a matrix with
# at least this many columns whose sampled rows put at most this fraction of their pairs inside the
# +-30 tau window (the window path evaluates those pairs only, at about a dense pair's cost each).
# Both are estimates, not yet measured on a GPU: the large-n section of
# `python -m benchmarks.report --device cuda` measures the crossover.
CUDA_SORTED_FROM_COLS = 2048
CUDA_SORTED_MAX_WINDOW_FRACTION = 0.5


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}" if v else ""


def build_info() -> dict:
    """What the native module was built with and what its CUDA runtime sees now.

    Returns ``{"version", "cuda", "cuda_arch", "openmp", "cpu_isa", "compiler", "cuda_devices",
    "cuda_runtime", "cuda_driver", "cuda_error"}``: ``cuda`` tells whether CUDA kernels were
    compiled in, ``cuda_arch`` the GPU code built (``"sm_90"``: machine code for that architecture,
    ``"compute_90"``: PTX, which the driver compiles for newer GPUs), ``cuda_devices`` how many GPUs the
    kernels can see, ``cuda_runtime`` / ``cuda_driver`` the CUDA versions of the kernels' runtime
    and of the installed driver ("" if none), ``cuda_error`` why no GPU is visible ("" otherwise).
    """
    info = dict(_C.build_info())
    info["version"] = __version__
    status = _C.cuda_status()
    info["cuda_devices"] = status["devices"]
    info["cuda_runtime"] = _cuda_version(status["runtime_version"])
    info["cuda_driver"] = _cuda_version(status["driver_version"])
    info["cuda_error"] = status["error"]
    return info


@functools.lru_cache(maxsize=1)
def cuda_usable() -> None:
    """Raises, saying why, if the kernels cannot launch on a GPU that torch can use (a passing
    check is remembered for the process; a failing one is made again on the next call)."""
    info = build_info()
    if not info["cuda"]:
        raise RuntimeError("vsl_ext was built without CUDA kernels, so it cannot run on a CUDA tensor; "
                           "reinstall with nvcc on PATH (VSL_EXT_CUDA=1 pip install .)")
    if info["cuda_devices"] == 0:
        raise RuntimeError(
            f"vsl_ext's CUDA kernels (CUDA runtime {info['cuda_runtime']}) see no GPU: {info['cuda_error']}. "
            f"The driver supports CUDA {info['cuda_driver'] or 'none'} and torch uses CUDA {torch.version.cuda}; "
            "reinstall vsl_ext with a CUDA toolkit no newer than the driver supports (nvcc on PATH).")


def _dtype_name(t: torch.Tensor) -> str:
    return "float64" if t.dtype == torch.float64 else "float32"


def _ptr(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


def cuda_launch_args(device: torch.device) -> tuple:
    """(device index, current stream handle) for a kernel launch on ``device``."""
    cuda_usable()
    index = device.index if device.index is not None else torch.cuda.current_device()
    return index, torch.cuda.current_stream(torch.device("cuda", index)).cuda_stream


# Route CPU calls through vsl_ext.sorted_window too, as CUDA calls go (tests and comparisons: the
# CPU's own sorted kernel is faster on a CPU).
SORTED_WINDOW_ON_CPU = False


def _takes_sorted_window(algorithm: int, cols: int, clamp_at: float, tau: float, x: torch.Tensor,
                         y: Optional[torch.Tensor]) -> bool:
    """Whether ranking x against y (y None: x itself) takes the sorted-window path of
    vsl_ext.sorted_window: on CUDA, or on CPU with SORTED_WINDOW_ON_CPU. Inside the window it does
    not clamp, so a clamp must lie beyond the window (the published code's 50 does); a matrix with
    NaN needs the dense path, which propagates NaN like the reference (infinities are handled by
    both paths). "auto" also needs enough columns and few pairs inside the window (see
    CUDA_SORTED_MAX_WINDOW_FRACTION). One device sync."""
    if not (x.is_cuda or SORTED_WINDOW_ON_CPU):
        return False
    if algorithm == ALGORITHMS["dense"] or 0 < clamp_at < PUBLIC_CODE_CLAMP:
        return False
    auto = algorithm == ALGORITHMS["auto"]
    if auto and cols < CUDA_SORTED_FROM_COLS:
        return False
    from . import sorted_window

    checks = [~torch.isnan(t).any() for t in (x, y) if t is not None]
    if auto:
        checks.append(sorted_window.window_fraction(x, y, tau) <= CUDA_SORTED_MAX_WINDOW_FRACTION)
    return bool(torch.stack(checks).all())


def rank_forward(x: torch.Tensor, y: Optional[torch.Tensor], out: torch.Tensor, tau: float,
                 descending: bool, clamp_at: float, algorithm: int, window: Optional[bool] = None) -> None:
    """out = cross rank of x against y (y None: row rank of x); see csrc/kernels.h. ``window``: whether
    to take the sorted-window path, if the caller has decided already (None: decide here)."""
    rows, cols = x.shape
    if window is None:
        window = _takes_sorted_window(algorithm, cols, clamp_at, tau, x, y)
    if window:
        from . import sorted_window
        return sorted_window.rank_forward(x, y, out, tau, descending)
    args = (_dtype_name(x), _ptr(x), _ptr(y), _ptr(out), rows, cols, tau, descending, clamp_at, algorithm)
    if x.is_cuda:
        _C.rank_forward_cuda(*args, *cuda_launch_args(x.device))
    else:
        _C.rank_forward_cpu(*args, torch.get_num_threads())


def rank_backward(x: torch.Tensor, y: Optional[torch.Tensor], g: torch.Tensor, gx: torch.Tensor,
                  gy: Optional[torch.Tensor], tau: float, descending: bool, clamp_at: float,
                  algorithm: int) -> None:
    """gx (and gy when y is given) = gradients of sum(g * rank) with respect to x (and y)."""
    rows, cols = x.shape
    if _takes_sorted_window(algorithm, cols, clamp_at, tau, x, y):
        from . import sorted_window
        return sorted_window.rank_backward(x, y, g, gx, gy, tau, descending)
    args = (_dtype_name(x), _ptr(x), _ptr(y), _ptr(g), _ptr(gx), _ptr(gy), rows, cols, tau, descending,
            clamp_at, algorithm)
    if x.is_cuda:
        _C.rank_backward_cuda(*args, *cuda_launch_args(x.device))
    else:
        _C.rank_backward_cpu(*args, torch.get_num_threads())


def vsl_forward(sx: torch.Tensor, sy: Optional[torch.Tensor], cx: torch.Tensor, cy: Optional[torch.Tensor],
                gs: torch.Tensor, gc: Optional[torch.Tensor], partials: torch.Tensor, grad_scale: float,
                tau: float, clamp_at: float, algorithm: int) -> None:
    """Fused VSL forward over (rows, cols) blocks: row ratio sums into partials, and the gradients of
    ``L = 1 - grad_scale * partials.sum()``, dL/dSR into gs and dL/dCR into gc (if given)."""
    rows, cols = sx.shape
    s_window = _takes_sorted_window(algorithm, cols, clamp_at, tau, sx, sy)
    c_window = _takes_sorted_window(algorithm, cols, clamp_at, tau, cx, cy)
    if s_window or c_window:
        # Not fused: SR and CR are ranked into buffers, each by the path that suits it.
        sr, cr = torch.empty_like(sx), torch.empty_like(cx)
        rank_forward(sx, sy, sr, tau, True, clamp_at, algorithm, s_window)
        rank_forward(cx, cy, cr, tau, True, clamp_at, algorithm, c_window)
        return rank_ratio_rows(sr, cr, gs, gc, partials, grad_scale)
    args = (_dtype_name(sx), _ptr(sx), _ptr(sy), _ptr(cx), _ptr(cy), _ptr(gs), _ptr(gc), _ptr(partials), rows,
            cols, grad_scale, tau, clamp_at, algorithm)
    if sx.is_cuda:
        _C.vsl_forward_cuda(*args, *cuda_launch_args(sx.device))
    else:
        _C.vsl_forward_cpu(*args, torch.get_num_threads())


def window_sums(kind: int, v: torch.Tensor, w: Optional[torch.Tensor], u: torch.Tensor, wu: Optional[torch.Tensor],
                uperm: torch.Tensor, skip: Optional[torch.Tensor], out: torch.Tensor, tau: float,
                descending: bool) -> None:
    """Sorted-window element sums over pre-sorted rows (see csrc/kernels.h and vsl_ext.sorted_window):
    out[r, uperm[r, i]] = element ``kind`` of centre u[r, i] against the sorted row v[r]."""
    rows, cols = u.shape
    args = (_dtype_name(u), kind, _ptr(v), _ptr(w), _ptr(u), _ptr(wu), _ptr(uperm), _ptr(skip), _ptr(out), rows,
            cols, tau, descending)
    if u.is_cuda:
        _C.window_sums_cuda(*args, *cuda_launch_args(u.device))
    else:
        _C.window_sums_cpu(*args, torch.get_num_threads())


def rank_ratio_rows(sr: torch.Tensor, cr: torch.Tensor, gs: torch.Tensor, gc: Optional[torch.Tensor],
                    partials: torch.Tensor, grad_scale: float) -> None:
    """From the ranks SR and CR: every row's ratio sum into partials and the gradients of
    ``L = 1 - grad_scale * partials.sum()`` into gs (dL/dSR) and gc (dL/dCR, if given)."""
    rows, cols = sr.shape
    args = (_dtype_name(sr), _ptr(sr), _ptr(cr), _ptr(gs), _ptr(gc), _ptr(partials), rows, cols, grad_scale)
    if sr.is_cuda:
        _C.rank_ratio_rows_cuda(*args, *cuda_launch_args(sr.device))
    else:
        _C.rank_ratio_rows_cpu(*args)
