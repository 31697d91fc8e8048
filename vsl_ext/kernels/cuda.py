"""CUDA kernels of the ops (see :mod:`vsl_ext.kernels`), and the choice between CUDA's two algorithms.

dense : one thread block per row, every pair (``csrc/sigmoid_rank_cuda.cu``; fused VSL rows in
        ``csrc/vsl_loss_cuda.cu``).
sorted: the CUDA implementation of the sorted algorithm. Sorting each row once turns every sum of the
        ranks and their gradients into a count by position plus the terms inside the saturation
        window: with the row sorted ascending, a value farther than ``hw = 30 tau`` (float32; 50 tau
        in float64, ``_C.SATURATION``) from the centre contributes exactly 1 or 0 to a rank sum and 0 to
        a gradient sum after rounding (``sigmoid(-30) = 9.4e-14``), so only the values in
        ``[u - hw, u + hw]``, found by binary search, are evaluated. The result differs from the
        dense one by at most ``n * 9.4e-14`` per rank (float32). Here the rows are sorted with
        ``torch.sort`` and the permutations mapped with ``gather`` and ``scatter``; the native code
        (``csrc/sigmoid_rank_sorted_cuda.cu``) runs one thread per element. Extra memory: a few
        (rows, cols) tensors (sorted values, int64 permutations).

``algorithm="auto"`` takes the sorted algorithm for a matrix of at least ``SORTED_FROM_COLS``
columns whose sampled rows put at most ``SORTED_MAX_WINDOW_FRACTION`` of their pairs inside the
window (:func:`window_fraction`), and the dense one otherwise; a matrix with NaN always takes the
dense one, which propagates NaN like the reference. Infinities may be on either path:
``torch.sort`` puts them at the ends of a row, outside every finite centre's window, where they are
counted by position; an infinite centre's window is the run of values equal to it, all ties (1/2 to
a rank, 0 to a gradient; ``rank_diff`` / ``grad_diff`` in ``csrc/sigmoid_math.h``).
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._native import _C, cuda_launch_args

ALGORITHMS = _C.ALGORITHMS
SORTED_FROM_COLS = _C.CUDA_SORTED_FROM_COLS
SORTED_MAX_WINDOW_FRACTION = _C.CUDA_SORTED_MAX_WINDOW_FRACTION
_SATURATION = _C.SATURATION
_SUMS = _C.SORTED_SUMS


def launch_args(device: torch.device) -> tuple:
    """(device index, current stream) of a launch on ``device``."""
    return cuda_launch_args(device)


def _ptr(t: Optional[Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


def window_fraction(ranked: Tensor, compared: Optional[Tensor], tau: float, sample_rows: int = 16) -> Tensor:
    """Mean fraction of a row's values inside the saturation window of each entry, over up to
    ``sample_rows`` evenly spaced rows: the share of the dense algorithm's pairs the sorted one
    evaluates. 0-dim float64 tensor on the input's device (no sync)."""
    rows, cols = ranked.shape
    idx = torch.linspace(0, rows - 1, min(rows, sample_rows), device=ranked.device).round().long()
    centres = ranked[idx]
    values, _ = torch.sort((ranked if compared is None else compared)[idx], dim=1)
    hw = _SATURATION["float64" if ranked.dtype == torch.float64 else "float32"] * tau
    lo = torch.searchsorted(values, centres - hw)
    hi = torch.searchsorted(values, centres + hw, right=True)
    return (hi - lo).double().mean() / cols


def takes_sorted(algorithm: int, ranked: Tensor, compared: Optional[Tensor], tau: float) -> bool:
    """Whether ranking ``ranked`` against ``compared`` (None: its own rows) takes the sorted
    algorithm (see the module's docstring). One device sync unless the answer is "dense" by the
    arguments alone."""
    if algorithm == ALGORITHMS["dense"]:
        return False
    auto = algorithm == ALGORITHMS["auto"]
    if auto and ranked.shape[1] < SORTED_FROM_COLS:
        return False
    checks = [~torch.isnan(t).any() for t in (ranked, compared) if t is not None]
    if auto:
        checks.append(window_fraction(ranked, compared, tau) <= SORTED_MAX_WINDOW_FRACTION)
    return bool(torch.stack(checks).all())


# ---------------------------------------------------------------------------------------------- ops
def sigmoid_rank_forward(ranked: Tensor, compared: Optional[Tensor], ranks: Tensor, tau: float, descending: bool,
                         public_code_clamp: bool, algorithm: int, use_sorted: Optional[bool] = None) -> None:
    """``use_sorted``: the caller's choice of algorithm, if made already (None: choose here)."""
    launch = launch_args(ranked.device)  # first: says why CUDA cannot launch, if it cannot
    if use_sorted is None:
        use_sorted = takes_sorted(algorithm, ranked, compared, tau)
    if use_sorted:  # the public-code clamp lies beyond the window (csrc/vsl_constants.h)
        return _sorted_forward(ranked, compared, ranks, tau, descending)
    rows, cols = ranked.shape
    _C.sigmoid_rank_forward_cuda(ranked.dtype == torch.float64, ranked.data_ptr(), _ptr(compared), ranks.data_ptr(),
                                 rows, cols, tau, descending, public_code_clamp, *launch)


def sigmoid_rank_backward(ranked: Tensor, compared: Optional[Tensor], grad_ranks: Tensor, grad_ranked: Tensor,
                          grad_compared: Optional[Tensor], tau: float, descending: bool, public_code_clamp: bool,
                          algorithm: int) -> None:
    launch = launch_args(ranked.device)
    if takes_sorted(algorithm, ranked, compared, tau):
        return _sorted_backward(ranked, compared, grad_ranks, grad_ranked, grad_compared, tau, descending)
    rows, cols = ranked.shape
    _C.sigmoid_rank_backward_cuda(ranked.dtype == torch.float64, ranked.data_ptr(), _ptr(compared),
                                  grad_ranks.data_ptr(), grad_ranked.data_ptr(), _ptr(grad_compared), rows, cols, tau,
                                  descending, public_code_clamp, *launch)


def vsl_loss_ratio_sum(sims: Tensor, sims_compared: Optional[Tensor], semantic: Tensor,
                       semantic_compared: Optional[Tensor], row_sums: Tensor, grad_sims: Optional[Tensor],
                       grad_sims_compared: Optional[Tensor], grad_semantic: Optional[Tensor],
                       grad_semantic_compared: Optional[Tensor], tau: float, public_code_clamp: bool,
                       algorithm: int) -> None:
    """Fused dense VSL rows (if S or C takes the sorted algorithm, SR and CR are ranked into buffers,
    each by the algorithm that suits it, and the ratios are summed from them); then the asked-for
    gradients through the ranks with the rank backward kernels."""
    launch = launch_args(sims.device)
    rows, cols = sims.shape
    float64 = sims.dtype == torch.float64
    grad_sr = torch.empty_like(sims)
    grad_cr = torch.empty_like(semantic) if grad_semantic is not None else None
    s_sorted = takes_sorted(algorithm, sims, sims_compared, tau)
    c_sorted = takes_sorted(algorithm, semantic, semantic_compared, tau)
    if s_sorted or c_sorted:
        sr, cr = torch.empty_like(sims), torch.empty_like(semantic)
        sigmoid_rank_forward(sims, sims_compared, sr, tau, True, public_code_clamp, algorithm, s_sorted)
        sigmoid_rank_forward(semantic, semantic_compared, cr, tau, True, public_code_clamp, algorithm, c_sorted)
        _C.vsl_loss_ratio_sum_from_ranks_cuda(float64, sr.data_ptr(), cr.data_ptr(), grad_sr.data_ptr(),
                                              _ptr(grad_cr), row_sums.data_ptr(), rows, cols, *launch)
    else:
        _C.vsl_loss_ratio_sum_cuda(float64, sims.data_ptr(), _ptr(sims_compared), semantic.data_ptr(),
                                   _ptr(semantic_compared), grad_sr.data_ptr(), _ptr(grad_cr), row_sums.data_ptr(),
                                   rows, cols, tau, public_code_clamp, *launch)
    if grad_sims is not None:
        sigmoid_rank_backward(sims, sims_compared, grad_sr, grad_sims, grad_sims_compared, tau, True,
                              public_code_clamp, algorithm)
    if grad_semantic is not None:
        sigmoid_rank_backward(semantic, semantic_compared, grad_cr, grad_semantic, grad_semantic_compared, tau, True,
                              public_code_clamp, algorithm)


def smooth_ap_loss(sims: Tensor, relevant: Tensor, weights: Tensor, row_sums: Tensor, grad_sims: Optional[Tensor],
                   tau: float) -> None:
    """The fused dense Smooth-AP kernels (csrc/smooth_ap_loss.h); with grad_sims, two (rows, cols)
    coefficient buffers for the gradient kernel."""
    rows, cols = sims.shape
    coef = torch.empty((2, rows, cols), dtype=sims.dtype, device=sims.device) if grad_sims is not None else None
    _C.smooth_ap_loss_cuda(sims.dtype == torch.float64, sims.data_ptr(), relevant.data_ptr(), weights.data_ptr(),
                           row_sums.data_ptr(), _ptr(None if coef is None else coef[0]),
                           _ptr(None if coef is None else coef[1]), _ptr(grad_sims), rows, cols, tau,
                           *launch_args(sims.device))


# ------------------------------------------------------------------------------ sorted algorithm
def _sort(x: Tensor) -> Tuple[Tensor, Tensor]:
    values, perm = torch.sort(x, dim=1, stable=True)
    return values.contiguous(), perm.contiguous()


def _positions_in(perm_values: Tensor, perm_centres: Tensor) -> Tensor:
    """skip[r, i]: where the column perm_centres[r, i] sits in the sort whose permutation is perm_values."""
    inverse = torch.empty_like(perm_values)
    cols = perm_values.shape[1]
    inverse.scatter_(1, perm_values, torch.arange(cols, device=perm_values.device).expand_as(perm_values))
    return inverse.gather(1, perm_centres).contiguous()


def _sorted_sums(kind: str, sorted_values: Tensor, value_weights: Optional[Tensor], sorted_centres: Tensor,
                 centre_weights: Optional[Tensor], centre_columns: Tensor, skip_positions: Optional[Tensor],
                 out: Tensor, tau: float, descending: bool) -> None:
    rows, cols = sorted_centres.shape
    _C.sigmoid_rank_sorted_sums_cuda(sorted_centres.dtype == torch.float64, _SUMS[kind], sorted_values.data_ptr(),
                                     _ptr(value_weights), sorted_centres.data_ptr(), _ptr(centre_weights),
                                     centre_columns.data_ptr(), _ptr(skip_positions), out.data_ptr(), rows, cols,
                                     tau, descending, *launch_args(out.device))


def _sorted_forward(ranked: Tensor, compared: Optional[Tensor], ranks: Tensor, tau: float, descending: bool) -> None:
    xs, xperm = _sort(ranked)
    if compared is None:  # each centre leaves out its own sorted position (skip None)
        _sorted_sums("rank", xs, None, xs, None, xperm, None, ranks, tau, descending)
        return
    ys, yperm = _sort(compared)
    _sorted_sums("rank", ys, None, xs, None, xperm, _positions_in(yperm, xperm), ranks, tau, descending)


def _sorted_backward(ranked: Tensor, compared: Optional[Tensor], grad_ranks: Tensor, grad_ranked: Tensor,
                     grad_compared: Optional[Tensor], tau: float, descending: bool) -> None:
    xs, xperm = _sort(ranked)
    g_by_x = grad_ranks.gather(1, xperm).contiguous()
    if compared is None:
        _sorted_sums("row_rank_grad", xs, g_by_x, xs, g_by_x, xperm, None, grad_ranked, tau, descending)
        return
    ys, yperm = _sort(compared)
    # ranked side: centres x_c against the sorted compared rows; compared side: centres y_a against the
    # sorted ranked rows, weighted by the gradient.
    _sorted_sums("ranked_grad", ys, None, xs, g_by_x, xperm, _positions_in(yperm, xperm), grad_ranked, tau,
                 descending)
    _sorted_sums("compared_grad", xs, g_by_x, ys, None, yperm, _positions_in(xperm, yperm), grad_compared, tau,
                 descending)
