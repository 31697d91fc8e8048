"""``sgr`` and ``saf``: the similarity heads of SGRAF (Diao et al., "Similarity Reasoning and
Filtration for Image-Text Matching", AAAI 2021), the base models of the VSL paper.

Per (image, caption) pair the head builds similarity *vectors* instead of a scalar:

* local: every word attends to the image's regions (SCAN text-to-image attention: region-word
  cosine, LeakyReLU(0.1), l2-normalised over the words, softmax over the regions with
  inverse temperature ``smooth`` = 9); the vector is ``l2norm(W_l (attended_regions - word)^2)``.
* global: image and caption are pooled by self-attention guided by their mean (``VisualSA`` /
  ``TextSA``); the vector is ``l2norm(W_g (img_glo - cap_glo)^2)``.
* The L+1 vectors (global first) are reduced to one by
  - SGR: ``sgr_step`` graph-reasoning steps on the fully connected graph of the vectors
    (edges = softmax(W_q v_p . W_k v_q), nodes <- ReLU(W (edges @ nodes))), reading node 0;
  - SAF: attention filtration, gates ``sigmoid(BN(w . v_p))`` l1-normalised over the vectors.
* score = sigmoid(w_e . v).

Captions are processed in groups of equal length (SGRAF loops over single captions); BatchNorm in
``saf`` therefore sees the statistics of a length group instead of a single caption.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .encoders import RegionEncoder, WordEncoder, l1norm, l2norm, xavier_uniform_

MODULES = ("SGR", "SAF")


class _SelfAttentionPool(nn.Module):
    """Global vector: local features weighted by attention against the raw global (mean) feature.
    ``local_norm``/``glob_norm``: optional normalisation layers after each projection (SGRAF uses
    BatchNorm on the image side only)."""

    def __init__(self, embed_dim: int, dropout: float, local_norm=None, glob_norm=None):
        super().__init__()

        def branch(norm):
            layers = [nn.Linear(embed_dim, embed_dim)] + ([norm] if norm is not None else [])
            return nn.Sequential(*layers, nn.Tanh(), nn.Dropout(dropout))

        self.local = branch(local_norm)
        self.glob = branch(glob_norm)
        self.common = nn.Linear(embed_dim, 1)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                xavier_uniform_(m)

    def forward(self, local: Tensor, raw_global: Tensor) -> Tensor:
        weights = torch.softmax(self.common(self.local(local) * self.glob(raw_global).unsqueeze(1)).squeeze(-1), 1)
        return l2norm((weights.unsqueeze(-1) * local).sum(1))


class VisualSA(_SelfAttentionPool):
    """Global image vector: regions weighted by attention against the mean region."""

    def __init__(self, embed_dim: int, dropout: float, num_regions: int):
        super().__init__(embed_dim, dropout, nn.BatchNorm1d(num_regions), nn.BatchNorm1d(embed_dim))


class TextSA(_SelfAttentionPool):
    """Global caption vector: words weighted by attention against the mean word."""

    def __init__(self, embed_dim: int, dropout: float):
        super().__init__(embed_dim, dropout)


class GraphReasoning(nn.Module):
    """One step of similarity graph reasoning over (P, N, sim_dim) node sets."""

    def __init__(self, sim_dim: int):
        super().__init__()
        self.query = nn.Linear(sim_dim, sim_dim)
        self.key = nn.Linear(sim_dim, sim_dim)
        self.update = nn.Linear(sim_dim, sim_dim)
        for m in (self.query, self.key, self.update):
            xavier_uniform_(m)

    def forward(self, nodes: Tensor) -> Tensor:
        edges = torch.softmax(self.query(nodes) @ self.key(nodes).transpose(1, 2), dim=-1)
        return F.relu(self.update(edges @ nodes))


class AttentionFiltration(nn.Module):
    """Gate every similarity vector, l1-normalise the gates, return the l2-normalised weighted sum."""

    def __init__(self, sim_dim: int):
        super().__init__()
        self.gate = nn.Linear(sim_dim, 1)
        self.bn = nn.BatchNorm1d(1)
        xavier_uniform_(self.gate)

    def forward(self, nodes: Tensor) -> Tensor:
        gates = l1norm(torch.sigmoid(self.bn(self.gate(nodes).transpose(1, 2))), dim=-1)   # (P, 1, N)
        return l2norm((gates @ nodes).squeeze(1))


def text_to_image_attention(words: Tensor, regions: Tensor, smooth: float) -> Tensor:
    """SCAN attention for every (image, caption) pair of a group of equal-length captions.

    words: (G, L, D), regions: (I, R, D) -> attended region vector per word: (I, G, L, D), l2-normalised.
    """
    attn = torch.einsum("ird,gld->igrl", regions, words)
    attn = l2norm(F.leaky_relu(attn, 0.1), dim=-1)              # over the words of the caption
    attn = torch.softmax(attn * smooth, dim=2)                   # over the regions
    return l2norm(torch.einsum("igrl,ird->igld", attn, regions))


class SGRAF(nn.Module):
    """SGRAF with one reasoning head: ``module="SGR"`` (model name ``sgr``) or ``"SAF"`` (``saf``)."""

    def __init__(self, img_dim: int, vocab_size: int, embed_size: int = 1024, word_dim: int = 300,
                 num_layers: int = 1, sim_dim: int = 256, module: str = "SGR", sgr_step: int = 3,
                 num_regions: int = 36, smooth: float = 9.0, dropout: float = 0.4,
                 pair_chunk_elements: int = 1 << 24, **_unused):
        super().__init__()
        if module not in MODULES:
            raise ValueError(f"module must be one of {MODULES}, got {module!r}")
        self.config = dict(img_dim=img_dim, vocab_size=vocab_size, embed_size=embed_size, word_dim=word_dim,
                           num_layers=num_layers, sim_dim=sim_dim, module=module, sgr_step=sgr_step,
                           num_regions=num_regions, smooth=smooth, dropout=dropout)
        self.name = module.lower()
        self.module_name = module
        self.smooth = smooth
        self.num_regions = num_regions
        self.pair_chunk_elements = pair_chunk_elements
        self.img_enc = RegionEncoder(img_dim, embed_size, normalize=True)
        self.txt_enc = WordEncoder(vocab_size, word_dim, embed_size, num_layers, dropout=dropout, normalize=True)
        self.v_global = VisualSA(embed_size, dropout, num_regions)
        self.t_global = TextSA(embed_size, dropout)
        self.sim_local = nn.Linear(embed_size, sim_dim)
        self.sim_global = nn.Linear(embed_size, sim_dim)
        self.sim_eval = nn.Linear(sim_dim, 1)
        for m in (self.sim_local, self.sim_global, self.sim_eval):
            xavier_uniform_(m)
        if module == "SGR":
            self.sgr = nn.ModuleList(GraphReasoning(sim_dim) for _ in range(sgr_step))
        else:
            self.saf = AttentionFiltration(sim_dim)

    def encode_images(self, images: Tensor) -> Tensor:
        """(B, R, img_dim) -> (B, R, D) l2-normalised region embeddings."""
        x = self.img_enc(images)
        if x.shape[1] != self.num_regions:
            raise ValueError(f"the model was built for {self.num_regions} regions per image, got {x.shape[1]}")
        return x

    def encode_captions(self, tokens: Tensor, lengths: Tensor, seeds: Optional[np.ndarray] = None) -> Tensor:
        """(B, L) ids -> (B, L, D) l2-normalised word embeddings (zero at padding); ``seeds``: (B,)
        per-caption seeds of the word dropout (the self-attention pools' dropout uses torch's generator)."""
        return self.txt_enc(tokens, lengths, seeds)

    def _reduce(self, nodes: Tensor) -> Tensor:
        if self.module_name == "SGR":
            for step in self.sgr:
                nodes = step(nodes)
            return nodes[:, 0]
        return self.saf(nodes)

    def similarity(self, img_emb: Tensor, cap_emb: Tensor, lengths: Tensor) -> Tensor:
        """(n_img, R, D) regions x (n_cap, L, D) words -> (n_img, n_cap) scores in (0, 1)."""
        n_img, n_cap = img_emb.shape[0], cap_emb.shape[0]
        img_glo = self.v_global(img_emb, img_emb.mean(1))
        out = img_emb.new_empty(n_img, n_cap)
        lengths = lengths.to("cpu")
        for length in torch.unique(lengths).tolist():
            idx = torch.nonzero(lengths == length).flatten()
            words_all = cap_emb[idx.to(cap_emb.device), :length]
            cap_glo_all = self.t_global(words_all, words_all.mean(1))
            per_caption = max(1, n_img * length * img_emb.shape[-1])
            step = max(1, self.pair_chunk_elements // per_caption)
            for a in range(0, len(idx), step):
                words, cap_glo = words_all[a:a + step], cap_glo_all[a:a + step]
                g = words.shape[0]
                context = text_to_image_attention(words, img_emb, self.smooth)                  # (I, G, L, D)
                sim_loc = l2norm(self.sim_local((context - words.unsqueeze(0)).pow(2)))        # (I, G, L, S)
                sim_glo = l2norm(self.sim_global((img_glo.unsqueeze(1) - cap_glo.unsqueeze(0)).pow(2)))
                nodes = torch.cat([sim_glo.unsqueeze(2), sim_loc], dim=2).flatten(0, 1)        # (I*G, L+1, S)
                score = torch.sigmoid(self.sim_eval(self._reduce(nodes))).view(n_img, g)
                out[:, idx[a:a + g].to(out.device)] = score
        return out

    def forward(self, images: Tensor, tokens: Tensor, lengths: Tensor, seeds: Optional[np.ndarray] = None) -> Tensor:
        return self.similarity(self.encode_images(images), self.encode_captions(tokens, lengths, seeds), lengths)
