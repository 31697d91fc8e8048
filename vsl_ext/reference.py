"""Pure-PyTorch reference implementations: the test oracle and the benchmark baseline.

They materialise (n, n, n) tensors on purpose (that is how the published code works), so memory
and time grow as n^3; use :func:`vsl_ext.vsl_loss` for anything but checking.
"""
from __future__ import annotations

import torch
from torch import Tensor


def sigmoid_rank(M: Tensor, tau: float = 1e-3, descending: bool = True) -> Tensor:
    """(r, c) -> (r, c): ``R[i, j] = 1 + sum_{k != j} sigmoid(+-(M[i, k] - M[i, j]) / tau)``."""
    diff = M.unsqueeze(1) - M.unsqueeze(2)  # [i, j, k] = M[i, k] - M[i, j]
    if not descending:
        diff = -diff
    off_diagonal = 1.0 - torch.eye(M.shape[1], dtype=M.dtype, device=M.device)
    return 1.0 + (torch.sigmoid(diff / tau) * off_diagonal).sum(dim=-1)


def vsl_loss(sims: Tensor, semantic_sims: Tensor, tau: float = 1e-3) -> Tensor:
    """Row variant: ``1 - mean(min(SR, CR) / max(SR, CR))`` with SR = R(S), CR = R(C)."""
    sr = sigmoid_rank(sims, tau)
    cr = sigmoid_rank(semantic_sims, tau)
    return 1.0 - (torch.minimum(sr, cr) / torch.maximum(sr, cr)).mean()


def published_sigmoid(tensor: Tensor, temp: float) -> Tensor:
    """The published code's temperature sigmoid, exponent clamped to [-50, 50]."""
    exponent = torch.clamp(-tensor / temp, min=-50, max=50)
    return 1.0 / (1.0 + torch.exp(exponent))


def _published_rank(sim: Tensor, tau: float) -> Tensor:
    n = sim.shape[0]
    mask = (1.0 - torch.eye(n, dtype=sim.dtype, device=sim.device)).unsqueeze(0).repeat(n, 1, 1)
    column = sim.t().unsqueeze(1).repeat(1, n, 1)  # [b, c, a] = sim[a, b]
    value = sim.unsqueeze(2).repeat(1, 1, n)       # [b, c, a] = sim[b, c]
    return torch.sum(published_sigmoid(column - value, tau) * mask, dim=-1) + 1


def public_code_vsl_loss(sims: Tensor, semantic_sims: Tensor, tau: float = 1e-3) -> Tensor:
    """The published VSL implementation's loss (without its factor 10, which is our beta).

    It ranks ``S[b, c]`` against column b of S: ``SR[b, c] = 1 + sum_{a != c} sig((S[a, b] - S[b, c]) / tau)``,
    ranks C the same way, and compares them with min/max like the row variant.
    """
    sr = _published_rank(sims, tau)
    cr = _published_rank(semantic_sims, tau)
    return 1.0 - (torch.minimum(sr, cr) / torch.maximum(sr, cr)).mean()
