"""CPU kernels of the ops (see :mod:`vsl_ext.kernels`): native calls into ``csrc/*_cpu*`` with up to
``torch.get_num_threads()`` threads (fewer for small calls, ``csrc/cpu_parallel.h``). The native code
picks dense or sorted per ``algorithm`` (csrc/vsl_constants.h) and takes rows with NaN densely."""
from typing import Optional

import torch
from torch import Tensor

from .._native import _C


def _ptr(t: Optional[Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


def sigmoid_rank_forward(ranked: Tensor, compared: Optional[Tensor], ranks: Tensor, tau: float, descending: bool,
                         public_code_clamp: bool, algorithm: int) -> None:
    rows, cols = ranked.shape
    _C.sigmoid_rank_forward_cpu(ranked.dtype == torch.float64, ranked.data_ptr(), _ptr(compared), ranks.data_ptr(),
                                rows, cols, tau, descending, public_code_clamp, algorithm, torch.get_num_threads())


def sigmoid_rank_backward(ranked: Tensor, compared: Optional[Tensor], grad_ranks: Tensor, grad_ranked: Tensor,
                          grad_compared: Optional[Tensor], tau: float, descending: bool, public_code_clamp: bool,
                          algorithm: int) -> None:
    rows, cols = ranked.shape
    _C.sigmoid_rank_backward_cpu(ranked.dtype == torch.float64, ranked.data_ptr(), _ptr(compared),
                                 grad_ranks.data_ptr(), grad_ranked.data_ptr(), _ptr(grad_compared), rows, cols, tau,
                                 descending, public_code_clamp, algorithm, torch.get_num_threads())


def vsl_loss_ratio_sum(sims: Tensor, sims_compared: Optional[Tensor], semantic: Tensor,
                       semantic_compared: Optional[Tensor], row_sums: Tensor, grad_sims: Optional[Tensor],
                       grad_sims_compared: Optional[Tensor], grad_semantic: Optional[Tensor],
                       grad_semantic_compared: Optional[Tensor], tau: float, public_code_clamp: bool,
                       algorithm: int) -> None:
    """One native call: the ratio sums and the asked-for gradients through the ranks, row by row."""
    rows, cols = sims.shape
    _C.vsl_loss_ratio_sum_cpu(sims.dtype == torch.float64, sims.data_ptr(), _ptr(sims_compared), semantic.data_ptr(),
                              _ptr(semantic_compared), 0, 0, row_sums.data_ptr(), rows, cols, tau, public_code_clamp,
                              algorithm, torch.get_num_threads(), _ptr(grad_sims), _ptr(grad_sims_compared),
                              _ptr(grad_semantic), _ptr(grad_semantic_compared))


def smooth_ap_loss(sims: Tensor, relevant: Tensor, weights: Tensor, row_sums: Tensor, grad_sims: Optional[Tensor],
                   tau: float) -> None:
    """One native call: each row's weighted AP sum and, where grad_sims is given, d loss / d sims
    (csrc/smooth_ap_loss.h)."""
    rows, cols = sims.shape
    _C.smooth_ap_loss_cpu(sims.dtype == torch.float64, sims.data_ptr(), relevant.data_ptr(), weights.data_ptr(),
                          row_sums.data_ptr(), _ptr(grad_sims), rows, cols, tau, torch.get_num_threads())


def scale(t: Tensor, factor: float) -> Tensor:
    """``t * factor`` (a new contiguous tensor of t's dtype; float32: factor rounded to float32, as
    torch's product with a 0-d tensor rounds it) on the package's pool (csrc/vsl_loss.h: scale_cpu),
    so that no torch OpenMP region runs between two kernel calls."""
    t = t.contiguous()
    out = torch.empty_like(t)
    _C.scale_cpu(t.dtype == torch.float64, t.data_ptr(), out.data_ptr(), t.numel(), factor, torch.get_num_threads())
    return out
