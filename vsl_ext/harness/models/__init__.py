"""Image-text retrieval models; each maps a batch to an (images x captions) similarity matrix.

Every model has ``encode_images(images)``, ``encode_captions(tokens, lengths, seeds=None)``,
``similarity(img_emb, cap_emb, lengths)`` and ``forward(images, tokens, lengths, seeds=None)``, and a
``config`` dict that rebuilds it through :func:`build_model`. ``seeds`` are per-caption dropout
seeds (:func:`.dropout.sample_seeds`; the trainer passes them so that sharding a batch over
processes does not change any dropout mask).
"""
from __future__ import annotations

from torch import nn

from .sgraf import SGRAF
from .vse import VSE

MODELS = ("vse", "sgr", "saf")


def build_model(name: str, **config) -> nn.Module:
    """``vse`` (dual encoder, cosine), ``sgr`` / ``saf`` (SGRAF heads). ``config`` are the
    constructor arguments (``img_dim`` and ``vocab_size`` are required)."""
    if name == "vse":
        return VSE(**config)
    if name in ("sgr", "saf"):
        config = {k: v for k, v in config.items() if k != "module"}
        return SGRAF(module=name.upper(), **config)
    raise ValueError(f"model must be one of {MODELS}, got {name!r}")


__all__ = ["MODELS", "SGRAF", "VSE", "build_model"]
