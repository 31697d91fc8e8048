"""Phrase-level matching losses (``vsl-train --phrase-level``), after SSAMT (Fan et al., ICMR 2023:
"multi-scale matching losses from both global and local perspectives, and penalize mismatched
phrases"; no public code exists, the definitions below are ours).

A batch holds B matched pairs (image ``i``, caption ``i``) with image ids ``img[i]``. Caption ``c``
has phrase units ``p`` (entities, attributes, triples; see
:mod:`vsl_ext.harness.data.phrase_units`) with labels ``l(c, p)`` and l2-normalised embeddings
``e[c, p]`` (D). ``L_i`` is the label set of *all* captions of image ``img[i]`` (not just the one in
the batch). Every phrase unit of the batch is judged against every image of the batch:

* positive ``pos[i, c, p] = l(c, p) in L_i``: phrases of image i's own captions (its batch
  caption's phrases always are);
* negative otherwise: phrases of other images' captions that occur in none of image i's captions.

Scores, both cosine (all vectors l2-normalised):

* global ``s[i, c, p] = <v_i, e[c, p]>`` with ``v_i`` the image embedding used for retrieval;
* local ``s_loc[i, c, p] = max_u <u_{i,u}, e[c, p]>`` over the image's local units ``u`` (regions,
  and for ``ssamt`` its visual phrase slots).

Losses, margin ``m`` (``--margin``, 0.2), each summed over the batch's images like the sentence
triplet loss (:func:`vsl_ext.criterion.triplet_loss`), so that weight 1 would weigh a phrase-level
violation as much as a sentence-level one (the default ``--phrase-weight`` is 0.1; docs/ssamt.md):

* phrase global ``L_pg = sum_i mean_{p in P_i} [m + max_{n in N_i} s_in - s_ip]_+`` with P_i / N_i
  the positive / negative phrases of the batch for image i (hardest negative, VSE++). With
  ``max_violation=False`` the max becomes a sum over N_i. Images without a positive or without a
  negative phrase add 0.
* phrase local ``L_pl``: the same on ``s_loc``.
* mismatched-phrase penalty ``L_mm = sum_i mean_{c in V_i} mean_{q in M_ic, k in K_ic}
  [m + s_icq - s_ick]_+``: for image i and a caption c of another image (``img[c] != img[i]``),
  ``K_ic`` are c's phrases that occur in image i's captions and ``M_ic`` those that occur in none;
  the mismatched phrases are pushed below the caption's matching ones by the margin. ``V_i`` are
  the captions with both sets non-empty (partly matching captions, the hard case); an image
  without such a caption adds 0.

``L_phrase = L_pg + L_pl + L_mm``; the trainer adds ``phrase_weight * L_phrase`` to
``triplet + beta * VSL``.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch
from torch import Tensor, nn


def _check_bool(name: str, t: Tensor, shape) -> Tensor:
    if not isinstance(t, Tensor) or t.dtype != torch.bool or tuple(t.shape) != tuple(shape):
        got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"{name} must be a bool tensor of shape {tuple(shape)}, got {got}")
    return t


def phrase_ranking_loss(scores: Tensor, positive: Tensor, valid: Tensor, margin: float = 0.2,
                        max_violation: bool = True) -> Tensor:
    """``sum_i mean_{p in P_i} [margin + max_{n in N_i} s_in - s_ip]_+`` (``max_violation``; else the
    max is a sum over N_i), ``P_i = valid & positive[i]``, ``N_i = valid & ~positive[i]``.

    Args:
        scores: float (B, N) image-phrase scores.
        positive: bool (B, N).
        valid: bool (N,) or (B, N): real phrases (False at padding).

    Returns a scalar; images with an empty P_i or N_i add 0.
    """
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        raise ValueError(f"scores must be a (B, N) tensor, got {getattr(scores, 'shape', type(scores).__name__)}")
    _check_bool("positive", positive, scores.shape)
    if isinstance(valid, Tensor) and valid.dim() == 1:
        _check_bool("valid", valid, scores.shape[1:])
        valid = valid.expand_as(scores)
    _check_bool("valid", valid, scores.shape)
    pos, neg = valid & positive, valid & ~positive
    has = pos.any(1) & neg.any(1)                                          # (B,)
    if max_violation:
        hardest = torch.where(neg, scores, torch.full_like(scores, float("-inf"))).max(1).values
        hardest = torch.where(has, hardest, torch.zeros_like(hardest))
        cost = (margin + hardest.unsqueeze(1) - scores).clamp(min=0)       # (B, N) over positives p
    else:
        pair = (margin + scores.unsqueeze(1) - scores.unsqueeze(2)).clamp(min=0)   # [i, p, n]
        cost = (pair * neg.unsqueeze(1).to(scores.dtype)).sum(2)
    cost = cost * pos.to(scores.dtype)
    per_image = cost.sum(1) / pos.sum(1).clamp(min=1).to(scores.dtype)
    return (per_image * has.to(scores.dtype)).sum()


def mismatched_phrase_penalty(scores: Tensor, positive: Tensor, valid: Tensor, matched: Tensor,
                              margin: float = 0.2) -> Tensor:
    """``sum_i mean_{c in V_i} mean_{q in M_ic, k in K_ic} [margin + s_icq - s_ick]_+``.

    Args:
        scores: float (B, C, P): image i against phrase p of caption c.
        positive: bool (B, C, P): the phrase's label is in image i's label set.
        valid: bool (C, P): real phrases.
        matched: bool (B, C): caption c belongs to image i (such pairs are skipped).

    ``K_ic = valid[c] & positive[i, c]``, ``M_ic = valid[c] & ~positive[i, c]``; ``V_i``: captions
    with ``not matched[i, c]`` and both sets non-empty. Returns a scalar.
    """
    if not isinstance(scores, Tensor) or scores.dim() != 3:
        raise ValueError(f"scores must be a (B, C, P) tensor, got {getattr(scores, 'shape', type(scores).__name__)}")
    B, C, P = scores.shape
    _check_bool("positive", positive, (B, C, P))
    _check_bool("valid", valid, (C, P))
    _check_bool("matched", matched, (B, C))
    keep = valid.unsqueeze(0) & positive                                    # K: (B, C, P)
    miss = valid.unsqueeze(0) & ~positive                                   # M
    pairs = miss.unsqueeze(3) & keep.unsqueeze(2)                           # [i, c, q, k]
    hinge = (margin + scores.unsqueeze(3) - scores.unsqueeze(2)).clamp(min=0)
    n_pairs = pairs.sum((2, 3))                                             # (B, C)
    per_caption = (hinge * pairs.to(scores.dtype)).sum((2, 3)) / n_pairs.clamp(min=1).to(scores.dtype)
    use = (~matched) & (n_pairs > 0)
    per_image = (per_caption * use.to(scores.dtype)).sum(1) / use.sum(1).clamp(min=1).to(scores.dtype)
    return per_image.sum()


class PhraseLevelLoss(nn.Module):
    """``L_pg + L_pl + L_mm`` of the module docstring from embeddings.

    ``forward(img, units, unit_mask, phrase_emb, phrase_mask, positive, matched)``:

    * img: (B, D) image embeddings; units: (B, U, D) local units, unit_mask: bool (B, U);
    * phrase_emb: (C, P, D) phrase embeddings, phrase_mask: bool (C, P);
    * positive: bool (B, C, P), matched: bool (B, C).

    All vectors l2-normalised. Returns a dict of scalars ``phrase_global``, ``phrase_local``,
    ``phrase_mismatch`` and their sum ``phrase``.
    """

    def __init__(self, margin: float = 0.2, max_violation: bool = True):
        super().__init__()
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0:
            raise ValueError(f"margin must be a number >= 0, got {margin!r}")
        self.margin = float(margin)
        self.max_violation = bool(max_violation)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, max_violation={self.max_violation}"

    def forward(self, img: Tensor, units: Tensor, unit_mask: Tensor, phrase_emb: Tensor, phrase_mask: Tensor,
                positive: Tensor, matched: Tensor) -> Dict[str, Tensor]:
        B, D = img.shape
        C, P = phrase_mask.shape
        if units.shape[0] != B or units.shape[2] != D or phrase_emb.shape != (C, P, D):
            raise ValueError(f"shapes do not fit: img {tuple(img.shape)}, units {tuple(units.shape)}, "
                             f"phrase_emb {tuple(phrase_emb.shape)}, phrase_mask {tuple(phrase_mask.shape)}")
        _check_bool("unit_mask", unit_mask, units.shape[:2])
        glob = torch.einsum("bd,cpd->bcp", img, phrase_emb)
        local = torch.einsum("bud,cpd->bucp", units, phrase_emb)
        local = local.masked_fill(~unit_mask[:, :, None, None], float("-inf")).max(1).values
        local = torch.where(unit_mask.any(1)[:, None, None], local, torch.zeros_like(local))
        flat_pos, flat_valid = positive.reshape(B, C * P), phrase_mask.reshape(C * P)
        out = {"phrase_global": phrase_ranking_loss(glob.reshape(B, C * P), flat_pos, flat_valid, self.margin,
                                                    self.max_violation),
               "phrase_local": phrase_ranking_loss(local.reshape(B, C * P), flat_pos, flat_valid, self.margin,
                                                   self.max_violation),
               "phrase_mismatch": mismatched_phrase_penalty(glob, positive, phrase_mask, matched, self.margin)}
        out["phrase"] = out["phrase_global"] + out["phrase_local"] + out["phrase_mismatch"]
        return out


def batch_positives(phrases, image_ids, labels: Tensor, device=None) -> tuple:
    """``positive`` (B, C, P) and ``matched`` (B, C) bool tensors for a batch: ``phrases`` is the
    split's :class:`~vsl_ext.harness.data.phrase_units.CaptionPhrases`, ``image_ids`` (B,) the
    batch's image ids (caption c belongs to image ``image_ids[c]``), ``labels`` (C, P) the batch's
    phrase label ids (-1 at padding)."""
    img = np.asarray(image_ids, dtype=np.int64).reshape(-1)
    positive = torch.from_numpy(phrases.image_has_label(img, labels.cpu().numpy())).to(device)
    matched = torch.from_numpy(img[:, None] == img[None, :]).to(device)
    return positive, matched

