"""``sigmoid_rank``: smoothed row-wise ranks, as a torch custom op with a fused backward.

``R[i, j] = 1 + sum_{k != j} sigmoid((M[i, k] - M[i, j]) / tau)``  (descending: 1 = largest)
``R[i, j] = 1 + sum_{k != j} sigmoid((M[i, j] - M[i, k]) / tau)``  (ascending:  1 = smallest)

Backward, with g = dL/dR and s = +1 (descending) or -1 (ascending), every row independent:
``dL/dM[i, l] = (s / tau) * sum_{j != l} sigmoid'((M[i, l] - M[i, j]) / tau) * (g[i, j] - g[i, l])``
"""
# No `from __future__ import annotations`: torch 2.4 infers the custom ops' schemas from the
# annotations and rejects string ones ("unsupported type Tensor").
import torch
from torch import Tensor

from . import _native, _validate


@torch.library.custom_op("vsl_ext::sigmoid_rank", mutates_args=())
def _sigmoid_rank(m: Tensor, tau: float, descending: bool, algorithm: int) -> Tensor:
    out = torch.empty_like(m)
    _native.rank_forward(m, None, out, tau, descending, 0.0, algorithm)
    return out


@_sigmoid_rank.register_fake
def _(m, tau, descending, algorithm):
    return torch.empty_like(m)


@torch.library.custom_op("vsl_ext::sigmoid_rank_backward", mutates_args=())
def _sigmoid_rank_backward(m: Tensor, grad: Tensor, tau: float, descending: bool, transposed: bool,
                           clamp_at: float, algorithm: int) -> Tensor:
    """dL/dm for L = sum(grad * R). ``transposed``: R is the cross rank of m against m.T (published code)."""
    gx = torch.empty_like(m)
    if not transposed:
        _native.rank_backward(m, None, grad, gx, None, tau, descending, clamp_at, algorithm)
        return gx
    gy = torch.empty_like(m)
    _native.rank_backward(m, m.t().contiguous(), grad, gx, gy, tau, descending, clamp_at, algorithm)
    return gx + gy.t()


@_sigmoid_rank_backward.register_fake
def _(m, grad, tau, descending, transposed, clamp_at, algorithm):
    return torch.empty_like(m)


def _setup_context(ctx, inputs, output):
    m, tau, descending, algorithm = inputs
    ctx.save_for_backward(m)
    ctx.args = (tau, descending, algorithm)


def _backward(ctx, grad):
    (m,) = ctx.saved_tensors
    tau, descending, algorithm = ctx.args
    dm = _sigmoid_rank_backward(m, grad.contiguous(), tau, descending, False, 0.0, algorithm)
    return dm, None, None, None


_sigmoid_rank.register_autograd(_backward, setup_context=_setup_context)


def sigmoid_rank(M: Tensor, tau: float = 1e-3, descending: bool = True, *, algorithm: str = "auto") -> Tensor:
    """Smoothed rank of every entry of M within its row.

    Args:
        M: (r, c) float tensor on CPU or CUDA. float16/bfloat16 are computed in float32.
        tau: sigmoid temperature (> 0); ranks approach hard ranks as tau -> 0.
        descending: True gives rank 1 to the largest entry of a row, False to the smallest.
        algorithm: "auto", "dense" (all c^2 pairs per row) or "sorted" (sort each row and evaluate
            sigmoids only where |difference| <= 30 tau, exact to rounding). "auto" takes "sorted"
            from 64 columns on CPU; on CUDA from 2,048 columns when at most half of a row's pairs
            fall inside the window (docs/kernels.md).

    Returns:
        (r, c) ranks in [1, c], float32 (float64 for float64 input); differentiable w.r.t. M.
        Infinite entries (a -inf mask, a float16 overflow to +inf) follow the formula: equal
        infinities tie (1/2), an infinity against another value is saturated (0 or 1), ranks stay
        finite and the gradient at an infinite entry is 0. A NaN makes its row's ranks NaN.

    Raises:
        TypeError / ValueError naming the argument: M not a non-empty 2-D float tensor, tau not a
        finite number > 0 whose reciprocal is finite in the computation dtype (tau >= 2.9e-39 for
        float32), descending not a bool, an unknown algorithm.
    """
    _validate.matrix("M", M)
    dtype = _validate.compute_dtype(M)
    tau = _validate.tau(tau, dtype)
    if not isinstance(descending, bool):
        raise TypeError(f"descending must be a bool, got {type(descending).__name__}")
    algo = _validate.algorithm(algorithm)
    m = M.to(dtype).contiguous()
    return _sigmoid_rank(m, tau, descending, algo)
