"""``vsl_loss``: the Visual Semantic Loss (Zhang et al., ICME 2023) as one fused custom op.

``L_vs = 1 - mean_ij min(SR_ij, CR_ij) / max(SR_ij, CR_ij)`` with SR = R(S), CR = R(C) (descending
sigmoid ranks, see :mod:`vsl_ext.ops.sigmoid_rank`). The fused op ranks one row of S and C at a time
and keeps only the gradients with respect to SR and CR (n x n each), so memory is O(n^2) instead of
the reference's O(n^3). It returns the float64 sum of the ratios; the loss is ``1 - sum / n^2``, and
a row-sharded batch (:mod:`vsl_ext.distributed`) adds the ranks' sums.

Registered op: ``vsl_ext::vsl_loss_ratio_sum(Tensor sims, Tensor semantic, float tau, bool
public_code, bool semantic_grad, int algorithm) -> (Tensor ratio_sum, Tensor grad_sr, Tensor
grad_cr)``: for (r, c) row blocks of S and C, ``sum_ij min(SR, CR) / max(SR, CR)`` (0-dim float64),
``d sum / dSR`` and ``d sum / dCR`` (empty unless ``semantic_grad``; both are not differentiable).
``public_code`` ranks S against S^T and C against C^T with the published code's clamp (square
blocks only). Its backward takes the gradients through the ranks with
``vsl_ext::sigmoid_rank_backward``.
"""
# No `from __future__ import annotations`: torch 2.4 infers the custom ops' schemas from the
# annotations and rejects string ones ("unsupported type Tensor").
from typing import Tuple

import torch
from torch import Tensor

from .. import _validate, kernels
from . import _checks
from .sigmoid_rank import sigmoid_rank_backward_op

VARIANTS = ("row", "public-code")


@torch.library.custom_op("vsl_ext::vsl_loss_ratio_sum", mutates_args=())
def vsl_loss_ratio_sum_op(sims: Tensor, semantic: Tensor, tau: float, public_code: bool, semantic_grad: bool,
                          algorithm: int) -> Tuple[Tensor, Tensor, Tensor]:
    _checks.vsl_loss_ratio_sum(sims, semantic, tau, public_code, algorithm)
    sims, semantic = sims.contiguous(), semantic.contiguous()
    grad_sr = torch.empty_like(sims)
    grad_cr = torch.empty_like(semantic) if semantic_grad else semantic.new_empty(0)
    if not sims.numel():
        return sims.new_zeros((), dtype=torch.float64), grad_sr, grad_cr
    row_sums = torch.empty(sims.shape[0], dtype=torch.float64, device=sims.device)
    sims_t = sims.t().contiguous() if public_code else None
    semantic_t = semantic.t().contiguous() if public_code else None
    kernels.for_tensor(sims).vsl_loss_ratio_sum(sims, sims_t, semantic, semantic_t, grad_sr,
                                                grad_cr if semantic_grad else None, row_sums, tau, public_code,
                                                algorithm)
    return row_sums.sum(), grad_sr, grad_cr


@vsl_loss_ratio_sum_op.register_fake
def _(sims, semantic, tau, public_code, semantic_grad, algorithm):
    _checks.vsl_loss_ratio_sum(sims, semantic, tau, public_code, algorithm, _checks.torch_check)
    grad_cr = semantic.new_empty(semantic.shape) if semantic_grad else semantic.new_empty(0)
    return sims.new_empty((), dtype=torch.float64), sims.new_empty(sims.shape), grad_cr


def _setup_context(ctx, inputs, output):
    sims, semantic, tau, public_code, semantic_grad, algorithm = inputs
    _, grad_sr, grad_cr = output
    ctx.save_for_backward(sims, semantic, grad_sr, grad_cr)
    ctx.args = (tau, public_code, semantic_grad, algorithm)
    ctx.mark_non_differentiable(grad_sr, grad_cr)


def _backward(ctx, grad_sum, _grad_sr, _grad_cr):
    sims, semantic, grad_sr, grad_cr = ctx.saved_tensors
    tau, public_code, semantic_grad, algorithm = ctx.args

    def through_rank(m, g):
        return sigmoid_rank_backward_op(m, g, tau, True, public_code, algorithm) * grad_sum.to(m.dtype)

    d_semantic = through_rank(semantic, grad_cr) if semantic_grad else None
    return through_rank(sims, grad_sr), d_semantic, None, None, None, None


vsl_loss_ratio_sum_op.register_autograd(_backward, setup_context=_setup_context)


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


def ratio_sum(s: Tensor, c: Tensor, tau: float, public_code: bool, semantic_grad: bool, algo: int) -> Tensor:
    """Differentiable float64 ``sum_ij min(SR, CR) / max(SR, CR)`` over prepared row blocks."""
    total, _, _ = vsl_loss_ratio_sum_op(s, c, tau, public_code, semantic_grad, algo)
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
    n = s.shape[0]
    total = ratio_sum(s, c, tau, variant == "public-code", semantic_sims.requires_grad, algo)
    return (1.0 - total / float(n * n)).to(s.dtype)
