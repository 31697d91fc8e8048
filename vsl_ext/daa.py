"""DAA (Li et al., "A Differentiable Semantic Metric Approximation in Probabilistic Embedding for
Cross-Modal Retrieval", NeurIPS 2022; reference [6] of the VSL paper) as a preset of the VSL.

DAA's public code (VL-Group/2022-NeurIPS-DAA) computes, for a score matrix S and a semantic (CIDEr)
matrix C of the same shape, ``1 - sum_bc min(SR, CR) / max(SR, CR) / N^2`` with ``SR[b, c] = 1 +
sum_{a != c} sigmoid((S[a, b] - S[b, c]) / tau)`` (the sigmoid's argument clamped to +-50) and CR the
same for C: exactly the VSL's public-code construction, ``vsl_ext.vsl_loss(S, C, tau,
variant="public-code")``, on finite input. Its two published recipes:

* SGRAF-DAA (``model.py``, ``Loss.DAA``): ``daa_weight * (L(S, C) + L(S^T, C^T))`` with tau = 0.001
  (the value its ``DAA`` passes to the sigmoid) and ``daa_weight = 25`` (its option's default), S the
  (images x captions) SGRAF scores, C the CIDEr map: :func:`daa_loss` with its defaults.
* PCME-DAA (``DAA.coco_DAA``): tau = 0.01, one direction, weight 1, on its own score layout: S = X X^T
  for X the (N K, D) sampled embeddings of ``input1`` (the code reads ``input1`` for both sides) and C
  the (N, N) CIDEr map repeated into K x K blocks: ``daa_loss(X @ X.T, C.repeat_interleave(K,
  0).repeat_interleave(K, 1), tau=0.01, weight=1.0, text_side=False)``.

tests/test_daa_loss.py checks both against transcriptions of that code (to 1e-5, float64).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .ops.vsl_loss import vsl_loss


def daa_loss(sims: Tensor, semantic_sims: Tensor, tau: float = 1e-3, *, weight: float = 25.0, text_side: bool = True,
             algorithm: str = "auto") -> Tensor:
    """DAA's loss (Li et al., NeurIPS 2022) as its public code computes it (see :mod:`vsl_ext.daa`).

    Args:
        sims: (n, n) score matrix S (images x captions; DAA's ``scores``), float, CPU or CUDA.
        semantic_sims: (n, n) semantic similarities C of the same pairs (DAA's ``sems``: CIDEr), float.
            The names are :func:`vsl_ext.vsl_loss`'s, so its errors name these arguments.
        tau: sigmoid temperature (0.001 in SGRAF-DAA's loss, 0.01 in PCME-DAA's).
        weight: the factor DAA multiplies its loss by (``daa_weight``, 25 in SGRAF-DAA).
        text_side: also add the loss of ``(S^T, C^T)`` (SGRAF-DAA adds both directions).
        algorithm: "auto", "dense" or "sorted", as for :func:`vsl_ext.sigmoid_rank`.

    Returns:
        ``weight * (L(S, C) [+ L(S^T, C^T)])`` with ``L = vsl_ext.vsl_loss(..., variant="public-code")``:
        a scalar in the computation dtype, differentiable like :func:`vsl_ext.vsl_loss`.

    Raises:
        The errors of :func:`vsl_ext.vsl_loss` (square matrices of one shape, tau); TypeError /
        ValueError naming weight (not a finite real number) or text_side (not a bool).
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or (
            not torch.compiler.is_compiling() and not math.isfinite(weight)):  # traced: a symbolic float
        raise TypeError(f"weight must be a finite real number, got {weight!r}")
    if not isinstance(text_side, bool):
        raise TypeError(f"text_side must be a bool, got {type(text_side).__name__}")
    loss = vsl_loss(sims, semantic_sims, tau, "public-code", algorithm=algorithm)
    if text_side:
        loss = loss + vsl_loss(sims.t(), semantic_sims.t(), tau, "public-code", algorithm=algorithm)
    return weight * loss
