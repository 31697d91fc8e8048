"""Argument checks of the public functions (vsl_ext.sigmoid_rank, vsl_ext.vsl_loss, VSLLoss,
vsl_ext.distributed.vsl_loss): Python types, names, non-empty inputs, before the conversion to the
computation dtype. Each error names the argument and what was expected. The registered ops check
their own inputs again (:mod:`vsl_ext.ops._checks`), since they are reachable without these
functions."""
from __future__ import annotations

import math
import numbers
from typing import Optional, Union

import torch

from ._native import _C
from .ops import _eager

_FLOAT_TYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_LARGEST = {dtype: torch.finfo(dtype).max for dtype in (torch.float32, torch.float64)}


def matrix(name: str, t) -> torch.Tensor:
    """A non-empty 2-D floating-point tensor."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOAT_TYPES:
        raise TypeError(f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), "
                        f"got {t.dtype}")
    if t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got {t.dim()}-D tensor of shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(t.shape)}")
    return t


def square(name: str, t: torch.Tensor) -> None:
    if t.shape[0] != t.shape[1]:
        raise ValueError(f"{name} must be a square (n, n) matrix, got shape {tuple(t.shape)}")


def same_shape_and_device(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.shape != ref.shape:
        raise ValueError(f"{name} must have the shape of {ref_name} {tuple(ref.shape)}, got {tuple(t.shape)}")
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}; put both on one device")


def bool_mask(name: str, t, ref_name: str, ref: torch.Tensor) -> torch.Tensor:
    """A bool tensor of ``ref``'s shape on ``ref``'s device."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a bool torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor of the shape of {ref_name} {tuple(ref.shape)}, got dtype "
                        f"{t.dtype}")
    same_shape_and_device(name, t, ref_name, ref)
    return t


def tau_error(value, dtype: torch.dtype = torch.float32) -> Optional[Exception]:
    """Why ``value`` is no temperature the kernels can use in ``dtype`` (the computation dtype,
    float32 or float64), or None if it is one: tau must be a real number, finite and > 0,
    representable in ``dtype`` and with a reciprocal that is too (the kernels scale every
    difference by ``1 / tau``; an overflow to inf would turn ties into ``0 * inf = NaN``)."""
    if type(value) is not float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return TypeError(f"tau must be a real number, got {type(value).__name__}")
        value = float(value)
    if not (math.isfinite(value) and value > 0):
        return ValueError(f"tau must be a finite number > 0, got {value}")
    largest = _LARGEST[dtype] if dtype in _LARGEST else torch.finfo(dtype).max
    if value <= largest and 1.0 / value <= largest:
        return None
    name = str(dtype).replace("torch.", "")
    if value > largest:
        return ValueError(f"tau = {value!r} overflows {name}, the computation dtype (largest {largest:.6g})")
    if 1.0 / value > largest:
        hint = "; float64 input is computed in float64" if dtype != torch.float64 else ""
        return ValueError(f"tau = {value!r} is too small for {name} computation: 1 / tau overflows {name} "
                          f"(tau must be >= {1.0 / largest!r}{hint})")
    return None


def tau(value, dtype: torch.dtype = torch.float32) -> Union[float, torch.Tensor]:
    """A public function's tau (a real number or a 0-d floating-point tensor, on any device) for the
    computation dtype ``dtype``: checked and returned as a float in plain eager code (a CUDA tensor's
    value is read on the host: one device sync), raising :func:`tau_error`'s error; inside a traced
    region (torch.compile, torch.export, functorch transforms, fake tensors) returned unread, as a
    number that may be symbolic or as a tensor, so that a graph carries it as data instead of
    freezing or guarding on its value: the registered ops check the value when they run
    (:func:`tau_tensor` makes the tensor they take)."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise TypeError(f"tau must be a real number or a floating-point tensor, got a {value.dtype} tensor")
        if value.dim() != 0:
            raise ValueError(f"tau must be a number or a 0-d tensor, got a tensor of shape {tuple(value.shape)}")
        if not _eager.plain(value):
            return value.detach()
        value = value.item()
    elif torch.compiler.is_compiling():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"tau must be a real number, got {type(value).__name__}")
        return value
    error = tau_error(value, dtype)
    if error is not None:
        raise error
    return float(value)


def tau_tensor(value: Union[float, torch.Tensor]) -> torch.Tensor:
    """:func:`tau`'s result as the registered ops take it: a 0-d float64 CPU tensor (a graph input or
    node under tracing, whatever ``torch.device`` context is active)."""
    if isinstance(value, torch.Tensor):
        return value.to(device="cpu", dtype=torch.float64)
    if torch.compiler.is_compiling():
        # A product with the (symbolic) number, which the graph computes from its input: torch.full
        # or torch.tensor of a symbolic float would make inductor's scalar pass guard on its value
        # (one recompile per tau).
        return torch.ones((), dtype=torch.float64, device="cpu") * value
    return torch.tensor(value, dtype=torch.float64, device="cpu")


def choice(name: str, value, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")
    return value


def algorithm(value: str) -> int:
    """The code (``_C.ALGORITHMS``) of "auto", "dense" or "sorted"."""
    choice("algorithm", value, _C.ALGORITHMS)
    return _C.ALGORITHMS[value]


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half precision inputs are computed in float32)."""
    for t in tensors:
        if t.dtype == torch.float64:
            return torch.float64
    return torch.float32
