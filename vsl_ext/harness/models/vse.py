"""``vse``: a VSE++-style dual encoder - fast, the CPU default.

image: region features -> linear -> mean (or GPO) pooling -> l2norm
text:  word embedding -> BiGRU -> mean (or GPO) pooling over words -> l2norm
similarity: cosine (a matrix product of the normalized embeddings).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from .encoders import GPO, RegionEncoder, WordEncoder, l2norm, masked_mean

POOLINGS = ("mean", "gpo")


class VSE(nn.Module):
    name = "vse"

    def __init__(self, img_dim: int, vocab_size: int, embed_size: int = 1024, word_dim: int = 300,
                 num_layers: int = 1, pooling: str = "mean", dropout: float = 0.4, **_unused):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.config = dict(img_dim=img_dim, vocab_size=vocab_size, embed_size=embed_size, word_dim=word_dim,
                           num_layers=num_layers, pooling=pooling, dropout=dropout)
        self.img_enc = RegionEncoder(img_dim, embed_size, normalize=False)
        self.txt_enc = WordEncoder(vocab_size, word_dim, embed_size, num_layers, dropout=dropout, normalize=False)
        self.pooling = pooling
        if pooling == "gpo":
            self.img_pool = GPO()
            self.txt_pool = GPO()

    def encode_images(self, images: Tensor) -> Tensor:
        """(B, regions, img_dim) -> (B, D) unit vectors."""
        x = self.img_enc(images)
        if self.pooling == "gpo":
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64)
            return l2norm(self.img_pool(x, lengths))
        return l2norm(x.mean(1))

    def encode_captions(self, tokens: Tensor, lengths: Tensor, seeds: Optional[np.ndarray] = None) -> Tensor:
        """(B, L) ids, (B,) lengths -> (B, D) unit vectors. ``seeds``: (B,) per-caption dropout seeds
        (training; :func:`.dropout.sample_seeds`), else torch's global generator draws the masks."""
        w = self.txt_enc(tokens, lengths, seeds)
        if self.pooling == "gpo":
            return l2norm(self.txt_pool(w, lengths))
        return l2norm(masked_mean(w, lengths))

    def similarity(self, img_emb: Tensor, cap_emb: Tensor, lengths: Tensor = None) -> Tensor:
        """(n_img, n_cap) cosine similarities."""
        return img_emb @ cap_emb.t()

    def forward(self, images: Tensor, tokens: Tensor, lengths: Tensor, seeds: Optional[np.ndarray] = None) -> Tensor:
        return self.similarity(self.encode_images(images), self.encode_captions(tokens, lengths, seeds), lengths)
