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
from .shnet import SHNet
from .ssamt import SSAMT
from .vse import VSE

MODELS = ("vse", "sgr", "saf", "ssamt", "3shnet")
SEGMENTATION_MODELS = ("3shnet",)   # their images come with segmentation inputs (data.segmentation)
PAIRWISE_HEADS = ("sgr", "saf")     # score each image-caption pair with a network head, not a dot product


def build_model(name: str, **config) -> nn.Module:
    """``vse`` (dual encoder, cosine), ``sgr`` / ``saf`` (SGRAF heads), ``ssamt`` (two-grain
    transformer over words + phrase units and regions, cosine), ``3shnet`` (segmentation-guided dual
    encoder, cosine; also needs ``num_classes``). ``config`` are the constructor arguments
    (``img_dim`` and ``vocab_size`` are required)."""
    if name == "vse":
        return VSE(**config)
    if name == "3shnet":
        return SHNet(**config)
    if name in PAIRWISE_HEADS:
        config = {k: v for k, v in config.items() if k != "module"}
        return SGRAF(module=name.upper(), **config)
    if name == "ssamt":
        return SSAMT(**config)
    raise ValueError(f"model must be one of {MODELS}, got {name!r}")


__all__ = ["MODELS", "PAIRWISE_HEADS", "SEGMENTATION_MODELS", "SGRAF", "SHNet", "SSAMT", "VSE", "build_model"]
