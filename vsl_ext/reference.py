"""Pure-PyTorch reference implementations: the test oracle and the benchmark baseline.

They materialise (n, n, n) tensors on purpose (that is how the published code works), so memory
and time grow as n^3; use :func:`vsl_ext.vsl_loss` for anything but checking.

Infinite entries (``-inf`` masks padding captions; float16 similarities overflow to ``+inf``):
:func:`sigmoid_rank` and :func:`vsl_loss` follow the rule the kernels follow. Equal infinities tie
(their sigmoid is 1/2, as for equal finite values), an infinity against any other value is
saturated (sigmoid 0 or 1), no gradient flows through an infinite entry (0 there), and the self term
``k = j`` is left out by selection, so ``inf - inf`` never enters. Ranks of NaN-free rows are
finite. NaN propagates: a NaN anywhere in a row makes that row's ranks NaN.
:func:`public_code_vsl_loss` instead reproduces the published code, infinities included (see there).
"""
from __future__ import annotations

import torch
from torch import Tensor


def _pair_differences(M: Tensor) -> Tensor:
    """(r, c) -> (r, c, c): ``[i, j, k] = M[i, k] - M[i, j]``, 0 (a constant, no gradient) where both
    are the same infinity instead of ``inf - inf = NaN``."""
    values, centres = M.unsqueeze(1), M.unsqueeze(2)
    equal_infinities = (values == centres) & torch.isinf(centres)
    return torch.where(equal_infinities, torch.zeros((), dtype=M.dtype, device=M.device), values - centres)


def sigmoid_rank(M: Tensor, tau: float = 1e-3, descending: bool = True) -> Tensor:
    """(r, c) -> (r, c): ``R[i, j] = 1 + sum_{k != j} sigmoid(+-(M[i, k] - M[i, j]) / tau)``, with the
    module's rule for infinities."""
    diff = _pair_differences(M)
    if not descending:
        diff = -diff
    off_diagonal = ~torch.eye(M.shape[1], dtype=torch.bool, device=M.device)
    terms = torch.where(off_diagonal, torch.sigmoid(diff / tau), torch.zeros((), dtype=M.dtype, device=M.device))
    return 1.0 + terms.sum(dim=-1)


def sigmoid_rank_among(M: Tensor, among: Tensor, tau: float = 1e-3, descending: bool = True) -> Tensor:
    """(r, c) -> (r, c): ``R[i, j] = 1 + sum_{k != j, among[i, k]} sigmoid(+-(M[i, k] - M[i, j]) / tau)`` for
    every j (``vsl_ext.sigmoid_rank(M, among=among)``), with the module's rule for infinities."""
    diff = _pair_differences(M)
    if not descending:
        diff = -diff
    keep = ~torch.eye(M.shape[1], dtype=torch.bool, device=M.device) & among.unsqueeze(1)  # [i, j, k]
    terms = torch.where(keep, torch.sigmoid(diff / tau), torch.zeros((), dtype=M.dtype, device=M.device))
    return 1.0 + terms.sum(dim=-1)


def smooth_ap_loss(sims: Tensor, relevant: Tensor, tau: float = 0.01) -> Tensor:
    """Smooth-AP (Brown et al., ECCV 2020) for any relevance: ``1 - mean_q AP_q`` over the queries with a
    relevant reference, ``AP_q = (1/|P_q|) sum_{j in P_q} R_P(q, j) / R_all(q, j)`` with R_all =
    :func:`sigmoid_rank` and R_P = :func:`sigmoid_rank_among` ``(sims, relevant)``."""
    ratio = sigmoid_rank_among(sims, relevant, tau) / sigmoid_rank(sims, tau)
    ratio = torch.where(relevant, ratio, torch.zeros((), dtype=sims.dtype, device=sims.device))
    positives = relevant.sum(-1)
    valid = positives > 0
    ap = ratio.sum(-1)[valid] / positives[valid]
    return 1.0 - ap.mean()


def vsl_loss(sims: Tensor, semantic_sims: Tensor, tau: float = 1e-3) -> Tensor:
    """Row variant: ``1 - mean(min(SR, CR) / max(SR, CR))`` with SR = R(S), CR = R(C); any (r, c) shape."""
    sr = sigmoid_rank(sims, tau)
    cr = sigmoid_rank(semantic_sims, tau)
    return 1.0 - (torch.minimum(sr, cr) / torch.maximum(sr, cr)).mean()


def public_code_sigmoid(tensor: Tensor, temp: float) -> Tensor:
    """The public-code variant's temperature sigmoid as the published code writes it, exponent clamped to [-50, 50]."""
    exponent = torch.clamp(-tensor / temp, min=-50, max=50)
    return 1.0 / (1.0 + torch.exp(exponent))


def _public_code_rank(sim: Tensor, tau: float) -> Tensor:
    """The published code's rank, as it is written: the own term is removed by multiplying with a
    mask, so an own term that is NaN (``S[c, b] == S[b, c]`` the same infinity) stays NaN."""
    n = sim.shape[0]
    mask = (1.0 - torch.eye(n, dtype=sim.dtype, device=sim.device)).unsqueeze(0).repeat(n, 1, 1)
    column = sim.t().unsqueeze(1).repeat(1, n, 1)  # [b, c, a] = sim[a, b]
    value = sim.unsqueeze(2).repeat(1, 1, n)       # [b, c, a] = sim[b, c]
    return torch.sum(public_code_sigmoid(column - value, tau) * mask, dim=-1) + 1


def public_code_vsl_loss(sims: Tensor, semantic_sims: Tensor, tau: float = 1e-3) -> Tensor:
    """The published VSL implementation's loss (without its factor 10, which is our beta).

    It ranks ``S[b, c]`` against column b of S: ``SR[b, c] = 1 + sum_{a != c} sig((S[a, b] - S[b, c]) / tau)``,
    ranks C the same way, and compares them with min/max like the row variant.

    Infinities as the published code treats them (this function reproduces it and does not follow
    the module's rule): the sigmoid's clamped exponent makes an infinity against a finite value
    ``sigmoid(+-50)`` (1 - 2e-22 or 1.9e-22, gradient 0), but a pair of equal infinities gives
    ``inf - inf = NaN``, and the mask multiplication keeps a NaN own term too, so S (or C) holding
    the same infinity at ``[a, b]`` and ``[b, c]`` for any a, b, c gives a NaN loss; e.g. -inf-masked
    padding captions whose own rows are masked as well. ``vsl_ext.vsl_loss(variant="public-code")``
    equals this function on finite input and follows the module's rule on infinite input (equal
    infinities tie at 1/2; against a finite value the clamped ``sigmoid(+-50)`` as here).
    """
    sr = _public_code_rank(sims, tau)
    cr = _public_code_rank(semantic_sims, tau)
    return 1.0 - (torch.minimum(sr, cr) / torch.maximum(sr, cr)).mean()
