"""``ssamt``: a Semantic Structure Aware Multimodal Transformer, built from the description in Fan
et al., "Constructing Phrase-level Semantic Labels to Form Multi-Grained Supervision for Image-Text
Retrieval" (ICMR 2023; no public code exists, the layer design below is ours).

Each modality is a transformer over two grains of semantic units, and the two modalities are
encoded separately, so retrieval is a dot product of pooled embeddings:

* text: a fine grain of **words** (word embedding, linear, LayerNorm, + learned positions) and a coarse
  grain of **phrase units** from the caption's text scene graph (entities, attributes, triples;
  :mod:`vsl_ext.harness.data.phrase_units`). A unit is ``LN(W_p [e(s); e(r); e(o)]) + kind
  embedding``, where ``e(slot)`` is the mean word embedding of the slot's lemmas (zero for an
  empty slot).
* image: a fine grain of **regions** (linear projection of the region features, LayerNorm) and a coarse grain
  of ``slots`` learned **visual phrase queries**, the image-side counterpart of phrase units.

Every layer (pre-LayerNorm, residual) applies, per modality,

1. intra-grain self-attention in each grain (words <-> words, phrases <-> phrases; regions,
   slots),
2. cross-grain attention both ways (fine queries attend to the coarse grain, coarse queries to the
   fine grain),
3. a feed-forward block per grain.

Padding is masked everywhere (a caption without phrase units has an empty coarse grain whose
cross-grain attention contributes zero), so a caption's embedding does not depend on the rest of
its batch. Outputs (all l2-normalised, D = ``embed_size``):

* image: ``v = l2norm(W_v mean(regions ∪ slots))`` and the local units ``l2norm(W_v u)`` of every
  region and slot;
* caption: ``t = l2norm(W_t mean(words ∪ phrase units))`` and the phrase embeddings
  ``l2norm(W_t p)`` of its units (contextualised by the layers);
* similarity ``S = v t^T`` (cosine).

The phrase embeddings and local units feed the phrase-level losses
(:mod:`vsl_ext.harness.phrase_losses`).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .encoders import l2norm, length_mask, xavier_uniform_

MAX_POSITIONS = 128   # learned word positions; words further on share the last one


class MaskedAttention(nn.Module):
    """Multi-head attention of queries (B, Lq, D) over keys/values (B, Lk, D) with a key mask
    (B, Lk) bool (True = attend). A query whose keys are all masked gets a zero output."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embed_size {dim} must be divisible by the number of heads {heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries: Tensor, keys: Tensor, key_mask: Tensor) -> Tensor:
        B, Lq, D = queries.shape
        Lk, h = keys.shape[1], self.heads
        q = self.q(queries).view(B, Lq, h, D // h).transpose(1, 2)
        k, v = self.kv(keys).view(B, Lk, 2, h, D // h).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(D // h)                    # (B, h, Lq, Lk)
        mask = key_mask[:, None, None, :]
        weights = torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), dim=-1)
        weights = self.dropout(weights * mask.to(weights.dtype))               # all-masked rows -> 0
        return self.out((weights @ v).transpose(1, 2).reshape(B, Lq, D))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, dropout: float):
        super().__init__(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))


class TwoGrainLayer(nn.Module):
    """One layer over a fine grain (B, F, D) and a coarse grain (B, C, D) of one modality:
    intra-grain self-attention, cross-grain attention both ways, feed-forward (pre-LN, residual)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.self_fine = MaskedAttention(dim, heads, dropout)
        self.self_coarse = MaskedAttention(dim, heads, dropout)
        self.fine_from_coarse = MaskedAttention(dim, heads, dropout)
        self.coarse_from_fine = MaskedAttention(dim, heads, dropout)
        self.ff_fine = FeedForward(dim, dropout)
        self.ff_coarse = FeedForward(dim, dropout)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(6))
        self.dropout = nn.Dropout(dropout)

    def forward(self, fine: Tensor, fine_mask: Tensor, coarse: Tensor, coarse_mask: Tensor) -> Tuple[Tensor, Tensor]:
        n = self.norms
        f, c = n[0](fine), n[1](coarse)
        fine = fine + self.dropout(self.self_fine(f, f, fine_mask))
        coarse = coarse + self.dropout(self.self_coarse(c, c, coarse_mask))
        f, c = n[2](fine), n[3](coarse)
        fine, coarse = (fine + self.dropout(self.fine_from_coarse(f, c, coarse_mask)),
                        coarse + self.dropout(self.coarse_from_fine(c, f, fine_mask)))
        fine = fine + self.dropout(self.ff_fine(n[4](fine)))
        coarse = coarse + self.dropout(self.ff_coarse(n[5](coarse)))
        return fine, coarse


def _masked_union_mean(fine: Tensor, fine_mask: Tensor, coarse: Tensor, coarse_mask: Tensor) -> Tensor:
    x = torch.cat([fine, coarse], 1)
    m = torch.cat([fine_mask, coarse_mask], 1).unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)


class SSAMT(nn.Module):
    """See the module docstring. ``forward(images, tokens, lengths, phrases)`` gives the
    (B_img, B_cap) cosine similarity matrix.

    Args:
        img_dim, vocab_size: region feature size and vocabulary size.
        embed_size: D, the width of every grain and of the joint space (divisible by ``heads``).
        word_dim: word embedding size (shared by words and phrase slots).
        num_layers: two-grain layers per modality.
        heads: attention heads.
        slots: learned visual phrase queries (the image's coarse grain).
        dropout: dropout in attention weights, residual branches and the input embeddings.
    """
    name = "ssamt"
    uses_phrases = True

    def __init__(self, img_dim: int, vocab_size: int, embed_size: int = 1024, word_dim: int = 300,
                 num_layers: int = 1, heads: int = 4, slots: int = 8, dropout: float = 0.1, **_unused):
        super().__init__()
        for name, value in (("embed_size", embed_size), ("word_dim", word_dim), ("num_layers", num_layers),
                            ("heads", heads), ("slots", slots)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if embed_size % heads:
            raise ValueError(f"embed_size ({embed_size}) must be divisible by heads ({heads})")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.config = dict(img_dim=img_dim, vocab_size=vocab_size, embed_size=embed_size, word_dim=word_dim,
                           num_layers=num_layers, heads=heads, slots=slots, dropout=dropout)
        D = embed_size
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        with torch.no_grad():
            self.embed.weight[0].zero_()
        self.word_in = nn.Linear(word_dim, D)
        self.phrase_in = nn.Linear(3 * word_dim, D)
        self.region_in = nn.Linear(img_dim, D)
        self.in_norms = nn.ModuleDict({k: nn.LayerNorm(D) for k in ("word", "phrase", "region")})
        self.positions = nn.Embedding(MAX_POSITIONS, D)
        self.kind = nn.Embedding(4, D, padding_idx=0)
        self.visual_queries = nn.Parameter(torch.randn(slots, D) * 0.02)
        nn.init.normal_(self.positions.weight, std=0.02)
        nn.init.normal_(self.kind.weight, std=0.02)
        with torch.no_grad():
            self.kind.weight[0].zero_()
        self.text_layers = nn.ModuleList(TwoGrainLayer(D, heads, dropout) for _ in range(num_layers))
        self.image_layers = nn.ModuleList(TwoGrainLayer(D, heads, dropout) for _ in range(num_layers))
        self.text_norm = nn.LayerNorm(D)
        self.image_norm = nn.LayerNorm(D)
        self.text_out = nn.Linear(D, D)
        self.image_out = nn.Linear(D, D)
        self.dropout = nn.Dropout(dropout)
        for lin in (self.word_in, self.phrase_in, self.region_in, self.text_out, self.image_out):
            xavier_uniform_(lin)

    # -- image
    def encode_image_grains(self, images: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(B, R, img_dim) -> image embedding (B, D), local units (B, R + slots, D), unit mask (B, R + slots)."""
        if images.dim() == 2:
            images = images.unsqueeze(1)
        B, R, _ = images.shape
        fine = self.dropout(self.in_norms["region"](self.region_in(images)))
        coarse = self.visual_queries.unsqueeze(0).expand(B, -1, -1)
        fmask = torch.ones(B, R, dtype=torch.bool, device=images.device)
        cmask = torch.ones(B, coarse.shape[1], dtype=torch.bool, device=images.device)
        for layer in self.image_layers:
            fine, coarse = layer(fine, fmask, coarse, cmask)
        fine, coarse = self.image_norm(fine), self.image_norm(coarse)
        emb = l2norm(self.image_out(_masked_union_mean(fine, fmask, coarse, cmask)))
        units = l2norm(self.image_out(torch.cat([fine, coarse], 1)))
        return emb, units, torch.cat([fmask, cmask], 1)

    def encode_images(self, images: Tensor) -> Tensor:
        """(B, R, img_dim) -> (B, D) unit vectors."""
        return self.encode_image_grains(images)[0]

    # -- text
    def phrase_inputs(self, slots: Tensor, kinds: Tensor) -> Tensor:
        """(B, P, 3, W) slot word ids, (B, P) kinds -> (B, P, D) phrase unit inputs."""
        e = self.embed(slots)                                              # (B, P, 3, W, E)
        m = (slots > 0).unsqueeze(-1).to(e.dtype)
        slot_mean = (e * m).sum(3) / m.sum(3).clamp(min=1)                 # (B, P, 3, E)
        x = self.in_norms["phrase"](self.phrase_in(slot_mean.flatten(2))) + self.kind(kinds)
        return x * (kinds > 0).unsqueeze(-1).to(x.dtype)

    def encode_text_grains(self, tokens: Tensor, lengths: Tensor, phrases) -> Tuple[Tensor, Tensor, Tensor]:
        """Caption embedding (B, D), phrase embeddings (B, P, D) and their mask (B, P) from
        (B, L) word ids, (B,) lengths and a :class:`~vsl_ext.harness.data.phrase_units.PhraseBatch`."""
        if phrases is None:
            raise ValueError("ssamt encodes a caption together with its phrase units: pass phrases= (a PhraseBatch, "
                             "see vsl_ext.harness.data.phrase_units.attach_phrases)")
        B, L = tokens.shape
        if phrases.kinds.shape[0] != B:
            raise ValueError(f"phrases are for {phrases.kinds.shape[0]} captions, tokens for {B}")
        fmask = length_mask(lengths.to(tokens.device), L)
        pos = self.positions(torch.arange(L, device=tokens.device).clamp(max=MAX_POSITIONS - 1))
        fine = self.dropout(self.in_norms["word"](self.word_in(self.embed(tokens))) + pos)
        cmask = phrases.kinds > 0
        coarse = self.dropout(self.phrase_inputs(phrases.slots, phrases.kinds))
        for layer in self.text_layers:
            fine, coarse = layer(fine, fmask, coarse, cmask)
        fine, coarse = self.text_norm(fine), self.text_norm(coarse)
        emb = l2norm(self.text_out(_masked_union_mean(fine, fmask, coarse, cmask)))
        phrase_emb = l2norm(self.text_out(coarse)) * cmask.unsqueeze(-1).to(coarse.dtype)
        return emb, phrase_emb, cmask

    def encode_captions(self, tokens: Tensor, lengths: Tensor, phrases=None) -> Tensor:
        """(B, L) ids, (B,) lengths, PhraseBatch -> (B, D) unit vectors."""
        return self.encode_text_grains(tokens, lengths, phrases)[0]

    def similarity(self, img_emb: Tensor, cap_emb: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        """(n_img, n_cap) cosine similarities."""
        return img_emb @ cap_emb.t()

    def forward(self, images: Tensor, tokens: Tensor, lengths: Tensor, phrases=None) -> Tensor:
        return self.similarity(self.encode_images(images), self.encode_captions(tokens, lengths, phrases))
