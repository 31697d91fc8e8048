"""``smooth_ap_loss``: Smooth-AP (Brown et al., "Smooth-AP: Smoothing the Path Towards Large-Scale Image
Retrieval", ECCV 2020) for any relevance, as one custom op whose forward also returns its gradient.

For sims S (queries x references, any (r, c)) and a bool relevance P of the same shape:

``AP_q = (1 / |P_q|) sum_{j in P_q} R_P(q, j) / R_all(q, j)``
``R_all(q, j) = 1 + sum_{k != j} sigmoid((S[q, k] - S[q, j]) / tau)``   (the descending row rank)
``R_P(q, j) = 1 + sum_{k != j, k in P_q} sigmoid((S[q, k] - S[q, j]) / tau)``   (the rank among P_q)
``loss = 1 - mean_q AP_q`` over the queries with at least one relevant reference.

Any number of relevant references per query, in any order; the caller decides whether a query counts
itself (the original code and pytorch-metric-learning put the diagonal in P).

How: algorithm "auto" and "dense" take the fused kernels (``csrc/smooth_ap_loss.h``, CPU and CUDA): only
the pairs (j in P_q, any k) are evaluated, O(|P_q| c) per query where the ranks of every entry would take
O(c^2), and the gradient is taken in the same call, pair by pair. "sorted" ranks a chunk of rows at a time
with the rank kernels' sorted algorithm (R_P: the rank among P, :mod:`vsl_ext.ops.sigmoid_rank_among`;
R_all = R_P + R_N - 1), which prunes saturated pairs: worth it only for queries with many relevant
references at a small tau. Memory is O(r c) (the gradient) plus O(c) per thread (CUDA: two (r, c)
coefficient buffers; sorted: a bounded chunk), never the reference's O(r c^2); the backward only scales
the gradient.

Registered op: ``vsl_ext::smooth_ap_loss(Tensor sims, Tensor relevant, Tensor tau, bool sims_grad, int
algorithm) -> (Tensor loss, Tensor grad_sims)``: for (..., r, c) sims and relevant, the loss of each (r, c)
matrix (shape ``...``, float64) and, if ``sims_grad``, d loss / d sims (else empty; the backward computes it
then); tau a 0-d float64 CPU tensor (:mod:`vsl_ext.ops._checks`). A matrix none of whose queries has a
relevant reference raises ValueError naming ``relevant``. Infinite similarities follow
:func:`vsl_ext.sigmoid_rank`'s rule (-inf ranks a reference below every finite one, without gradient);
NaN in a row makes the loss NaN.
"""
# No `from __future__ import annotations`: torch 2.4 infers the custom ops' schemas from the
# annotations and rejects string ones ("unsupported type Tensor").
from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _validate, kernels
from .._native import _C
from . import _checks
from .sigmoid_rank import batched, per_sample, scale_gradient
from .sigmoid_rank_among import ranks_among, ranks_among_backward, savable

ALGORITHMS = _C.ALGORITHMS

# The sorted algorithm's rows per kernel call: about this many elements of (rows, cols) temporaries at a time
# (a few MB), so a large batch holds its gradient and a bounded chunk, not a dozen (r, c) buffers.
CHUNK_ELEMENTS = 1 << 18


def _weights(relevant: Tensor) -> Tensor:
    """(..., r) float64 weight of each query's AP in its matrix's loss: 1 / (queries with a relevant
    reference), 0 for a query without one. Raises if a matrix has no such query."""
    valid = relevant.any(-1)  # (a sum would go through an int64 copy of relevant: 8 bytes per entry)
    counted = valid.sum(-1, keepdim=True)
    if counted.numel() and bool((counted == 0).any()):
        raise ValueError("vsl_ext::smooth_ap_loss: relevant marks no relevant reference in any row of a "
                         f"(queries, references) matrix of shape {tuple(relevant.shape)}; Smooth-AP needs at least one "
                         "query with a relevant reference (rows without one are skipped)")
    return torch.where(valid, 1.0 / counted.clamp(min=1).double(), 0.0)


def loss_and_grad(sims: Tensor, relevant: Tensor, tau: float, sims_grad: bool,
                  algorithm: int) -> Tuple[Tensor, Optional[Tensor]]:
    """The op's computation on checked inputs: (float64 loss of each (r, c) matrix, d loss / d sims or None).
    "auto" and "dense": the fused kernels; "sorted": the rank kernels' sorted algorithm."""
    sims, relevant = sims.contiguous(), relevant.contiguous()
    weights = _weights(relevant).reshape(-1)
    if algorithm == ALGORITHMS["sorted"]:
        row_sums, grad = _by_sorted_ranks(sims, relevant, weights, tau, sims_grad)
    else:
        cols = sims.shape[-1]
        row_sums = torch.zeros(weights.shape, dtype=torch.float64, device=sims.device)
        grad = torch.empty_like(sims) if sims_grad else None
        if sims.numel():
            kernels.for_tensor(sims).smooth_ap_loss(sims.view(-1, cols), relevant.view(-1, cols), weights, row_sums,
                                                    grad.view(-1, cols) if grad is not None else None, tau)
    # AP <= 1: a sum that rounds above 1 (a perfect ranking) gives 0, not -2e-16
    loss = (1.0 - row_sums.view(sims.shape[:-1]).sum(-1)).clamp_(min=0.0)
    return loss, grad


def _by_sorted_ranks(sims: Tensor, relevant: Tensor, weights: Tensor, tau: float,
                     sims_grad: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """Each row's weighted AP sum and d loss / d sims from the sorted algorithm's ranks, a chunk of rows at a
    time: R_P the rank among P, R_all = R_P + R_N - 1 with R_N the rank among the rest (the same pairs as the
    row rank; an all-relevant query gets R_all = R_P exactly)."""
    algorithm = ALGORITHMS["sorted"]
    cols = sims.shape[-1]
    grad = torch.zeros_like(sims) if sims_grad else None
    row_sums = torch.zeros(weights.shape, dtype=torch.float64, device=sims.device)
    if sims.numel():
        x_all, p_all = sims.view(-1, cols), relevant.view(-1, cols)
        g_all = grad.view(-1, cols) if grad is not None else None
        step = max(1, CHUNK_ELEMENTS // cols)
        for a in range(0, x_all.shape[0], step):
            x, p = x_all[a:a + step], p_all[a:a + step]
            w = weights[a:a + step, None] / p.sum(-1, keepdim=True).clamp(min=1)
            r_pos = ranks_among(x, p, tau, True, algorithm).double()
            r_neg = ranks_among(x, ~p, tau, True, algorithm).double()
            r64 = r_pos + r_neg - 1.0
            ratio = torch.where(p, r_pos / r64, 0.0)
            row_sums[a:a + step] = (ratio * w).sum(-1)
            if g_all is not None:
                # The pair coefficients of csrc/smooth_ap_loss.h: one term per pair, not the difference of the
                # two ranks' gradients (which would cancel two large terms in the input's precision).
                g_in = torch.where(p, w * (1.0 - r_neg) / (r64 * r64), 0.0).to(x.dtype)
                g_out = torch.where(p, w * ratio / r64, 0.0).to(x.dtype)
                g_all[a:a + step] = ranks_among_backward(x, p, g_in, tau, True, algorithm)
                g_all[a:a + step] += ranks_among_backward(x, ~p, g_out, tau, True, algorithm)
                g_all[a:a + step].masked_fill_(w == 0, 0.0)  # a skipped row's (0 * NaN would be NaN)
    return row_sums, grad


@torch.library.custom_op("vsl_ext::smooth_ap_loss", mutates_args=())
def smooth_ap_loss_op(sims: Tensor, relevant: Tensor, tau: Tensor, sims_grad: bool,
                      algorithm: int) -> Tuple[Tensor, Tensor]:
    tau_value = _checks.smooth_ap_loss(sims, relevant, tau, algorithm)
    loss, grad = loss_and_grad(sims, relevant, tau_value, sims_grad, algorithm)
    return loss, grad if grad is not None else sims.new_empty(0)


@smooth_ap_loss_op.register_fake
def _(sims, relevant, tau, sims_grad, algorithm):
    _checks.smooth_ap_loss(sims, relevant, tau, algorithm, _checks.torch_check)
    grad = sims.new_empty(sims.shape) if sims_grad else sims.new_empty(0)
    return sims.new_empty(sims.shape[:-2], dtype=torch.float64), grad


def _smooth_ap_vmap(info, in_dims, sims, relevant, tau, sims_grad, algorithm):
    args = (sims, relevant, tau, sims_grad, algorithm)
    if in_dims[2] is not None:
        return per_sample(smooth_ap_loss_op, info, in_dims, args)
    sims, relevant = batched((sims, relevant), in_dims[:2], info.batch_size)
    loss, grad = smooth_ap_loss_op(sims, relevant, tau, sims_grad, algorithm)
    return (loss, grad), (0, 0 if sims_grad else None)


torch.library.register_vmap(smooth_ap_loss_op, _smooth_ap_vmap)


def _setup_context(ctx, inputs, output):
    sims, relevant, tau, sims_grad, algorithm = inputs
    _, grad = output
    ctx.mark_non_differentiable(grad)
    ctx.set_materialize_grads(False)  # no (r, c) zeros for the gradient output's incoming gradient
    want = ctx.needs_input_grad[0]
    recompute = want and not sims_grad
    ctx.save_for_backward(grad if want and sims_grad else None, sims if recompute else None,
                          savable(relevant) if recompute else None, tau if recompute else None)
    ctx.algorithm = algorithm


def _backward(ctx, grad_loss, _grad_grad):
    grad, sims, relevant, tau = ctx.saved_tensors
    if not ctx.needs_input_grad[0] or grad_loss is None:  # None: no gradient reached the loss (no zeros made)
        return None, None, None, None, None
    if sims is not None:
        _, grad = smooth_ap_loss_op(sims, relevant, tau, True, ctx.algorithm)
    return scale_gradient(grad, grad_loss), None, None, None, None


smooth_ap_loss_op.register_autograd(_backward, setup_context=_setup_context)


class SmoothAPFunction(torch.autograd.Function):
    """The public function's autograd of :func:`smooth_ap_loss_op`, in the form ``torch.func`` transforms
    accept (see :mod:`vsl_ext.ops.sigmoid_rank`). No double backward."""

    generate_vmap_rule = True

    @staticmethod
    def forward(sims, relevant, tau, sims_grad, algorithm):
        return smooth_ap_loss_op(sims, relevant, tau, sims_grad, algorithm)

    setup_context = staticmethod(_setup_context)
    backward = staticmethod(_backward)


def smooth_ap_loss(sims: Tensor, relevant: Tensor, tau: float = 0.01, *, algorithm: str = "auto") -> Tensor:
    """Smooth-AP loss (Brown et al., ECCV 2020) for any relevance: ``1 - mean_q AP_q``.

    Args:
        sims: (q, r) similarities of q queries to r references (any rectangular shape; queries and
            references may be different sets, like pytorch-metric-learning's ``ref_emb``), float16,
            bfloat16 (computed in float32), float32 or float64, CPU or CUDA.
        relevant: bool (q, r) tensor on sims' device: ``relevant[i, j]`` says reference j is relevant to
            query i (any number per query, in any order). Whether a query counts itself is the
            caller's choice: the original code and pytorch-metric-learning put the diagonal in it.
        tau: sigmoid temperature (> 0; 0.01 as in the paper).
        algorithm: "auto" or "dense": the fused kernels, which evaluate only the pairs (relevant j, any
            k), O(|P_q| r) per query; "sorted": the rank kernels' sorted algorithm (ranks of every entry,
            skipping saturated pairs), for queries with many relevant references at a small tau.

    Returns:
        Scalar loss in [0, 1) in the computation dtype (float32, or float64 for float64 input), over the
        queries with at least one relevant reference (a query without one is skipped);
        differentiable with respect to sims (not relevant). ``AP_q = (1/|P_q|) sum_{j in P_q} R_P(q, j)
        / R_all(q, j)``, with R_all the descending sigmoid rank of S[q, j] in row q and R_P the same
        sum over the relevant references only (:mod:`vsl_ext.ops.smooth_ap_loss`). Memory O(q r): the
        gradient (and on CUDA two (q, r) coefficient buffers).
        Infinite entries follow :func:`vsl_ext.sigmoid_rank`'s rule (a -inf reference ranks below
        every finite one and takes no gradient); NaN gives a NaN loss.

    Raises:
        TypeError / ValueError naming the argument: sims not a non-empty 2-D float tensor, relevant not
        a bool tensor of sims' shape on its device, no query with a relevant reference (relevant), tau
        not a finite number > 0 with a finite reciprocal in the computation dtype, an unknown algorithm.
    """
    _validate.matrix("sims", sims)
    _validate.bool_mask("relevant", relevant, "sims", sims)
    dtype = _validate.compute_dtype(sims)
    tau = _validate.tau(tau, dtype)
    algo = _validate.algorithm(algorithm)
    s = sims.to(dtype)
    sims_grad = torch.is_grad_enabled() and s.requires_grad
    loss, _ = SmoothAPFunction.apply(s, relevant, _validate.tau_tensor(tau), sims_grad, algo)
    return loss.to(dtype)
