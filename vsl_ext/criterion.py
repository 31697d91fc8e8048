"""The losses as ``nn.Module`` criteria: ``VSLLoss`` (the Visual Semantic Loss alone, the module form of
:func:`vsl_ext.vsl_loss`) and ``VSLCriterion`` (VSE++ hardest-negative triplet loss + beta * VSL).

For a batch of B matched (image, caption) pairs, ``sims`` is the (B, B) images x captions matrix
with the positives on the diagonal. The total loss (the paper's Eq. 8) is

    loss = alpha * triplet(S) + beta * L_vs(S, C_img) [+ beta * L_ts(S^T, C_cap)]

* triplet: for every image its hardest negative caption and for every caption its hardest negative
  image (``max_violation=True``; all negatives summed otherwise), hinge ``[margin + s_neg - s_pos]_+``,
  summed over both directions (VSE++/SCAN/SGRAF's ``ContrastiveLoss``).
* L_vs: :func:`vsl_ext.vsl_loss` between S (row i ranks the batch's captions for image i) and the
  images' semantic similarity C_img (row i ranks the batch's images by similarity to image i;
  caption j belongs to image j).
* L_ts (Eq. 7, ``text_side=True``): the same on S^T (row j ranks images for caption j) and the
  captions' semantic similarity C_cap.
"""
from __future__ import annotations

import math
import numbers
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from . import _validate
from .ops.smooth_ap_loss import smooth_ap_loss
from .ops.vsl_loss import VARIANTS, vsl_loss


def triplet_loss(sims: Tensor, margin: float = 0.2, max_violation: bool = True) -> Tensor:
    """VSE++ contrastive loss on a (B, B) matrix with positives on the diagonal (sum of both directions).

    ``-inf`` marks a pair that is not there (a padding caption or image, a known false negative): as a
    negative it never violates the margin (cost 0, no gradient), and an image (row) or caption
    (column) whose positive is ``-inf`` has no positive pair and adds nothing. Other infinities are
    scores: equal infinities tie (``s_neg - s_pos = 0``, cost = margin, as ties do in the ranks) and
    a ``+inf`` negative against a finite positive is an infinite violation, so an overflowed score
    shows as an infinite loss instead of being hidden. NaN propagates.
    """
    n = sims.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=sims.device)
    zero = sims.new_zeros(())

    def hinge(positive: Tensor) -> Tensor:
        """[margin + s_neg - s_pos]_+ against the positives broadcast along rows or columns."""
        equal_infinities = (sims == positive) & torch.isinf(positive)
        cost = (margin + torch.where(equal_infinities, zero, sims - positive)).clamp(min=0)
        return cost.masked_fill(eye | (positive == float("-inf")), 0)

    diag = sims.diagonal().view(n, 1)
    cost_cap = hinge(diag)      # row i: captions j competing with image i's caption
    cost_img = hinge(diag.t())  # column j: images i competing with caption j's image
    if max_violation:
        return cost_cap.max(dim=1).values.sum() + cost_img.max(dim=0).values.sum()
    return cost_cap.sum() + cost_img.sum()


class _Temperature:
    """tau as the criteria hold it: a 0-d float64 CPU tensor (not a buffer: it stays on the CPU, where
    the kernels read it, and out of state_dict), exposed as the float property ``tau``. Setting
    ``criterion.tau = x`` (a tau schedule) writes the new value into the same tensor, which a compiled
    training step reads as data: no recompile, no frozen value (docs/transforms.md)."""

    def _init_tau(self, tau) -> None:
        self._tau = torch.empty((), dtype=torch.float64)
        self.tau = tau

    @property
    def tau(self) -> float:
        return self._tau.item()

    @tau.setter
    def tau(self, value) -> None:
        """A number or a 0-d floating-point tensor (its value is copied), checked as vsl_ext.vsl_loss checks it."""
        with torch.no_grad():  # also inside torch.inference_mode: the same tensor, a new value
            self._tau.fill_(_validate.tau(value, torch.float64))  # float32 input checks tau again in forward


class VSLLoss(_Temperature, nn.Module):
    """The Visual Semantic Loss (Zhang et al., ICME 2023) as a module: ``VSLLoss(tau, variant)(sims,
    semantic_sims)`` is :func:`vsl_ext.vsl_loss` ``(sims, semantic_sims, tau, variant, algorithm=...)``.

    Args:
        tau: sigmoid temperature of the ranks (> 0, default 1e-3 as in the paper).
        variant: ``"row"`` (the paper's Eq. 5) or ``"public-code"`` (the published implementation).
        algorithm: ``"auto"``, ``"dense"`` or ``"sorted"``, as for :func:`vsl_ext.sigmoid_rank`.

    ``forward(sims, semantic_sims)``: (n, n) image-text similarities S and the images' (n, n)
    semantic similarities C -> scalar L_vs in [0, 1) (float32, float64 for float64 input), without
    the weight beta. Gradients flow to ``sims``, and to ``semantic_sims`` if it requires grad.

    Raises:
        ValueError / TypeError naming the argument: an unknown variant or algorithm, a tau that is
        not a finite number > 0 (here); the inputs' errors of :func:`vsl_ext.vsl_loss` (in forward).
    """

    def __init__(self, tau: float = 1e-3, variant: str = "row", algorithm: str = "auto"):
        super().__init__()
        self._init_tau(tau)
        self.variant = _validate.choice("variant", variant, VARIANTS)
        _validate.algorithm(algorithm)
        self.algorithm = algorithm

    def extra_repr(self) -> str:
        return f"tau={self.tau}, variant={self.variant!r}, algorithm={self.algorithm!r}"

    def forward(self, sims: Tensor, semantic_sims: Tensor) -> Tensor:
        return vsl_loss(sims, semantic_sims, self._tau, self.variant, algorithm=self.algorithm)


class SmoothAPLoss(_Temperature, nn.Module):
    """Smooth-AP (Brown et al., ECCV 2020) for any relevance as a module: ``SmoothAPLoss(tau)(sims,
    relevant)`` is :func:`vsl_ext.smooth_ap_loss` ``(sims, relevant, tau, algorithm=...)``.

    Args:
        tau: sigmoid temperature of the ranks (> 0, default 0.01 as in the paper).
        algorithm: ``"auto"``, ``"dense"`` or ``"sorted"``, as for :func:`vsl_ext.smooth_ap_loss`.

    ``forward(sims, relevant)``: (q, r) similarities of queries to references and a bool (q, r)
    relevance -> scalar ``1 - mean_q AP_q`` over the queries with a relevant reference.

    Raises:
        ValueError / TypeError naming the argument: an unknown algorithm, a tau that is not a finite
        number > 0 (here); the errors of :func:`vsl_ext.smooth_ap_loss` (in forward).
    """

    def __init__(self, tau: float = 0.01, algorithm: str = "auto"):
        super().__init__()
        self._init_tau(tau)
        _validate.algorithm(algorithm)
        self.algorithm = algorithm

    def extra_repr(self) -> str:
        return f"tau={self.tau}, algorithm={self.algorithm!r}"

    def forward(self, sims: Tensor, relevant: Tensor) -> Tensor:
        return smooth_ap_loss(sims, relevant, self._tau, algorithm=self.algorithm)


class VSLCriterion(_Temperature, nn.Module):
    """Triplet + Visual Semantic Loss (Zhang et al., ICME 2023).

    Args:
        margin: triplet margin (0.2 as in VSE++/SGRAF).
        max_violation: hardest negative only (VSE++), else the sum over all negatives.
        alpha: weight of the triplet term.
        beta: weight of the VSL term(s) (10 in the paper); 0 gives the plain triplet baseline and
            skips the VSL computation.
        tau: sigmoid temperature of the ranks.
        text_side: also add the text-side loss L_ts on S^T and the captions' similarity (Eq. 7).
        variant: ``"row"`` (paper) or ``"public-code"`` (published implementation), see
            :func:`vsl_ext.vsl_loss`.

    ``sims`` may mark pairs that are not there (padding, known false negatives) with ``-inf``: the
    triplet term skips them (:func:`triplet_loss`) and the VSL ranks them last without a gradient.

    ``forward(sims, image_sem, caption_sem=None)`` returns a dict with scalar tensors ``loss``,
    ``triplet``, ``vsl`` (and ``vsl_text`` when ``text_side``); ``vsl``/``vsl_text`` are the
    unweighted L_vs/L_ts. ``sims`` is a non-empty (B, B) float tensor (float16/bfloat16/float32/
    float64); the semantic matrices are float tensors of its shape (moved to its device).

    Raises:
        ValueError / TypeError naming the argument: margin, alpha or beta not a finite number >= 0,
        tau not a finite number > 0 with a finite reciprocal, an unknown variant (here); sims not a
        non-empty square float matrix, a semantic matrix missing, not a float tensor or of another
        shape, and the errors of :func:`vsl_ext.vsl_loss` (in forward).
    """

    def __init__(self, margin: float = 0.2, max_violation: bool = True, alpha: float = 1.0, beta: float = 10.0,
                 tau: float = 1e-3, text_side: bool = False, variant: str = "row"):
        super().__init__()
        _validate.choice("variant", variant, VARIANTS)
        for name, value in (("margin", margin), ("alpha", alpha), ("beta", beta)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
                    math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        self._init_tau(tau)
        self.margin = float(margin)
        self.max_violation = bool(max_violation)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.text_side = bool(text_side)
        self.variant = variant

    def extra_repr(self) -> str:
        return (f"margin={self.margin}, max_violation={self.max_violation}, alpha={self.alpha}, beta={self.beta}, "
                f"tau={self.tau}, text_side={self.text_side}, variant={self.variant!r}")

    def forward(self, sims: Tensor, image_sem: Optional[Tensor] = None,
                caption_sem: Optional[Tensor] = None) -> Dict[str, Tensor]:
        _validate.matrix("sims", sims)
        if sims.shape[0] != sims.shape[1]:
            raise ValueError(f"sims must be a square (B, B) images x captions matrix of matched pairs, got "
                             f"{tuple(sims.shape)}")
        triplet = triplet_loss(sims, self.margin, self.max_violation)
        out = {"triplet": triplet}
        loss = self.alpha * triplet
        zero = sims.new_zeros(())
        if self.beta > 0:
            if image_sem is None:
                raise ValueError("image_sem (the batch images' (B, B) semantic similarity) is required when beta > 0")
            image_sem = self._semantic("image_sem", image_sem, sims)
            out["vsl"] = vsl_loss(sims, image_sem, self._tau, self.variant)
            loss = loss + self.beta * out["vsl"]
        else:
            out["vsl"] = zero
        if self.text_side:
            if self.beta > 0:
                if caption_sem is None:
                    raise ValueError("caption_sem (the batch captions' (B, B) semantic similarity) is required "
                                     "when text_side=True")
                caption_sem = self._semantic("caption_sem", caption_sem, sims)
                out["vsl_text"] = vsl_loss(sims.t(), caption_sem, self._tau, self.variant)
                loss = loss + self.beta * out["vsl_text"]
            else:
                out["vsl_text"] = zero
        out["loss"] = loss
        return out

    @staticmethod
    def _semantic(name: str, sem: Tensor, sims: Tensor) -> Tensor:
        _validate.matrix(name, sem)  # a float tensor: ints, bools and complex numbers are not similarities
        if sem.shape != sims.shape:
            raise ValueError(f"{name} must have the shape of sims {tuple(sims.shape)}, got {tuple(sem.shape)}")
        return sem.to(device=sims.device, dtype=sims.dtype if sims.dtype == torch.float64 else torch.float32)
