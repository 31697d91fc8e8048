"""The checks of the registered ops (``torch.ops.vsl_ext.*``), made before any native call.

The ops are public: ``torch.ops``, ``torch.compile`` graphs, ``torch.export`` and other libraries
call them without the public functions' argument handling, and their native kernels trust raw
pointers. So every op checks its own tensors here: dtype float32 or float64 (the public functions
compute float16/bfloat16 in float32), all tensors of one call of one dtype and on one device (CPU or
CUDA; meta in fake kernels), 2-D with matching shapes (square for the public-code variant); and its
scalars: tau usable in the dtype (:func:`vsl_ext._validate.tau_error`), a known algorithm code.
Layouts need no check: the ops make their inputs contiguous (a view's strides are never read by the
native code). Empty matrices are valid and skip the native call.

Each check function takes ``require``: :func:`raise_unless` in the real kernels, :func:`torch_check`
in the fake kernels (``torch._check_with``, which turns a condition on symbolic sizes into a runtime
assertion of the traced graph), so torch.compile and torch.export with fake tensors reject what the
real kernels reject, with the same error types and messages naming the op, the argument and what
was expected. In the real kernels a fast path first tests everything at once (a few attribute
reads: the ops are called on every training step, many at small n) and returns if all is well;
anything else goes through the full checks, which raise or accept.
"""
from typing import Callable

import torch
from torch import Tensor

from .. import _validate
from .._native import _C

Require = Callable[[type, object, Callable[[], str]], None]

_DTYPES = (torch.float32, torch.float64)
_DEVICE_TYPES = ("cpu", "cuda", "meta")  # meta only ever reaches the fake kernels
_ALGORITHM_CODES = tuple(sorted(_C.ALGORITHMS.values()))
# The fast path's temperatures: well inside what _validate.tau_error accepts (1 / tau and tau finite
# in the dtype); a tau outside these bounds gets the full check.
_FAST_TAU = {dtype: (4.0 / torch.finfo(dtype).max, torch.finfo(dtype).max / 4.0) for dtype in _DTYPES}


def raise_unless(error: type, ok, message: Callable[[], str]) -> None:
    if not ok:
        raise error(message())


def torch_check(error: type, ok, message: Callable[[], str]) -> None:
    torch._check_with(error, ok, message)


def matrix(op: str, name: str, t: Tensor, require: Require) -> None:
    """A 2-D float32/float64 tensor on CPU or CUDA."""
    require(TypeError, isinstance(t, Tensor), lambda: f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    require(TypeError, t.dtype in _DTYPES, lambda: (
        f"{op}: {name} must be float32 or float64, got {t.dtype} (vsl_ext.sigmoid_rank and vsl_ext.vsl_loss "
        "compute float16/bfloat16 in float32)"))
    require(ValueError, t.device.type in _DEVICE_TYPES,
            lambda: f"{op}: {name} must be on a CPU or CUDA device, got {t.device}")
    require(ValueError, t.dim() == 2,
            lambda: f"{op}: {name} must be a 2-D (rows, cols) matrix, got {t.dim()}-D shape {tuple(t.shape)}")


def like(op: str, name: str, t: Tensor, ref_name: str, ref: Tensor, require: Require) -> None:
    """A matrix of ``ref``'s dtype, device and shape."""
    matrix(op, name, t, require)
    require(TypeError, t.dtype == ref.dtype, lambda: f"{op}: {name} must have the dtype of {ref_name} ({ref.dtype}), "
            f"got {t.dtype}")
    require(ValueError, t.device == ref.device,
            lambda: f"{op}: {name} is on {t.device} but {ref_name} is on {ref.device}; put both on one device")
    for dim in (0, 1):
        require(ValueError, t.shape[dim] == ref.shape[dim],
                lambda: f"{op}: {name} must have the shape of {ref_name} {tuple(ref.shape)}, got {tuple(t.shape)}")


def square(op: str, name: str, t: Tensor, require: Require) -> None:
    require(ValueError, t.shape[0] == t.shape[1], lambda: (
        f"{op}: {name} must be a square (n, n) matrix for the public-code variant (it ranks {name} against its "
        f"transpose), got shape {tuple(t.shape)}"))


def scalars(op: str, tau: float, dtype: torch.dtype, algorithm: int, require: Require) -> None:
    """tau usable in the computation dtype, a known algorithm code."""
    error = _validate.tau_error(tau, dtype)
    require(type(error) if error is not None else ValueError, error is None, lambda: f"{op}: {error}")
    require(ValueError, algorithm in _ALGORITHM_CODES, lambda: (
        f"{op}: algorithm must be one of the codes {dict(_C.ALGORITHMS)}, got {algorithm!r}"))


# ---------------------------------------------------------------------------------- fast path
def _fast_matrix(t) -> bool:
    """A real 2-D float32/float64 CPU or CUDA tensor (the real kernels never see meta tensors)."""
    return isinstance(t, Tensor) and t.dtype in _DTYPES and t.dim() == 2 and (t.is_cpu or t.is_cuda)


def _fast_like(t, ref: Tensor) -> bool:
    return (_fast_matrix(t) and t.dtype == ref.dtype and t.is_cuda == ref.is_cuda
            and t.get_device() == ref.get_device() and t.shape == ref.shape)


def _fast_scalars(tau, dtype: torch.dtype, algorithm) -> bool:
    lo, hi = _FAST_TAU[dtype]
    return type(tau) is float and lo <= tau <= hi and algorithm in _ALGORITHM_CODES


# ---------------------------------------------------------------------------------- one per op
def sigmoid_rank(m: Tensor, tau: float, algorithm: int, require: Require = raise_unless) -> None:
    if require is raise_unless and _fast_matrix(m) and _fast_scalars(tau, m.dtype, algorithm):
        return
    op = "vsl_ext::sigmoid_rank"
    matrix(op, "m", m, require)
    scalars(op, tau, m.dtype, algorithm, require)


def sigmoid_rank_backward(m: Tensor, grad: Tensor, tau: float, public_code: bool, algorithm: int,
                          require: Require = raise_unless) -> None:
    if (require is raise_unless and _fast_matrix(m) and _fast_like(grad, m) and _fast_scalars(tau, m.dtype, algorithm)
            and (not public_code or m.shape[0] == m.shape[1])):
        return
    op = "vsl_ext::sigmoid_rank_backward"
    matrix(op, "m", m, require)
    like(op, "grad", grad, "m", m, require)
    if public_code:
        square(op, "m", m, require)
    scalars(op, tau, m.dtype, algorithm, require)


def vsl_loss_ratio_sum(sims: Tensor, semantic: Tensor, tau: float, public_code: bool, algorithm: int,
                       require: Require = raise_unless) -> None:
    if (require is raise_unless and _fast_matrix(sims) and _fast_like(semantic, sims)
            and _fast_scalars(tau, sims.dtype, algorithm) and (not public_code or sims.shape[0] == sims.shape[1])):
        return
    op = "vsl_ext::vsl_loss_ratio_sum"
    matrix(op, "sims", sims, require)
    like(op, "semantic", semantic, "sims", sims, require)
    if public_code:
        square(op, "sims", sims, require)
    scalars(op, tau, sims.dtype, algorithm, require)
