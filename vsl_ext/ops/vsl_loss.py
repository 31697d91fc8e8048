"""``vsl_loss``: the Visual Semantic Loss (Zhang et al., ICME 2023) as one fused custom op.

``L_vs = 1 - mean_ij min(SR_ij, CR_ij) / max(SR_ij, CR_ij)`` with SR = R(S), CR = R(C) (descending
sigmoid ranks, see :mod:`vsl_ext.ops.sigmoid_rank`). The fused op ranks one row of S and C at a time,
sums the row's ratios and, for the inputs that need one, takes the gradient of that sum through the
row's ranks right away (on CPU in the same pass over the row, which is still sorted), so the backward
only scales it: memory is O(n^2) instead of the reference's O(n^3), and nothing is recomputed. It
returns the float64 sum of the ratios; the loss is ``1 - sum / (r c)`` for (r, c) S (the row variant takes
any rectangular shape, the public-code variant square ones), and a row-sharded batch
(:mod:`vsl_ext.distributed`) adds the ranks' sums.

Registered op: ``vsl_ext::vsl_loss_ratio_sum(Tensor sims, Tensor semantic, Tensor tau, bool
public_code, bool semantic_grad, int algorithm) -> (Tensor ratio_sum, Tensor grad_sims, Tensor
grad_semantic)``: for (r, c) row blocks of S and C, ``sum_ij min(SR, CR) / max(SR, CR)`` (0-dim
float64) and its gradients with respect to sims and (empty unless ``semantic_grad``) semantic; both
are not differentiable. A (..., r, c) batch of blocks gives one sum per block (shape ``...``), in one
kernel call (``torch.func.vmap`` uses that). ``tau`` is a 0-d float64 CPU tensor
(:mod:`vsl_ext.ops._checks` says why). ``public_code`` ranks S against S^T and C against C^T with
the published code's clamp (square blocks only). Its backward scales the gradients by the incoming
one; a gradient the forward was not asked for (semantic's, without ``semantic_grad``) is computed
there, and only then are the inputs saved for backward.

The public function differentiates through :class:`RatioSumFunction` (an ``autograd.Function`` that
``torch.func`` transforms accept, calling the same op; see :mod:`vsl_ext.ops.sigmoid_rank`). In
plain eager code :func:`vsl_loss` calls the same kernels without the dispatcher
(:mod:`vsl_ext.ops._eager`).
"""
# No `from __future__ import annotations`: torch 2.4 infers the custom ops' schemas from the
# annotations and rejects string ones ("unsupported type Tensor").
from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _validate, kernels
from . import _checks, _eager
from .sigmoid_rank import batched, per_sample, scale_gradient

VARIANTS = ("row", "public-code")
_TORCH_GRAIN_SIZE = 32768   # at::internal::GRAIN_SIZE: torch runs smaller element-wise ops on one thread


def _ratio_sum_and_grads(sims: Tensor, semantic: Tensor, tau: float, public_code: bool, sims_grad: bool,
                         semantic_grad: bool, algorithm: int) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """The kernels' call of both paths, on checked (..., r, c) inputs: (float64 ratio sum of each (r, c)
    block, d sum / d sims or None, d sum / d semantic or None)."""
    sims, semantic = sims.contiguous(), semantic.contiguous()
    batch = sims.shape[:-2]
    if not sims.numel():
        return (sims.new_zeros(batch, dtype=torch.float64), torch.zeros_like(sims) if sims_grad else None,
                torch.zeros_like(semantic) if semantic_grad else None)
    cols = sims.shape[-1]
    row_sums = torch.empty(sims.shape[:-1], dtype=torch.float64, device=sims.device)
    grad_sims = torch.empty_like(sims) if sims_grad else None
    grad_semantic = torch.empty_like(semantic) if semantic_grad else None
    sims_t = semantic_t = grad_sims_t = grad_semantic_t = None
    if public_code:  # each block's transpose: row b of S is ranked against column b
        sims_t, semantic_t = sims.transpose(-1, -2).contiguous(), semantic.transpose(-1, -2).contiguous()
        grad_sims_t = torch.empty_like(sims) if sims_grad else None
        grad_semantic_t = torch.empty_like(semantic) if semantic_grad else None

    def rows_of(t: Optional[Tensor]) -> Optional[Tensor]:
        return None if t is None else t.view(-1, cols)

    kernels.for_tensor(sims).vsl_loss_ratio_sum(rows_of(sims), rows_of(sims_t), rows_of(semantic), rows_of(semantic_t),
                                                row_sums.view(-1), rows_of(grad_sims), rows_of(grad_sims_t),
                                                rows_of(grad_semantic), rows_of(grad_semantic_t), tau, public_code,
                                                algorithm)
    if grad_sims_t is not None:
        grad_sims += grad_sims_t.transpose(-1, -2)
    if grad_semantic_t is not None:
        grad_semantic += grad_semantic_t.transpose(-1, -2)
    return row_sums.sum(-1), grad_sims, grad_semantic


@torch.library.custom_op("vsl_ext::vsl_loss_ratio_sum", mutates_args=())
def vsl_loss_ratio_sum_op(sims: Tensor, semantic: Tensor, tau: Tensor, public_code: bool, semantic_grad: bool,
                          algorithm: int) -> Tuple[Tensor, Tensor, Tensor]:
    tau_value = _checks.vsl_loss_ratio_sum(sims, semantic, tau, public_code, algorithm)
    total, grad_sims, grad_semantic = _ratio_sum_and_grads(sims, semantic, tau_value, public_code, True,
                                                           semantic_grad, algorithm)
    return total, grad_sims, grad_semantic if grad_semantic is not None else semantic.new_empty(0)


@vsl_loss_ratio_sum_op.register_fake
def _(sims, semantic, tau, public_code, semantic_grad, algorithm):
    _checks.vsl_loss_ratio_sum(sims, semantic, tau, public_code, algorithm, _checks.torch_check)
    grad_sims = sims.new_empty(sims.shape)
    grad_semantic = semantic.new_empty(semantic.shape) if semantic_grad else semantic.new_empty(0)
    return sims.new_empty(sims.shape[:-2], dtype=torch.float64), grad_sims, grad_semantic


def _ratio_sum_vmap(info, in_dims, sims, semantic, tau, public_code, semantic_grad, algorithm):
    args = (sims, semantic, tau, public_code, semantic_grad, algorithm)
    if in_dims[2] is not None:
        return per_sample(vsl_loss_ratio_sum_op, info, in_dims, args)
    sims, semantic = batched((sims, semantic), in_dims[:2], info.batch_size)
    total, grad_sims, grad_semantic = vsl_loss_ratio_sum_op(sims, semantic, tau, public_code, semantic_grad, algorithm)
    return (total, grad_sims, grad_semantic), (0, 0, 0 if semantic_grad else None)


torch.library.register_vmap(vsl_loss_ratio_sum_op, _ratio_sum_vmap)


def _setup_context(ctx, inputs, output):
    sims, semantic, tau, public_code, semantic_grad, algorithm = inputs
    _, grad_sims, grad_semantic = output
    ctx.mark_non_differentiable(grad_sims, grad_semantic)
    ctx.set_materialize_grads(False)  # no (r, c) zeros for the gradient outputs' incoming gradients
    want_sims, want_semantic = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    recompute = want_semantic and not semantic_grad  # semantic's gradient was not asked of the forward
    # Only what the backward reads: an input that needs no gradient may be an inference tensor.
    ctx.save_for_backward(grad_sims if want_sims else None, grad_semantic if want_semantic and semantic_grad else None,
                          sims if recompute else None, semantic if recompute else None, tau if recompute else None)
    ctx.args = (public_code, algorithm)


def _backward(ctx, grad_sum, _grad_sims, _grad_semantic):
    grad_sims, grad_semantic, sims, semantic, tau = ctx.saved_tensors
    public_code, algorithm = ctx.args
    if grad_sum is None:  # no gradient reached the sums (no zeros made: set_materialize_grads(False))
        return None, None, None, None, None, None
    if sims is not None:
        _, grad_sims, grad_semantic = vsl_loss_ratio_sum_op(sims, semantic, tau, public_code, True, algorithm)
    d_sims = scale_gradient(grad_sims, grad_sum) if ctx.needs_input_grad[0] else None
    d_semantic = scale_gradient(grad_semantic, grad_sum) if ctx.needs_input_grad[1] else None
    return d_sims, d_semantic, None, None, None, None


vsl_loss_ratio_sum_op.register_autograd(_backward, setup_context=_setup_context)


class RatioSumFunction(torch.autograd.Function):
    """The public functions' autograd of :func:`vsl_loss_ratio_sum_op`: the op's formula in the form
    ``torch.func`` transforms accept (``setup_context``; the vmap rule is generated from the op's
    batching rule). No double backward: the op's gradients have no derivative."""

    generate_vmap_rule = True

    @staticmethod
    def forward(sims, semantic, tau, public_code, semantic_grad, algorithm):
        return vsl_loss_ratio_sum_op(sims, semantic, tau, public_code, semantic_grad, algorithm)

    setup_context = staticmethod(_setup_context)
    backward = staticmethod(_backward)


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
    def backward(ctx, grad_loss):
        grad_sims, grad_semantic = ctx.saved_tensors
        scale = grad_loss * ctx.scale

        def scaled(grad):
            if grad is None:
                return None
            if torch.is_grad_enabled():  # create_graph: a node whose derivative raises, not a constant
                return scale_gradient(grad, scale)
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


def ratio_sum(s: Tensor, c: Tensor, tau, public_code: bool, algo: int) -> Tensor:
    """Differentiable float64 ``sum_ij min(SR, CR) / max(SR, CR)`` over prepared row blocks (tau as
    :func:`vsl_ext._validate.tau` returns it)."""
    semantic_grad = torch.is_grad_enabled() and c.requires_grad
    total, _, _ = RatioSumFunction.apply(s, c, _validate.tau_tensor(tau), public_code, semantic_grad, algo)
    return total


def vsl_loss(sims: Tensor, semantic_sims: Tensor, tau: float = 1e-3, variant: str = "row", *,
             algorithm: str = "auto") -> Tensor:
    """Visual Semantic Loss between an image-text similarity matrix and a semantic similarity matrix.

    Args:
        sims: (n, n) image-text similarities S (row i: image i against the batch's n texts), or, for
            the row variant, any (r, c) matrix (e.g. N images x N*K captions).
        semantic_sims: semantic similarities C of sims' shape: (n, n) between the batch's images (e.g.
            from :class:`vsl_ext.CaptionIndex`), or (r, c) with C[i, j] the similarity of image i and
            caption j's image; receives gradients only if it requires grad.
        tau: sigmoid temperature of the ranks (> 0, default 1e-3 as in the paper).
        variant: "row" ranks each row of S and C (the paper's Eq. 5); "public-code" reproduces the
            published implementation, which ranks S[b, c] against column b of S (see
            :func:`vsl_ext.reference.public_code_vsl_loss`; square S only, since it ranks S against
            S^T). Neither is multiplied by beta. The loss is ``1 - sum_ij min/max / (r c)``.
        algorithm: "auto", "dense" or "sorted", as for :func:`vsl_ext.sigmoid_rank`.

    Returns:
        Scalar loss in [0, 1) in the computation dtype (float32, or float64 if an input is float64).
        Infinite entries (e.g. -inf-masked padding captions) are ranked as
        :func:`vsl_ext.sigmoid_rank` ranks them (both variants), so the loss stays finite and no
        gradient reaches them; NaN in either matrix gives a NaN loss. tau must have a finite
        reciprocal in the computation dtype (ValueError naming tau otherwise); a non-square sims with
        variant="public-code" is a ValueError naming sims.
    """
    _validate.matrix("sims", sims)
    s, c, tau, algo = prepare(sims, semantic_sims, tau, variant, algorithm)
    if variant == "public-code" and s.shape[0] != s.shape[1]:
        raise ValueError(f"sims must be a square (n, n) matrix for variant='public-code' (it ranks S against S^T), "
                         f"got shape {tuple(s.shape)}; the row variant takes any (r, c) shape")
    public_code = variant == "public-code"
    if type(tau) is float and _eager.plain(s, c):
        _checks.vsl_loss_ratio_sum(s, c, tau, public_code, algo)  # the op's own checks
        grad = torch.is_grad_enabled()  # (forward() runs with it off)
        return _EagerLoss.apply(s, c, tau, public_code, algo, grad and s.requires_grad, grad and c.requires_grad)
    rows, cols = s.shape  # symbolic sizes under tracing: no Python arithmetic that would specialise them
    total = ratio_sum(s, c, tau, public_code, algo)
    return (1.0 - total / (rows * cols)).to(s.dtype)
