"""The sorted-window algorithm over rows sorted by ``torch.sort``: the CUDA ``algorithm="sorted"``.

Sorting each row once turns every sum of the ranks and their gradients into a count by position
plus the terms inside a window: with the row sorted ascending, a value farther than
``hw = 30 tau`` (float32; 50 tau in float64) from the centre contributes exactly 1 or 0 to a rank
sum and 0 to a gradient sum after rounding (``sigmoid(-30) = 9.4e-14``), so only the values in
``[u - hw, u + hw]``, found by binary search, are evaluated. The result differs from the dense
path by at most ``n * 9.4e-14`` per rank (float32; under fp32 rounding for n up to 10^5).

Here the rows are sorted with ``torch.sort`` and the permutations mapped with ``gather`` and
``scatter``; the native element code (``csrc/sorted_window.h``) runs as one CUDA thread per
element, or as a CPU loop over the same code, which is how the algorithm is tested on machines
without a GPU (the CPU's own ``algorithm="sorted"`` is a faster CPU-specific kernel).

Every function takes contiguous, NaN-free (rows, cols) tensors of one float dtype on one device.
Infinities may be there: ``torch.sort`` puts them at the ends of a row, outside every finite
centre's window, where they are counted by position (an infinity against a finite value is
saturated); an infinite centre's window is the run of values equal to it, all ties (1/2 to a rank,
0 to a gradient; see ``rank_diff`` / ``grad_diff`` in ``csrc/sigmoid_math.h``).
Extra memory: a few (rows, cols) tensors (sorted values, int64 permutations), O(rows * cols).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _native

# csrc/sorted_window.h: WindowKind
RANK, GRAD_SELF, GRAD_CENTRE, GRAD_WEIGHTED = 0, 1, 2, 3


def _sort(x: Tensor) -> Tuple[Tensor, Tensor]:
    values, perm = torch.sort(x, dim=1, stable=True)
    return values.contiguous(), perm.contiguous()


def _positions_in(perm_values: Tensor, perm_centres: Tensor) -> Tensor:
    """skip[r, i]: where the column perm_centres[r, i] sits in the sort whose permutation is perm_values."""
    inverse = torch.empty_like(perm_values)
    cols = perm_values.shape[1]
    inverse.scatter_(1, perm_values, torch.arange(cols, device=perm_values.device).expand_as(perm_values))
    return inverse.gather(1, perm_centres).contiguous()


def window_fraction(x: Tensor, y: Optional[Tensor], tau: float, sample_rows: int = 16) -> Tensor:
    """Mean fraction of a row's values inside the window of each entry, over up to ``sample_rows``
    evenly spaced rows: the share of the dense path's pairs this path evaluates. 0-dim float64
    tensor on x's device (no sync)."""
    rows, cols = x.shape
    idx = torch.linspace(0, rows - 1, min(rows, sample_rows), device=x.device).round().long()
    centres = x[idx]
    values, _ = torch.sort((x if y is None else y)[idx], dim=1)
    hw = (50.0 if x.dtype == torch.float64 else 30.0) * tau  # Saturation<T> in csrc/sigmoid_math.h
    lo = torch.searchsorted(values, centres - hw)
    hi = torch.searchsorted(values, centres + hw, right=True)
    return (hi - lo).double().mean() / cols


def rank_forward(x: Tensor, y: Optional[Tensor], out: Tensor, tau: float, descending: bool) -> None:
    """out = cross rank of x against y (y None: row rank of x), as :func:`vsl_ext._native.rank_forward`."""
    xs, xperm = _sort(x)
    if y is None:  # each centre leaves out its own sorted position (skip None)
        _native.window_sums(RANK, xs, None, xs, None, xperm, None, out, tau, descending)
        return
    ys, yperm = _sort(y)
    _native.window_sums(RANK, ys, None, xs, None, xperm, _positions_in(yperm, xperm), out, tau, descending)


def rank_backward(x: Tensor, y: Optional[Tensor], g: Tensor, gx: Tensor, gy: Optional[Tensor], tau: float,
                  descending: bool) -> None:
    """gx (and gy when y is given) = gradients of sum(g * rank), as :func:`vsl_ext._native.rank_backward`."""
    xs, xperm = _sort(x)
    g_by_x = g.gather(1, xperm).contiguous()
    if y is None:
        _native.window_sums(GRAD_SELF, xs, g_by_x, xs, g_by_x, xperm, None, gx, tau, descending)
        return
    ys, yperm = _sort(y)
    # x side: centres x_c against the sorted y; y side: centres y_a against the sorted x weighted by g.
    _native.window_sums(GRAD_CENTRE, ys, None, xs, g_by_x, xperm, _positions_in(yperm, xperm), gx, tau, descending)
    _native.window_sums(GRAD_WEIGHTED, xs, g_by_x, ys, None, yperm, _positions_in(xperm, yperm), gy, tau,
                        descending)
