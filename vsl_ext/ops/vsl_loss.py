"""``vsl_loss``: the Visual Semantic Loss (Zhang et al., ICME 2023) as one fused custom op.

``L_vs = 1 - mean_ij min(SR_ij, CR_ij) / max(SR_ij, CR_ij)`` with SR = R(S), CR = R(C) (descending
sigmoid ranks, see :mod:`vsl_ext.ops.sigmoid_rank`). The fused op ranks one row of S and C at a time,
sums the row's ratios and, for the inputs that need one, takes the gradient of that sum through the
row's ranks right away (on CPU in the same pass over the row, which is still sorted), so the backward
only scales it: memory is O(n^2) instead of the reference's O(n^3), and nothing is recomputed. It
returns the float64 sum of the ratios; the loss is ``1 - sum / n^2``, and a row-sharded batch
(:mod:`vsl_ext.distributed`) adds the ranks' sums.

Registered op: ``vsl_ext::vsl_loss_ratio_sum(Tensor sims, Tensor semantic, float tau, bool
public_code, bool semantic_grad, int algorithm) -> (Tensor ratio_sum, Tensor grad_sims, Tensor
grad_semantic)``: for (r, c) row blocks of S and C, ``sum_ij min(SR, CR) / max(SR, CR)`` (0-dim
float64) and its gradients with respect to sims and (empty unless ``semantic_grad``) semantic; both
are not differentiable. ``public_code`` ranks S against S^T and C against C^T with the
published code's clamp (square blocks only). Its backward scales the gradients by the incoming one; a
gradient the forward was not asked for (semantic's, without ``semantic_grad``) is computed there.

In plain eager code :func:`vsl_loss` calls the same kernels without the dispatcher
(:mod:`vsl_ext.ops._eager`).
"""
# No `from __future__ import annotations`: torch 2.4 infers the custom ops' schemas from the
# annotations and rejects string ones ("unsupported type Tensor").
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .. import _validate, kernels
from . import _checks, _eager

VARIANTS = ("row", "public-code")
_TORCH_GRAIN_SIZE = 32768   # at::internal::GRAIN_SIZE: torch runs smaller element-wise ops on one thread


def _ratio_sum_and_grads(sims: Tensor, semantic: Tensor, tau: float, public_code: bool, sims_grad: bool,
                         semantic_grad: bool, algorithm: int) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """The kernels' call of both paths, on checked inputs: (float64 ratio sum, d sum / d sims or None,
    d sum / d semantic or None)."""
    sims, semantic = sims.contiguous(), semantic.contiguous()
    if not sims.numel():
        return (sims.new_zeros((), dtype=torch.float64), torch.zeros_like(sims) if sims_grad else None,
                torch.zeros_like(semantic) if semantic_grad else None)
    row_sums = torch.empty(sims.shape[0], dtype=torch.float64, device=sims.device)
    grad_sims = torch.empty_like(sims) if sims_grad else None
    grad_semantic = torch.empty_like(semantic) if semantic_grad else None
    sims_t = semantic_t = grad_sims_t = grad_semantic_t = None
    if public_code:
        sims_t, semantic_t = sims.t().contiguous(), semantic.t().contiguous()
        grad_sims_t = torch.empty_like(sims) if sims_grad else None
        grad_semantic_t = torch.empty_like(semantic) if semantic_grad else None
    kernels.for_tensor(sims).vsl_loss_ratio_sum(sims, sims_t, semantic, semantic_t, row_sums, grad_sims, grad_sims_t,
                                                grad_semantic, grad_semantic_t, tau, public_code, algorithm)
    if grad_sims_t is not None:
        grad_sims += grad_sims_t.t()
    if grad_semantic_t is not None:
        grad_semantic += grad_semantic_t.t()
    return row_sums.sum(), grad_sims, grad_semantic


@torch.library.custom_op("vsl_ext::vsl_loss_ratio_sum", mutates_args=())
def vsl_loss_ratio_sum_op(sims: Tensor, semantic: Tensor, tau: float, public_code: bool, semantic_grad: bool,
                          algorithm: int) -> Tuple[Tensor, Tensor, Tensor]:
    _checks.vsl_loss_ratio_sum(sims, semantic, tau, public_code, algorithm)
    total, grad_sims, grad_semantic = _ratio_sum_and_grads(sims, semantic, tau, public_code, True, semantic_grad,
                                                           algorithm)
    return total, grad_sims, grad_semantic if grad_semantic is not None else semantic.new_empty(0)


@vsl_loss_ratio_sum_op.register_fake
def _(sims, semantic, tau, public_code, semantic_grad, algorithm):
    _checks.vsl_loss_ratio_sum(sims, semantic, tau, public_code, algorithm, _checks.torch_check)
    grad_sims = sims.new_empty(sims.shape)
    grad_semantic = semantic.new_empty(semantic.shape) if semantic_grad else semantic.new_empty(0)
    return sims.new_empty((), dtype=torch.float64), grad_sims, grad_semantic


def _setup_context(ctx, inputs, output):
    sims, semantic, tau, public_code, semantic_grad, algorithm = inputs
    _, grad_sims, grad_semantic = output
    ctx.save_for_backward(sims, semantic, grad_sims, grad_semantic)
    ctx.args = (tau, public_code, semantic_grad, algorithm)
    ctx.mark_non_differentiable(grad_sims, grad_semantic)


def _backward(ctx, grad_sum, _grad_sims, _grad_semantic):
    sims, semantic, grad_sims, grad_semantic = ctx.saved_tensors
    tau, public_code, semantic_grad, algorithm = ctx.args
    want_sims, want_semantic = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if want_semantic and not semantic_grad:
        _, grad_sims, grad_semantic = vsl_loss_ratio_sum_op(sims, semantic, tau, public_code, True, algorithm)
    d_sims = grad_sims * grad_sum.to(grad_sims.dtype) if want_sims else None
    d_semantic = grad_semantic * grad_sum.to(grad_semantic.dtype) if want_semantic else None
    return d_sims, d_semantic, None, None, None, None


vsl_loss_ratio_sum_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerLoss(torch.autograd.Function):
    """``1 - ratio_sum / n^2`` in the inputs' dtype, by the op's kernels without the dispatcher
    (:mod:`vsl_ext.ops._eager`); prepared, checked inputs, and whether each needs its gradient."""

    @staticmethod
    def forward(ctx, sims, semantic, tau, public_code, algorithm, sims_grad, semantic_grad):
        total, grad_sims, grad_semantic = _ratio_sum_and_grads(sims, semantic, tau, public_code, sims_grad,
                                                               semantic_grad, algorithm)
        ctx.scale = -1.0 / float(sims.shape[0] * sims.shape[1])
        ctx.save_for_backward(grad_sims, grad_semantic)
        return total.mul(ctx.scale).add_(1.0).to(sims.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        grad_sims, grad_semantic = ctx.saved_tensors
        scale = grad_loss * ctx.scale

        def scaled(grad):
            if grad is None:
                return None
            factor = scale.to(grad.dtype)
            if grad.is_cpu and grad.numel() >= _TORCH_GRAIN_SIZE and grad.dtype in (torch.float32, torch.float64):
                # the same product on the package's pool: no torch OpenMP region (whose workers then
                # spin) between this backward and the next forward's kernel (docs/benchmarks.md).
                # Below torch's grain size torch's product runs on the calling thread anyway.
                return kernels.cpu.scale(grad, float(factor))
            return grad * factor
        return scaled(grad_sims), scaled(grad_semantic), None, None, None, None, None


def prepare(sims: Tensor, semantic_sims: Tensor, tau, variant: str, algorithm: str):
    """Validates the arguments shared by the single-process and row-sharded losses and returns
    ``(S, C, tau, algorithm code)`` in the computation dtype."""
    _validate.matrix("sims", sims)
    _validate.matrix("semantic_sims", semantic_sims)
    _validate.same_shape_and_device("semantic_sims", semantic_sims, "sims", sims)
    dtype = _validate.compute_dtype(sims, semantic_sims)
    tau = _validate.tau(tau, dtype)
    _validate.choice("variant", variant, VARIANTS)
    algo = _validate.algorithm(algorithm)
    return sims.to(dtype), semantic_sims.to(dtype), tau, algo


def ratio_sum(s: Tensor, c: Tensor, tau: float, public_code: bool, algo: int) -> Tensor:
    """Differentiable float64 ``sum_ij min(SR, CR) / max(SR, CR)`` over prepared row blocks."""
    total, _, _ = vsl_loss_ratio_sum_op(s, c, tau, public_code, torch.is_grad_enabled() and c.requires_grad, algo)
    return total


def vsl_loss(sims: Tensor, semantic_sims: Tensor, tau: float = 1e-3, variant: str = "row", *,
             algorithm: str = "auto") -> Tensor:
    """Visual Semantic Loss between an image-text similarity matrix and a semantic similarity matrix.

    Args:
        sims: (n, n) image-text similarities S (row i: image i against the batch's n texts).
        semantic_sims: (n, n) semantic similarities C between the batch's images (e.g. from
            :class:`vsl_ext.CaptionIndex`); receives gradients only if it requires grad.
        tau: sigmoid temperature of the ranks (> 0, default 1e-3 as in the paper).
        variant: "row" ranks each row of S and C (the paper's Eq. 5); "public-code" reproduces the
            published implementation, which ranks S[b, c] against column b of S (see
            :func:`vsl_ext.reference.public_code_vsl_loss`). Neither is multiplied by beta.
        algorithm: "auto", "dense" or "sorted", as for :func:`vsl_ext.sigmoid_rank`.

    Returns:
        Scalar loss in [0, 1) in the computation dtype (float32, or float64 if an input is float64).
        Infinite entries (e.g. -inf-masked padding captions) are ranked as
        :func:`vsl_ext.sigmoid_rank` ranks them (both variants), so the loss stays finite and no
        gradient reaches them; NaN in either matrix gives a NaN loss. tau must have a finite
        reciprocal in the computation dtype (ValueError naming tau otherwise).
    """
    _validate.square("sims", _validate.matrix("sims", sims))
    s, c, tau, algo = prepare(sims, semantic_sims, tau, variant, algorithm)
    public_code = variant == "public-code"
    if _eager.plain(s, c):
        _checks.vsl_loss_ratio_sum(s, c, tau, public_code, algo)  # the op's own checks
        grad = torch.is_grad_enabled()  # (forward() runs with it off)
        return _EagerLoss.apply(s, c, tau, public_code, algo, grad and s.requires_grad, grad and c.requires_grad)
    n = s.shape[0]
    total = ratio_sum(s, c, tau, public_code, algo)
    return (1.0 - total / float(n * n)).to(s.dtype)
