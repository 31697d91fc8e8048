"""Shared image/text encoders (SCAN/SGRAF style) and pooling operators."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .dropout import SampleDropout


def l2norm(x: Tensor, dim: int = -1, eps: float = 1e-8) -> Tensor:
    return x / (x.pow(2).sum(dim=dim, keepdim=True).sqrt() + eps)


def l1norm(x: Tensor, dim: int = -1, eps: float = 1e-8) -> Tensor:
    return x / (x.abs().sum(dim=dim, keepdim=True) + eps)


def xavier_uniform_(linear: nn.Linear) -> None:
    """Uniform(-r, r), r = sqrt(6 / (fan_in + fan_out)), zero bias (the init SCAN/SGRAF use)."""
    r = math.sqrt(6.0) / math.sqrt(linear.in_features + linear.out_features)
    nn.init.uniform_(linear.weight, -r, r)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B, max_len) bool, True at valid positions."""
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


class RegionEncoder(nn.Module):
    """Precomputed region features -> linear projection into the joint space (per region)."""

    def __init__(self, img_dim: int, embed_size: int, normalize: bool = True):
        super().__init__()
        self.fc = nn.Linear(img_dim, embed_size)
        self.normalize = normalize
        xavier_uniform_(self.fc)

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() == 2:
            images = images.unsqueeze(1)
        x = self.fc(images)
        return l2norm(x) if self.normalize else x


class WordEncoder(nn.Module):
    """Word embedding + (Bi)GRU; bidirectional outputs are averaged (SGRAF). Returns (B, L, D)
    word features, zero at padded positions, l2-normalized per word if ``normalize``.

    Dropout on the word embeddings draws each caption's mask from ``seeds[b]`` when ``seeds`` (B,)
    are given (:class:`.dropout.SampleDropout`), so a caption gets the same mask whichever process
    or batch shard encodes it."""

    def __init__(self, vocab_size: int, word_dim: int, embed_size: int, num_layers: int = 1,
                 bidirectional: bool = True, dropout: float = 0.4, normalize: bool = True):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        with torch.no_grad():
            self.embed.weight[0].zero_()
        self.dropout = SampleDropout(dropout)
        self.bidirectional = bidirectional
        self.rnn = nn.GRU(word_dim, embed_size, num_layers, batch_first=True, bidirectional=bidirectional)
        self.normalize = normalize

    def forward(self, tokens: Tensor, lengths: Tensor, seeds: Optional[np.ndarray] = None) -> Tensor:
        x = self.dropout(self.embed(tokens), lengths, seeds)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        if self.bidirectional:
            half = out.shape[-1] // 2
            out = (out[..., :half] + out[..., half:]) / 2
        if self.normalize:
            out = l2norm(out)
        return out * length_mask(lengths.to(out.device), out.shape[1]).unsqueeze(-1)


def masked_mean(x: Tensor, lengths: Tensor) -> Tensor:
    mask = length_mask(lengths.to(x.device), x.shape[1]).unsqueeze(-1).to(x.dtype)
    return (x * mask).sum(1) / mask.sum(1).clamp(min=1)


class GPO(nn.Module):
    """Generalized pooling (after VSE-infinity, Chen et al. CVPR 2021): every feature dimension is
    sorted over the set (regions or words) in decreasing order and pooled with weights generated
    from the positions' sinusoidal encodings by a small BiGRU, so the model learns anything between
    max pooling and mean pooling."""

    def __init__(self, pe_dim: int = 32, hidden: int = 32, temperature: float = 0.1):
        super().__init__()
        self.pe_dim = pe_dim
        self.temperature = temperature
        self.gru = nn.GRU(pe_dim, hidden, batch_first=True, bidirectional=True)
        self.score = nn.Linear(hidden, 1)

    def positional(self, length: int, device) -> Tensor:
        pos = torch.arange(length, dtype=torch.float32, device=device).unsqueeze(1)
        div = torch.exp(torch.arange(0, self.pe_dim, 2, dtype=torch.float32, device=device)
                        * (-math.log(10000.0) / self.pe_dim))
        pe = torch.zeros(length, self.pe_dim, device=device)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        return pe

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        B, K, _ = x.shape
        lengths = lengths.to(x.device)
        mask = length_mask(lengths, K)                                   # (B, K)
        pe = self.positional(K, x.device).unsqueeze(0).expand(B, K, self.pe_dim)
        packed = pack_padded_sequence(pe, lengths.cpu(), batch_first=True, enforce_sorted=False)
        h, _ = self.gru(packed)
        h, _ = pad_packed_sequence(h, batch_first=True, total_length=K)
        half = h.shape[-1] // 2
        scores = self.score((h[..., :half] + h[..., half:]) / 2).squeeze(-1)
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")) / self.temperature, dim=1)
        filled = x.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        ranked = filled.sort(dim=1, descending=True).values.masked_fill(~mask.unsqueeze(-1), 0.0)
        return (ranked * weights.unsqueeze(-1)).sum(1)
