"""``sigmoid_rank``: smoothed row-wise ranks, as a torch custom op with a fused backward.

``R[i, j] = 1 + sum_{k != j} sigmoid((M[i, k] - M[i, j]) / tau)``  (descending: 1 = largest)
``R[i, j] = 1 + sum_{k != j} sigmoid((M[i, j] - M[i, k]) / tau)``  (ascending:  1 = smallest)

Backward, with g = dL/dR and s = +1 (descending) or -1 (ascending), every row independent:
``dL/dM[i, l] = (s / tau) * sum_{j != l} sigmoid'((M[i, l] - M[i, j]) / tau) * (g[i, j] - g[i, l])``

Registered ops (schemas below): ``vsl_ext::sigmoid_rank(Tensor m, Tensor tau, bool descending, int
algorithm) -> Tensor`` and ``vsl_ext::sigmoid_rank_backward(Tensor m, Tensor grad, Tensor tau, bool
descending, bool public_code, int algorithm) -> Tensor``. ``m`` is (rows, cols) or a (..., rows, cols)
batch (rows of every matrix are ranked alike; a public-code rank transposes each matrix); ``tau`` is
a 0-d float64 CPU tensor (data a compiled graph carries, see :mod:`vsl_ext.ops._checks`);
``algorithm`` is a code of ``vsl_ext._C.ALGORITHMS``; ``public_code`` makes the backward one of the
public-code variant's rank (m ranked against m^T, the sigmoid's argument clamped to
+-``_C.PUBLIC_CODE_CLAMP``), which :mod:`vsl_ext.ops.vsl_loss` uses.

Transforms: each op has a batching rule (``torch.library.register_vmap``: a vmapped call is one
kernel call on the stacked batch) and the forward op an autograd formula. ``torch.func`` transforms
cannot use an op's ``register_autograd`` formula in torch <= 2.13 (pytorch/pytorch#168393), so the
public function differentiates through :class:`SigmoidRankFunction`, an ``autograd.Function`` with
``setup_context`` that calls the same ops; see docs/transforms.md.
"""
# No `from __future__ import annotations`: torch 2.4 infers the custom ops' schemas from the
# annotations and rejects string ones ("unsupported type Tensor").
from typing import Optional

import torch
from torch import Tensor

from .. import _validate, kernels
from . import _checks


def _rows(t: Tensor) -> Tensor:
    """A contiguous (..., rows, cols) tensor as its (rows of all matrices, cols) view."""
    return t.view(-1, t.shape[-1])


@torch.library.custom_op("vsl_ext::sigmoid_rank", mutates_args=())
def sigmoid_rank_op(m: Tensor, tau: Tensor, descending: bool, algorithm: int) -> Tensor:
    """(..., rows, cols) ranks of m's rows; float32/float64, any layout, CPU or CUDA."""
    tau_value = _checks.sigmoid_rank(m, tau, algorithm)
    m = m.contiguous()
    ranks = torch.empty_like(m, memory_format=torch.contiguous_format)
    if m.numel():
        kernels.for_tensor(m).sigmoid_rank_forward(_rows(m), None, _rows(ranks), tau_value, descending, False,
                                                   algorithm)
    return ranks


@sigmoid_rank_op.register_fake
def _(m, tau, descending, algorithm):
    _checks.sigmoid_rank(m, tau, algorithm, _checks.torch_check)
    return m.new_empty(m.shape)


@torch.library.custom_op("vsl_ext::sigmoid_rank_backward", mutates_args=())
def sigmoid_rank_backward_op(m: Tensor, grad: Tensor, tau: Tensor, descending: bool, public_code: bool,
                             algorithm: int) -> Tensor:
    """dL/dm for L = sum(grad * R(m)); R is the public-code variant's rank if ``public_code``."""
    tau_value = _checks.sigmoid_rank_backward(m, grad, tau, public_code, algorithm)
    m, grad = m.contiguous(), grad.contiguous()
    grad_m = torch.empty_like(m, memory_format=torch.contiguous_format)
    if not m.numel():
        return grad_m
    kernel = kernels.for_tensor(m)
    if not public_code:
        kernel.sigmoid_rank_backward(_rows(m), None, _rows(grad), _rows(grad_m), None, tau_value, descending, False,
                                     algorithm)
        return grad_m
    m_t = m.transpose(-1, -2).contiguous()  # each matrix's transpose: row b of m is ranked against column b
    grad_m_t = torch.empty_like(m_t)
    kernel.sigmoid_rank_backward(_rows(m), _rows(m_t), _rows(grad), _rows(grad_m), _rows(grad_m_t), tau_value,
                                 descending, True, algorithm)
    return grad_m + grad_m_t.transpose(-1, -2)


@sigmoid_rank_backward_op.register_fake
def _(m, grad, tau, descending, public_code, algorithm):
    _checks.sigmoid_rank_backward(m, grad, tau, public_code, algorithm, _checks.torch_check)
    return m.new_empty(m.shape)


# ------------------------------------------------------------------------------------ batching rules
def batched(args, in_dims, size: int):
    """The tensors of ``args`` whose in_dims is not None with their batch dimension first, the
    others broadcast to it (``expand``: no copy until the op makes them contiguous); non-tensors as
    they are."""
    out = []
    for arg, dim in zip(args, in_dims):
        if isinstance(arg, Tensor):
            arg = arg.movedim(dim, 0) if dim is not None else arg.expand(size, *arg.shape)
        out.append(arg)
    return out


def per_sample(op, info, in_dims, args):
    """Fallback of a batching rule when tau itself is batched (e.g. vmap over a tau schedule): one
    call per sample, each with its own tau, stacked."""
    results = []
    for i in range(info.batch_size):
        sample = [a.select(d, i) if isinstance(a, Tensor) and d is not None else a for a, d in zip(args, in_dims)]
        results.append(op(*sample))
    if isinstance(results[0], tuple):
        return tuple(torch.stack(parts) for parts in zip(*results)), tuple(0 for _ in results[0])
    return torch.stack(results), 0


def _sigmoid_rank_vmap(info, in_dims, m, tau, descending, algorithm):
    if in_dims[1] is not None:
        return per_sample(sigmoid_rank_op, info, in_dims, (m, tau, descending, algorithm))
    return sigmoid_rank_op(m.movedim(in_dims[0], 0), tau, descending, algorithm), 0


def _sigmoid_rank_backward_vmap(info, in_dims, m, grad, tau, descending, public_code, algorithm):
    args = (m, grad, tau, descending, public_code, algorithm)
    if in_dims[2] is not None:
        return per_sample(sigmoid_rank_backward_op, info, in_dims, args)
    m, grad = batched((m, grad), in_dims[:2], info.batch_size)
    return sigmoid_rank_backward_op(m, grad, tau, descending, public_code, algorithm), 0


torch.library.register_vmap(sigmoid_rank_op, _sigmoid_rank_vmap)
torch.library.register_vmap(sigmoid_rank_backward_op, _sigmoid_rank_backward_vmap)


# ------------------------------------------------------------------------------------------ autograd
def _setup_context(ctx, inputs, output):
    m, tau, descending, algorithm = inputs
    ctx.save_for_backward(m if ctx.needs_input_grad[0] else None, tau)
    ctx.args = (descending, algorithm)


class FirstOrderGradient(torch.autograd.Function):
    """Base of the ops' gradient nodes: the subclass's ``forward`` computes a gradient, and its own
    backward raises (the ops' gradients have no derivative, and a double backward, ``create_graph=True``
    or ``torch.func.hessian``, must not treat them as constants). An ``autograd.Function`` with
    ``setup_context`` is a form ``torch.func`` accepts: under ``torch.func.grad`` the saved inputs are
    tracked, and a registered op's own autograd node would raise pytorch/pytorch#168393's error."""

    generate_vmap_rule = True

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("vsl_ext: the ops' gradients have no second derivative (double backward is not supported)")


class _Scale(FirstOrderGradient):
    """A gradient (..., r, c) times the incoming gradient of each block's loss (...)."""

    @staticmethod
    def forward(grad: Tensor, grad_sum: Tensor, _tie: Optional[Tensor]) -> Tensor:
        return grad * grad_sum.to(grad.dtype)[..., None, None]


_FUNCTORCH_ACTIVE = getattr(torch._C, "_are_functorch_transforms_active", lambda: False)


def scale_gradient(grad: Tensor, grad_sum: Tensor) -> Tensor:
    """``grad * grad_sum`` per block, as a gradient node. The gradient was computed by the forward, so
    neither factor is connected to the graph: under ``create_graph`` (grad mode on in a backward) the
    product is tied to a marker that requires grad, so that a backward reaching it raises
    (:class:`FirstOrderGradient`) instead of treating the gradient as a constant."""
    plain = not _FUNCTORCH_ACTIVE()  # inside torch.func's transforms a new leaf cannot require grad
    tie = grad_sum.new_zeros(()).requires_grad_() if torch.is_grad_enabled() and plain else None
    return _Scale.apply(grad, grad_sum, tie)


class _RankBackward(FirstOrderGradient):
    """:func:`sigmoid_rank_backward_op` as the backward calls it."""

    @staticmethod
    def forward(m, grad, tau, descending, public_code, algorithm):
        return sigmoid_rank_backward_op(m, grad, tau, descending, public_code, algorithm)


def _backward(ctx, grad):
    m, tau = ctx.saved_tensors
    descending, algorithm = ctx.args
    grad_m = _RankBackward.apply(m, grad, tau, descending, False, algorithm) if ctx.needs_input_grad[0] else None
    return grad_m, None, None, None


sigmoid_rank_op.register_autograd(_backward, setup_context=_setup_context)


class SigmoidRankFunction(torch.autograd.Function):
    """The public function's autograd: the same formula as the op's (``_backward``), in the form
    ``torch.func`` transforms accept (``setup_context``; the vmap rule is generated from the ops'
    batching rules). No double backward: the backward op has no derivative."""

    generate_vmap_rule = True

    @staticmethod
    def forward(m, tau, descending, algorithm):
        return sigmoid_rank_op(m, tau, descending, algorithm)

    setup_context = staticmethod(_setup_context)
    backward = staticmethod(_backward)


def sigmoid_rank(M: Tensor, tau: float = 1e-3, descending: bool = True, *, algorithm: str = "auto",
                 among: Optional[Tensor] = None) -> Tensor:
    """Smoothed rank of every entry of M within its row (or within a subset of it: ``among``).

    Args:
        M: (r, c) float tensor on CPU or CUDA, any layout. float16/bfloat16 are computed in float32.
        tau: sigmoid temperature (> 0); ranks approach hard ranks as tau -> 0.
        descending: True gives rank 1 to the largest entry of a row, False to the smallest.
        algorithm: "auto", "dense" (all c^2 pairs per row) or "sorted" (sort each row and evaluate
            sigmoids only where |difference| <= 30 tau, 50 tau in float64; exact to rounding).
            "auto" takes "sorted" from 64 columns on CPU; on CUDA from 2,048 columns when at most
            half of a row's pairs fall inside the window (docs/kernels.md).
        among: None, or a bool (r, c) tensor on M's device: rank every entry (in the subset or not)
            among the references ``k`` with ``among[i, k]`` only, ``R[i, j] = 1 + sum_{k != j,
            among[i, k]} sigmoid(+-(M[i, k] - M[i, j]) / tau)`` (Smooth-AP's rank among the positives,
            Brown et al., ECCV 2020); O(r c) memory, both algorithms (:mod:`vsl_ext.ops.sigmoid_rank_among`).

    Returns:
        (r, c) ranks in [1, c], float32 (float64 for float64 input); differentiable w.r.t. M.
        Infinite entries (a -inf mask, a float16 overflow to +inf) follow the formula: equal
        infinities tie (1/2), an infinity against another value is saturated (0 or 1), ranks stay
        finite and the gradient at an infinite entry is 0. A NaN makes its row's ranks NaN.

    Raises:
        TypeError / ValueError naming the argument: M not a non-empty 2-D float tensor, tau not a
        finite number > 0 whose reciprocal is finite in the computation dtype (tau >= 2.9e-39 for
        float32), descending not a bool, an unknown algorithm, among not a bool tensor of M's shape
        on M's device.
    """
    _validate.matrix("M", M)
    dtype = _validate.compute_dtype(M)
    tau = _validate.tau(tau, dtype)
    if not isinstance(descending, bool):
        raise TypeError(f"descending must be a bool, got {type(descending).__name__}")
    if among is not None:
        from .sigmoid_rank_among import SigmoidRankAmongFunction  # it builds on this module
        _validate.bool_mask("among", among, "M", M)
        return SigmoidRankAmongFunction.apply(M.to(dtype), among, _validate.tau_tensor(tau), descending,
                                              _validate.algorithm(algorithm))
    return SigmoidRankFunction.apply(M.to(dtype), _validate.tau_tensor(tau), descending,
                                     _validate.algorithm(algorithm))
