"""The training step's phrase part: models that read phrase units (``ssamt``) and the phrase-level
losses (``--phrase-level``, :mod:`vsl_ext.harness.phrase_losses`).

:func:`phrase_grains` gives, for ``vse`` and ``ssamt``, the embeddings the phrase-level losses
compare: image embeddings and local units, caption embeddings and phrase embeddings.

* ``ssamt``: its own grains (:class:`~vsl_ext.harness.models.ssamt.SSAMT`).
* ``vse``: image ``encode_images``; local units the l2-normalised projected regions; phrase
  embedding = the caption encoder (word embedding + BiGRU) run over the unit's words in reading
  order ("red dog", "man ride horse"), mean-pooled over the words, l2-normalised.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .data.phrase_units import (
    CaptionPhrases,
    PhraseBatch,
    attach_phrases,
    phrase_cache_path,
    phrase_texts,
    split_phrases,
)
from .data.precomp import split_paths
from .data.vocab import Vocabulary
from .models.encoders import l2norm, masked_mean
from .phrase_losses import PhraseLevelLoss, batch_positives

PHRASE_LEVEL_MODELS = ("vse", "ssamt")


def uses_phrases(model) -> bool:
    """True for models whose caption encoder reads phrase units (``ssamt``)."""
    return bool(getattr(model, "uses_phrases", False))


def needs_phrase_units(cfg) -> bool:
    """Whether a run reads the training captions' phrase units (``--model ssamt`` or ``--phrase-level``)."""
    return cfg.model == "ssamt" or bool(cfg.phrase_level)


def validate_phrase_options(cfg) -> None:
    """ValueError naming the option for phrase settings that do not fit together."""
    if cfg.phrase_level and cfg.model not in PHRASE_LEVEL_MODELS:
        raise ValueError(f"--phrase-level needs a model with separate image and caption embeddings "
                         f"(--model {' or '.join(PHRASE_LEVEL_MODELS)}), got --model {cfg.model}")
    if not (cfg.phrase_weight >= 0 and math.isfinite(cfg.phrase_weight)):
        raise ValueError(f"--phrase-weight must be a finite number >= 0, got {cfg.phrase_weight}")
    if cfg.global_batch and cfg.phrase_level:
        raise ValueError("--global-batch does not compute the phrase-level losses: drop --phrase-level")
    if cfg.text_side and cfg.semantic == "phrases":
        raise ValueError("--text-side needs caption-level similarities, which --semantic phrases does not define "
                         "(its labels are pooled per image): use --semantic tfidf or cider-d")


def phrase_vocabulary(data_dir: str, cfg, captions: List[str]) -> Vocabulary:
    """The run's vocabulary when phrase units are read: the training captions' words plus the
    lemmas of their phrase units (parsed with the cache of :func:`phrase_cache_path`)."""
    from ..phrases import parse
    caps_path = split_paths(data_dir, cfg.train_split)[1]
    labels = parse(captions, cache=phrase_cache_path(caps_path, cfg.output))
    return Vocabulary.build(list(captions) + phrase_texts(labels), cfg.vocab_min_count)


def caption_extras(model, split, caption_ids, device) -> dict:
    """Extra ``encode_captions`` arguments of a model for captions of a split: ``{"phrases": ...}``
    for models that read phrase units (parsed and attached to the split on first use), else {}."""
    if not uses_phrases(model):
        return {}
    return {"phrases": split_phrases(split).batch(caption_ids).to(device)}


def vse_phrase_embeddings(model, phrases: PhraseBatch) -> Tensor:
    """(C, P, D) l2-normalised phrase embeddings of a ``vse`` model (zero at padding)."""
    C, P, T = phrases.text.shape
    idx = torch.nonzero(phrases.mask.reshape(-1)).flatten()
    out = model.img_enc.fc.weight.new_zeros(C * P, model.config["embed_size"])
    if idx.numel():
        text, lengths = phrases.text.reshape(C * P, T)[idx], phrases.text_lengths.reshape(-1)[idx]
        out = out.index_copy(0, idx, l2norm(masked_mean(model.txt_enc(text, lengths), lengths)))
    return out.view(C, P, -1)


def phrase_grains(model, images: Tensor, tokens: Tensor, lengths: Tensor, phrases: PhraseBatch) -> Dict[str, Tensor]:
    """Embeddings for the phrase-level losses: ``img`` (B, D), ``units`` (B, U, D), ``unit_mask``
    (B, U), ``cap`` (B, D), ``phrase_emb`` (B, P, D), ``phrase_mask`` (B, P). ``vse`` or ``ssamt``
    (ValueError otherwise)."""
    if uses_phrases(model):
        img, units, unit_mask = model.encode_image_grains(images)
        cap, phrase_emb, phrase_mask = model.encode_text_grains(tokens, lengths, phrases)
    elif getattr(model, "name", None) == "vse":
        img = model.encode_images(images)
        units = l2norm(model.img_enc(images if images.dim() == 3 else images.unsqueeze(1)))
        unit_mask = torch.ones(units.shape[:2], dtype=torch.bool, device=units.device)
        cap = model.encode_captions(tokens, lengths)
        phrase_emb, phrase_mask = vse_phrase_embeddings(model, phrases), phrases.mask
    else:
        raise ValueError(f"the phrase-level losses need a model with separate image and caption embeddings: "
                         f"{PHRASE_LEVEL_MODELS}, got {getattr(model, 'name', type(model).__name__)!r}")
    return {"img": img, "units": units, "unit_mask": unit_mask, "cap": cap, "phrase_emb": phrase_emb,
            "phrase_mask": phrase_mask}


class PhraseStep:
    """The similarity matrix of a training batch and, with ``phrase_level``, the phrase-level losses.

    Args:
        phrases: the training split's phrase units.
        phrase_level: add the phrase-level losses.
        weight: their weight (``--phrase-weight``).
        margin, max_violation: as the sentence-level triplet loss.
    """

    def __init__(self, phrases: CaptionPhrases, phrase_level: bool, weight: float = 0.1, margin: float = 0.2,
                 max_violation: bool = True):
        self.phrases = phrases
        self.weight = float(weight)
        self.loss = PhraseLevelLoss(margin, max_violation) if phrase_level else None

    @classmethod
    def for_run(cls, cfg, train_data) -> "PhraseStep":
        """Attach the training split's phrase units (parse cached beside the data or in ``cfg.output``)."""
        phrases = attach_phrases(train_data, fallback_dir=cfg.output)
        return cls(phrases, cfg.phrase_level, cfg.phrase_weight, cfg.margin, cfg.max_violation)

    def __call__(self, model, batch: dict, device) -> Tuple[Tensor, Optional[Dict[str, Tensor]]]:
        """(B, B) similarities of ``batch`` (a :meth:`PrecompSplit.batch` dict) and the phrase-level
        loss terms (None without ``phrase_level``)."""
        phrases = self.phrases.batch(batch["caption_ids"]).to(device)
        images, tokens, lengths = (batch[k].to(device) for k in ("images", "tokens", "lengths"))
        if self.loss is None:
            return model(images, tokens, lengths, phrases), None
        g = phrase_grains(model, images, tokens, lengths, phrases)
        sims = model.similarity(g["img"], g["cap"], lengths)
        positive, matched = batch_positives(self.phrases, batch["image_ids"], phrases.labels, device)
        return sims, self.loss(g["img"], g["units"], g["unit_mask"], g["phrase_emb"], g["phrase_mask"],
                               positive, matched)

    def combine(self, out: Dict[str, Tensor], extra: Optional[Dict[str, Tensor]]) -> Dict[str, Tensor]:
        """The criterion's output with the phrase terms added (``loss += weight * phrase``)."""
        if extra is None:
            return out
        out = dict(out, **extra)
        out["loss"] = out["loss"] + self.weight * extra["phrase"]
        return out
