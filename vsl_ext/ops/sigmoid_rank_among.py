"""``sigmoid_rank(M, among=mask)``: smoothed ranks within a subset of each row.

``R[i, j] = 1 + sum_{k != j, among[i, k]} sigmoid((M[i, k] - M[i, j]) / tau)``  (descending)
``R[i, j] = 1 + sum_{k != j, among[i, k]} sigmoid((M[i, j] - M[i, k]) / tau)``  (ascending)

for every j, in the subset or not: the rank entry j would have among the subset's references. Smooth-AP's
rank among the positives (:mod:`vsl_ext.ops.smooth_ap_loss`) is this rank with ``among`` the relevance.

How: a reference left out of the subset is an infinity that no finite value ever ties with, which is what
the rank kernels' rule for infinities makes of it (``csrc/sigmoid_math.h``): descending, a reference at
-inf contributes ``sigmoid(-inf) = 0`` to every finite entry's rank and no gradient. So the op ranks M
against the compared rows ``M.masked_fill(~among, -inf)`` (+inf ascending) with the kernels' rank against
compared rows (the one the public-code VSL uses: both algorithms, CPU and CUDA, forward and backward), and
takes back the one thing the fill changes: an entry of M that is itself that infinity would tie (1/2)
with each filled reference, so ``1/2`` per reference left out (other than j) is subtracted there. Memory:
the compared rows, O(r c); the gradient with respect to M is the ranked side's plus the compared side's
on the subset.

Registered ops: ``vsl_ext::sigmoid_rank_among(Tensor m, Tensor among, Tensor tau, bool descending, int
algorithm) -> Tensor`` and ``vsl_ext::sigmoid_rank_among_backward(Tensor m, Tensor among, Tensor grad,
Tensor tau, bool descending, int algorithm) -> Tensor`` (dL/dm for L = sum(grad * R)); ``among`` is a
bool tensor of m's shape on m's device, the rest as for :mod:`vsl_ext.ops.sigmoid_rank` ((..., r, c)
batches, tau a 0-d float64 CPU tensor, vmap rules, an autograd formula and a ``torch.func``-ready
``autograd.Function``).
"""
# No `from __future__ import annotations`: torch 2.4 infers the custom ops' schemas from the
# annotations and rejects string ones ("unsupported type Tensor").
import math

import torch
from torch import Tensor

from .. import kernels
from . import _checks
from .sigmoid_rank import FirstOrderGradient, batched, per_sample


def _rows(t: Tensor) -> Tensor:
    return t.view(-1, t.shape[-1])


def _fill(descending: bool) -> float:
    return -math.inf if descending else math.inf


def compared_rows(m: Tensor, among: Tensor, descending: bool) -> Tensor:
    """m with the references outside the subset replaced by the infinity that ranks them out."""
    return m.masked_fill(~among, _fill(descending))


def untie(ranks: Tensor, m: Tensor, among: Tensor, descending: bool) -> Tensor:
    """Removes, in place, the 1/2 each filled reference k != j added to an entry of m equal to the fill."""
    left_out = (~among).sum(-1, keepdim=True) - (~among).to(torch.int64)  # references k != j outside the subset
    ranks -= torch.where(m == _fill(descending), left_out.to(ranks.dtype) * 0.5, 0.0)
    return ranks


def ranks_among(m: Tensor, among: Tensor, tau: float, descending: bool, algorithm: int) -> Tensor:
    """The ranks of checked, contiguous (..., r, c) m within ``among`` (the kernels' call)."""
    ranks = torch.empty_like(m)
    if m.numel():
        compared = compared_rows(m, among, descending)
        kernels.for_tensor(m).sigmoid_rank_forward(_rows(m), _rows(compared), _rows(ranks), tau, descending, False,
                                                   algorithm)
        untie(ranks, m, among, descending)
    return ranks


def ranks_among_backward(m: Tensor, among: Tensor, grad: Tensor, tau: float, descending: bool,
                         algorithm: int) -> Tensor:
    """dL/dm for L = sum(grad * R) on checked, contiguous (..., r, c) tensors."""
    grad_m = torch.empty_like(m)
    if not m.numel():
        return grad_m
    compared = compared_rows(m, among, descending)
    grad_compared = torch.empty_like(m)
    kernels.for_tensor(m).sigmoid_rank_backward(_rows(m), _rows(compared), _rows(grad), _rows(grad_m),
                                                _rows(grad_compared), tau, descending, False, algorithm)
    return grad_m.add_(grad_compared.masked_fill_(~among, 0.0))


@torch.library.custom_op("vsl_ext::sigmoid_rank_among", mutates_args=())
def sigmoid_rank_among_op(m: Tensor, among: Tensor, tau: Tensor, descending: bool, algorithm: int) -> Tensor:
    """(..., rows, cols) ranks of m's rows within ``among``; float32/float64, any layout, CPU or CUDA."""
    tau_value = _checks.sigmoid_rank_among(m, among, tau, algorithm)
    return ranks_among(m.contiguous(), among.contiguous(), tau_value, descending, algorithm)


@sigmoid_rank_among_op.register_fake
def _(m, among, tau, descending, algorithm):
    _checks.sigmoid_rank_among(m, among, tau, algorithm, _checks.torch_check)
    return m.new_empty(m.shape)


@torch.library.custom_op("vsl_ext::sigmoid_rank_among_backward", mutates_args=())
def sigmoid_rank_among_backward_op(m: Tensor, among: Tensor, grad: Tensor, tau: Tensor, descending: bool,
                                   algorithm: int) -> Tensor:
    """dL/dm for L = sum(grad * R), R the ranks of m within ``among``."""
    tau_value = _checks.sigmoid_rank_among_backward(m, among, grad, tau, algorithm)
    return ranks_among_backward(m.contiguous(), among.contiguous(), grad.contiguous(), tau_value, descending,
                                algorithm)


@sigmoid_rank_among_backward_op.register_fake
def _(m, among, grad, tau, descending, algorithm):
    _checks.sigmoid_rank_among_backward(m, among, grad, tau, algorithm, _checks.torch_check)
    return m.new_empty(m.shape)


def _among_vmap(info, in_dims, m, among, tau, descending, algorithm):
    args = (m, among, tau, descending, algorithm)
    if in_dims[2] is not None:
        return per_sample(sigmoid_rank_among_op, info, in_dims, args)
    m, among = batched((m, among), in_dims[:2], info.batch_size)
    return sigmoid_rank_among_op(m, among, tau, descending, algorithm), 0


def _among_backward_vmap(info, in_dims, m, among, grad, tau, descending, algorithm):
    args = (m, among, grad, tau, descending, algorithm)
    if in_dims[3] is not None:
        return per_sample(sigmoid_rank_among_backward_op, info, in_dims, args)
    m, among, grad = batched((m, among, grad), in_dims[:3], info.batch_size)
    return sigmoid_rank_among_backward_op(m, among, grad, tau, descending, algorithm), 0


torch.library.register_vmap(sigmoid_rank_among_op, _among_vmap)
torch.library.register_vmap(sigmoid_rank_among_backward_op, _among_backward_vmap)


def savable(mask: Tensor) -> Tensor:
    """A mask autograd may save: one made under torch.inference_mode (a cached relevance) is copied (a
    bool (r, c) copy), since inference tensors cannot be saved for backward."""
    if torch.compiler.is_compiling():  # is_inference() cannot be traced; a compiled graph saves its own values
        return mask
    return mask.clone() if mask.is_inference() else mask


def _setup_context(ctx, inputs, output):
    m, among, tau, descending, algorithm = inputs
    want = ctx.needs_input_grad[0]
    ctx.save_for_backward(m if want else None, savable(among) if want else None, tau)
    ctx.args = (descending, algorithm)


class _AmongBackward(FirstOrderGradient):
    """:func:`sigmoid_rank_among_backward_op` as the backward calls it."""

    @staticmethod
    def forward(m, among, grad, tau, descending, algorithm):
        return sigmoid_rank_among_backward_op(m, among, grad, tau, descending, algorithm)


def _backward(ctx, grad):
    m, among, tau = ctx.saved_tensors
    descending, algorithm = ctx.args
    grad_m = None
    if ctx.needs_input_grad[0]:
        grad_m = _AmongBackward.apply(m, among, grad, tau, descending, algorithm)
    return grad_m, None, None, None, None


sigmoid_rank_among_op.register_autograd(_backward, setup_context=_setup_context)


class SigmoidRankAmongFunction(torch.autograd.Function):
    """The public function's autograd of :func:`sigmoid_rank_among_op` (as
    :class:`vsl_ext.ops.sigmoid_rank.SigmoidRankFunction`)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(m, among, tau, descending, algorithm):
        return sigmoid_rank_among_op(m, among, tau, descending, algorithm)

    setup_context = staticmethod(_setup_context)
    backward = staticmethod(_backward)
