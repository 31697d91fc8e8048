"""The checks of the registered ops (``torch.ops.vsl_ext.*``), made before any native call.

The ops are public: ``torch.ops``, ``torch.compile`` graphs, ``torch.export`` and other libraries
call them without the public functions' argument handling, and their native kernels trust raw
pointers. So every op checks its own tensors here: dtype float32 or float64 (the public functions
compute float16/bfloat16 in float32), all tensors of one call of one dtype and on one device (CPU or
CUDA; meta in fake kernels), (..., rows, cols) with at least 2 dimensions and matching shapes
(leading dimensions are a batch of matrices, e.g. from ``torch.func.vmap``; square matrices for the
public-code variant); and its scalars: tau a 0-d float64 CPU tensor whose value is usable in the
dtype (:func:`vsl_ext._validate.tau_error`), a known algorithm code.

tau is a tensor so that compiled graphs and exported programs carry its value as data: a Python
float argument of a custom op can be frozen into an inductor graph as a constant (pytorch/pytorch
#197889), and a tau schedule would then silently keep an old value. It lives on the CPU because the
kernels read it on the host (a CUDA tau would cost a device sync per call); its value is checked in
the real kernels only, since fake kernels see no values.

Layouts need no check: the ops make their inputs contiguous (a view's strides are never read by the
native code). Empty matrices are valid and skip the native call.

Each check function takes ``require``: :func:`raise_unless` in the real kernels, :func:`torch_check`
in the fake kernels (``torch._check_with``, which turns a condition on symbolic sizes into a runtime
assertion of the traced graph), so torch.compile and torch.export with fake tensors reject what the
real kernels reject, with the same error types and messages naming the op, the argument and what
was expected. In the real kernels a fast path first tests everything at once (a few attribute
reads: the ops are called on every training step, many at small n) and returns if all is well;
anything else goes through the full checks, which raise or accept. The real kernels' checks return
tau's value as a Python float, which the kernels take.
"""
from typing import Callable, Optional

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
    """A (..., rows, cols) float32/float64 tensor (at least 2-D) on CPU or CUDA."""
    require(TypeError, isinstance(t, Tensor), lambda: f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    require(TypeError, t.dtype in _DTYPES, lambda: (
        f"{op}: {name} must be float32 or float64, got {t.dtype} (vsl_ext.sigmoid_rank and vsl_ext.vsl_loss "
        "compute float16/bfloat16 in float32)"))
    require(ValueError, t.device.type in _DEVICE_TYPES,
            lambda: f"{op}: {name} must be on a CPU or CUDA device, got {t.device}")
    require(ValueError, t.dim() >= 2, lambda: (
        f"{op}: {name} must be a 2-D (rows, cols) matrix or a (..., rows, cols) batch of them, got {t.dim()}-D "
        f"shape {tuple(t.shape)}"))


def _same_place(op: str, name: str, t: Tensor, ref_name: str, ref: Tensor, require: Require) -> None:
    """``t`` on ``ref``'s device with ``ref``'s shape."""
    require(ValueError, t.device == ref.device,
            lambda: f"{op}: {name} is on {t.device} but {ref_name} is on {ref.device}; put both on one device")
    require(ValueError, t.dim() == ref.dim(),
            lambda: f"{op}: {name} must have the shape of {ref_name} {tuple(ref.shape)}, got {tuple(t.shape)}")
    for dim in range(ref.dim()):
        require(ValueError, t.shape[dim] == ref.shape[dim],
                lambda: f"{op}: {name} must have the shape of {ref_name} {tuple(ref.shape)}, got {tuple(t.shape)}")


def like(op: str, name: str, t: Tensor, ref_name: str, ref: Tensor, require: Require) -> None:
    """A matrix of ``ref``'s dtype, device and shape."""
    matrix(op, name, t, require)
    require(TypeError, t.dtype == ref.dtype, lambda: f"{op}: {name} must have the dtype of {ref_name} ({ref.dtype}), "
            f"got {t.dtype}")
    _same_place(op, name, t, ref_name, ref, require)


def square(op: str, name: str, t: Tensor, require: Require) -> None:
    require(ValueError, t.shape[-2] == t.shape[-1], lambda: (
        f"{op}: {name} must be a square (n, n) matrix for the public-code variant (it ranks {name} against its "
        f"transpose), got shape {tuple(t.shape)}"))


def tau_tensor(op: str, tau: Tensor, require: Require) -> None:
    """A 0-d float64 tensor on the CPU (meta only in fake kernels); its value is checked by :func:`scalars`."""
    require(TypeError, isinstance(tau, Tensor), lambda: (
        f"{op}: tau must be a 0-d float64 CPU tensor, got {type(tau).__name__} (vsl_ext.sigmoid_rank and "
        "vsl_ext.vsl_loss take a Python float too)"))
    require(TypeError, tau.dtype == torch.float64,
            lambda: f"{op}: tau must be a 0-d float64 CPU tensor, got {tau.dtype}")
    require(ValueError, tau.dim() == 0,
            lambda: f"{op}: tau must be a 0-d float64 CPU tensor, got {tau.dim()}-D shape {tuple(tau.shape)}")
    require(ValueError, tau.device.type in ("cpu", "meta"), lambda: (
        f"{op}: tau must be a 0-d float64 CPU tensor, got one on {tau.device} (the kernels read tau on the host; "
        "vsl_ext.sigmoid_rank and vsl_ext.vsl_loss move it there)"))


def scalars(op: str, tau: Tensor, dtype: torch.dtype, algorithm: int, require: Require) -> Optional[float]:
    """tau a 0-d float64 CPU tensor whose value is usable in the computation dtype (real kernels only: fake
    kernels see no values), a known algorithm code. Returns tau's value in the real kernels, else None."""
    if type(tau) is not float:  # a float only from the eager path (vsl_ext.ops._eager), checked already
        tau_tensor(op, tau, require)
    require(ValueError, algorithm in _ALGORITHM_CODES, lambda: (
        f"{op}: algorithm must be one of the codes {dict(_C.ALGORITHMS)}, got {algorithm!r}"))
    if require is not raise_unless:
        return None
    value = tau if type(tau) is float else tau.item()
    error = _validate.tau_error(value, dtype)
    require(type(error) if error is not None else ValueError, error is None, lambda: f"{op}: {error}")
    return value


# ---------------------------------------------------------------------------------- fast path
def _fast_matrix(t) -> bool:
    """A real float32/float64 CPU or CUDA tensor of at least 2 dimensions (the real kernels never see meta
    tensors)."""
    return isinstance(t, Tensor) and t.dtype in _DTYPES and t.dim() >= 2 and (t.is_cpu or t.is_cuda)


def _fast_like(t, ref: Tensor) -> bool:
    return (_fast_matrix(t) and t.dtype == ref.dtype and t.is_cuda == ref.is_cuda
            and t.get_device() == ref.get_device() and t.shape == ref.shape)


def _fast_tau(tau, dtype: torch.dtype, algorithm) -> Optional[float]:
    """tau's value if tau and algorithm are surely fine, else None. tau is a float on the eager path
    (:mod:`vsl_ext.ops._eager`), a tensor otherwise."""
    if type(tau) is float:
        value = tau
        if algorithm not in _ALGORITHM_CODES:
            return None
    elif not (type(tau) is Tensor and tau.dtype == torch.float64 and tau.dim() == 0 and tau.is_cpu
            and algorithm in _ALGORITHM_CODES):
        return None
    else:
        value = tau.item()
    lo, hi = _FAST_TAU[dtype]
    return value if lo <= value <= hi else None


def _square(t: Tensor) -> bool:
    return t.shape[-1] == t.shape[-2]


# ---------------------------------------------------------------------------------- one per op
def sigmoid_rank(m: Tensor, tau: Tensor, algorithm: int, require: Require = raise_unless) -> Optional[float]:
    """Returns tau's value in the real kernels (None in fake ones)."""
    if require is raise_unless and _fast_matrix(m):
        value = _fast_tau(tau, m.dtype, algorithm)
        if value is not None:
            return value
    op = "vsl_ext::sigmoid_rank"
    matrix(op, "m", m, require)
    return scalars(op, tau, m.dtype, algorithm, require)


def sigmoid_rank_backward(m: Tensor, grad: Tensor, tau: Tensor, public_code: bool, algorithm: int,
                          require: Require = raise_unless) -> Optional[float]:
    if require is raise_unless and _fast_matrix(m) and _fast_like(grad, m) and (not public_code or _square(m)):
        value = _fast_tau(tau, m.dtype, algorithm)
        if value is not None:
            return value
    op = "vsl_ext::sigmoid_rank_backward"
    matrix(op, "m", m, require)
    like(op, "grad", grad, "m", m, require)
    if public_code:
        square(op, "m", m, require)
    return scalars(op, tau, m.dtype, algorithm, require)


def vsl_loss_ratio_sum(sims: Tensor, semantic: Tensor, tau: Tensor, public_code: bool, algorithm: int,
                       require: Require = raise_unless) -> Optional[float]:
    if (require is raise_unless and _fast_matrix(sims) and _fast_like(semantic, sims)
            and (not public_code or _square(sims))):
        value = _fast_tau(tau, sims.dtype, algorithm)
        if value is not None:
            return value
    op = "vsl_ext::vsl_loss_ratio_sum"
    matrix(op, "sims", sims, require)
    like(op, "semantic", semantic, "sims", sims, require)
    if public_code:
        square(op, "sims", sims, require)
    return scalars(op, tau, sims.dtype, algorithm, require)


def bool_mask(op: str, name: str, t: Tensor, ref_name: str, ref: Tensor, require: Require) -> None:
    """A bool tensor of ``ref``'s shape on ``ref``'s device (a relevance or subset mask)."""
    require(TypeError, isinstance(t, Tensor), lambda: f"{op}: {name} must be a bool Tensor, got {type(t).__name__}")
    require(TypeError, t.dtype == torch.bool, lambda: (
        f"{op}: {name} must be a bool tensor of the shape of {ref_name} {tuple(ref.shape)}, got dtype {t.dtype}"))
    _same_place(op, name, t, ref_name, ref, require)


def _fast_mask(t, ref: Tensor) -> bool:
    return (isinstance(t, Tensor) and t.dtype == torch.bool and t.is_cuda == ref.is_cuda
            and t.get_device() == ref.get_device() and t.shape == ref.shape)


def _masked(op: str, name: str, m: Tensor, mask_name: str, mask: Tensor, tau: Tensor, algorithm: int,
            require: Require, grad: Optional[Tensor] = None) -> Optional[float]:
    """The checks of an op on a matrix ``m`` and a bool mask of its shape (and, for a backward, the
    gradient ``grad`` of m's shape); returns tau's value in the real kernels (None in fake ones)."""
    if (require is raise_unless and _fast_matrix(m) and _fast_mask(mask, m)
            and (grad is None or _fast_like(grad, m))):
        value = _fast_tau(tau, m.dtype, algorithm)
        if value is not None:
            return value
    matrix(op, name, m, require)
    bool_mask(op, mask_name, mask, name, m, require)
    if grad is not None:
        like(op, "grad", grad, name, m, require)
    return scalars(op, tau, m.dtype, algorithm, require)


def sigmoid_rank_among(m: Tensor, among: Tensor, tau: Tensor, algorithm: int,
                       require: Require = raise_unless) -> Optional[float]:
    return _masked("vsl_ext::sigmoid_rank_among", "m", m, "among", among, tau, algorithm, require)


def sigmoid_rank_among_backward(m: Tensor, among: Tensor, grad: Tensor, tau: Tensor, algorithm: int,
                                require: Require = raise_unless) -> Optional[float]:
    return _masked("vsl_ext::sigmoid_rank_among_backward", "m", m, "among", among, tau, algorithm, require, grad)


def smooth_ap_loss(sims: Tensor, relevant: Tensor, tau: Tensor, algorithm: int,
                   require: Require = raise_unless) -> Optional[float]:
    """That some query of every matrix has a relevant reference is a check of values, made by the op itself."""
    return _masked("vsl_ext::smooth_ap_loss", "sims", sims, "relevant", relevant, tau, algorithm, require)
