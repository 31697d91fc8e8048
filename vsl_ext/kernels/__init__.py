"""The ops' kernels per device: each module turns checked tensors into native calls. Private: like
the native functions they call, they trust their arguments; only :mod:`vsl_ext.ops` calls them,
after its checks.

The registered ops (:mod:`vsl_ext.ops`) check their inputs and allocate the outputs, then call the
same-named function of the module :func:`for_tensor` picks: :mod:`vsl_ext.kernels.cpu` or
:mod:`vsl_ext.kernels.cuda`. Both modules offer

* ``sigmoid_rank_forward(ranked, compared, ranks, tau, descending, public_code_clamp, algorithm)``
* ``sigmoid_rank_backward(ranked, compared, grad_ranks, grad_ranked, grad_compared, tau, descending,
  public_code_clamp, algorithm)``
* ``vsl_loss_ratio_sum(sims, sims_compared, semantic, semantic_compared, row_sums, grad_sims,
  grad_sims_compared, grad_semantic, grad_semantic_compared, tau, public_code_clamp, algorithm)``:
  ``row_sums[i] = sum_j min(SR, CR) / max(SR, CR)`` and, for each gradient output that is not None,
  the gradient of ``sum(row_sums)`` with respect to sims (semantic) through its ranks; with
  ``sims_compared`` (the public-code variant's S^T) its part with respect to sims_compared, in
  sims_compared's layout, goes to ``grad_sims_compared``
* ``smooth_ap_loss(sims, relevant, weights, row_sums, grad_sims, tau)``: ``row_sums[q] = weights[q] *
  sum_{j in P_q} R_P / R_all`` (float64) and, if grad_sims is not None, d (1 - sum(row_sums)) / d sims;
  relevant a bool tensor of sims' shape, weights float64 (rows,)

on contiguous, non-empty (rows, cols) tensors of one dtype (float32 or float64) on one device,
``compared`` None for a row rank (see ``csrc/sigmoid_rank.h`` and ``csrc/vsl_loss.h``).
"""
from types import ModuleType

import torch

from . import cpu, cuda


def for_tensor(t: torch.Tensor) -> ModuleType:
    """The kernel module of the device ``t`` is on (CPU or CUDA; the ops have checked which)."""
    return cuda if t.is_cuda else cpu
