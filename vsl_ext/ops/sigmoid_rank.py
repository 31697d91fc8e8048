"""``sigmoid_rank``: smoothed row-wise ranks, as a torch custom op with a fused backward.

``R[i, j] = 1 + sum_{k != j} sigmoid((M[i, k] - M[i, j]) / tau)``  (descending: 1 = largest)
``R[i, j] = 1 + sum_{k != j} sigmoid((M[i, j] - M[i, k]) / tau)``  (ascending:  1 = smallest)

Backward, with g = dL/dR and s = +1 (descending) or -1 (ascending), every row independent:
``dL/dM[i, l] = (s / tau) * sum_{j != l} sigmoid'((M[i, l] - M[i, j]) / tau) * (g[i, j] - g[i, l])``

Registered ops (schemas below): ``vsl_ext::sigmoid_rank(Tensor m, float tau, bool descending, int
algorithm) -> Tensor`` and ``vsl_ext::sigmoid_rank_backward(Tensor m, Tensor grad, float tau, bool
descending, bool public_code, int algorithm) -> Tensor``. ``algorithm`` is a code of
``vsl_ext._C.ALGORITHMS``; ``public_code`` makes the backward one of the public-code variant's rank
(m ranked against m^T, the sigmoid's argument clamped to +-``_C.PUBLIC_CODE_CLAMP``), which
:mod:`vsl_ext.ops.vsl_loss` uses.
"""
# No `from __future__ import annotations`: torch 2.4 infers the custom ops' schemas from the
# annotations and rejects string ones ("unsupported type Tensor").
import torch
from torch import Tensor

from .. import _validate, kernels
from . import _checks


@torch.library.custom_op("vsl_ext::sigmoid_rank", mutates_args=())
def sigmoid_rank_op(m: Tensor, tau: float, descending: bool, algorithm: int) -> Tensor:
    """(rows, cols) ranks of m's rows; float32/float64, any layout, CPU or CUDA."""
    _checks.sigmoid_rank(m, tau, algorithm)
    m = m.contiguous()
    ranks = torch.empty_like(m)
    if m.numel():
        kernels.for_tensor(m).sigmoid_rank_forward(m, None, ranks, tau, descending, False, algorithm)
    return ranks


@sigmoid_rank_op.register_fake
def _(m, tau, descending, algorithm):
    _checks.sigmoid_rank(m, tau, algorithm, _checks.torch_check)
    return m.new_empty(m.shape)


@torch.library.custom_op("vsl_ext::sigmoid_rank_backward", mutates_args=())
def sigmoid_rank_backward_op(m: Tensor, grad: Tensor, tau: float, descending: bool, public_code: bool,
                             algorithm: int) -> Tensor:
    """dL/dm for L = sum(grad * R(m)); R is the public-code variant's rank if ``public_code``."""
    _checks.sigmoid_rank_backward(m, grad, tau, public_code, algorithm)
    m, grad = m.contiguous(), grad.contiguous()
    grad_m = torch.empty_like(m)
    if not m.numel():
        return grad_m
    kernel = kernels.for_tensor(m)
    if not public_code:
        kernel.sigmoid_rank_backward(m, None, grad, grad_m, None, tau, descending, False, algorithm)
        return grad_m
    grad_m_t = torch.empty_like(m)
    kernel.sigmoid_rank_backward(m, m.t().contiguous(), grad, grad_m, grad_m_t, tau, descending, True, algorithm)
    return grad_m + grad_m_t.t()


@sigmoid_rank_backward_op.register_fake
def _(m, grad, tau, descending, public_code, algorithm):
    _checks.sigmoid_rank_backward(m, grad, tau, public_code, algorithm, _checks.torch_check)
    return m.new_empty(m.shape)


def _setup_context(ctx, inputs, output):
    m, tau, descending, algorithm = inputs
    ctx.save_for_backward(m)
    ctx.args = (tau, descending, algorithm)


def _backward(ctx, grad):
    (m,) = ctx.saved_tensors
    tau, descending, algorithm = ctx.args
    return sigmoid_rank_backward_op(m, grad, tau, descending, False, algorithm), None, None, None


sigmoid_rank_op.register_autograd(_backward, setup_context=_setup_context)


def sigmoid_rank(M: Tensor, tau: float = 1e-3, descending: bool = True, *, algorithm: str = "auto") -> Tensor:
    """Smoothed rank of every entry of M within its row.

    Args:
        M: (r, c) float tensor on CPU or CUDA, any layout. float16/bfloat16 are computed in float32.
        tau: sigmoid temperature (> 0); ranks approach hard ranks as tau -> 0.
        descending: True gives rank 1 to the largest entry of a row, False to the smallest.
        algorithm: "auto", "dense" (all c^2 pairs per row) or "sorted" (sort each row and evaluate
            sigmoids only where |difference| <= 30 tau, 50 tau in float64; exact to rounding).
            "auto" takes "sorted" from 64 columns on CPU; on CUDA from 2,048 columns when at most
            half of a row's pairs fall inside the window (docs/kernels.md).

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
    return sigmoid_rank_op(M.to(dtype), tau, descending, _validate.algorithm(algorithm))
