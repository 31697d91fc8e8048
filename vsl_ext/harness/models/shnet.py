"""``3shnet``: the segmentation-guided semantic-spatial image encoder of 3SHNet.

After Ge et al., "3SHNet: Boosting Image-Sentence Retrieval via Visual Semantic-Spatial
Self-Highlighting" (Information Processing and Management 2024; public code XuriGe1995/3SHNet,
``lib/encoders_rgn_seg_sp_se.py``). The image side learns from a segmentation of the image *what*
its objects are and *where* they lie; image and caption stay separately encoded, so retrieval is a
dot product of unit vectors as in ``vse``.

Image side, per image (D = ``embed_size``; inputs: :class:`~..data.segmentation.SegmentedImages`):

* regions ``x`` (R x img_dim, the first ``region_lengths`` valid): ``base = W x``;
  ``features = base + MLP(x)``;
* class token: ``LN(ReLU(W class_presence))`` (one token from the C-class presence vector);
* cell tokens: the per-class score maps (C x h x w) read as h*w cells of C scores, each
  ``c + MLP(c)`` with ``c = LN(ReLU(W cell))`` (49 tokens for 3SHNet's 7 x 7 maps);
* semantic fusion: a segmentation query ``q`` (score maps averaged over the cells, embedded like the
  class token, plus an MLP residual) gates every region: ``r = base + MLP(base)``,
  ``a = sigmoid(r . q / sqrt(D))``, ``w = a r``, ``sem = ReLU(W_o(w * tanh(W_s w) + q))``;
* spatial fusion: every pixel of the label map becomes a key ``K = ReLU(BN(conv3x3([label id,
  sinusoidal position (8)])))`` of ``spatial_dim`` channels; each region ``p = MLP(base)`` attends
  over the pixels, ``ctx = softmax(4 p K / sqrt(spatial_dim)) K``, and ``spa = MLP(ctx + p)``;
* ``fused = MLP(sem + spa + features)``;
* GPO pools the set [class token, features, fused, cell tokens] (1 + 2 R + h w tokens), l2-normalised.

MLPs are two layers (Linear, BatchNorm over the valid tokens, ReLU, Linear: VSE-infinity's MLP, hidden
D / 2). In training, each region is dropped with probability ``region_drop`` (0.2, 3SHNet's size
augmentation; at least one is kept).

Text side: ``bigru`` (default; the harness's word embedding + BiGRU, then GPO) or ``bert`` (BERT from a
local checkpoint folder + a linear map to D, then GPO; 3SHNet's text encoder, BERT's parameters at
0.1 x the learning rate as there). Needs ``transformers`` only for ``bert``.
"""
from __future__ import annotations

import math
import os
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.segmentation import SegmentedImages
from .encoders import GPO, WordEncoder, l2norm, length_mask, xavier_uniform_

TEXT_ENCODERS = ("bigru", "bert")
BERT_LR_SCALE = 0.1
ATTENTION_SMOOTH = 4.0      # inverse temperature of the spatial attention (3SHNet's lambda_softmax)
POSITION_DIM = 8            # sinusoidal position channels per label-map pixel


def sinusoid(length: int, dim: int, device=None) -> Tensor:
    """(length, dim) sinusoidal position encoding (Vaswani et al. 2017); ``dim`` even."""
    pos = torch.arange(length, dtype=torch.float32, device=device).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


class TokenMLP(nn.Module):
    """Linear -> BatchNorm1d -> ReLU -> Linear on every token of a (B, N, in_dim) set. BatchNorm sees
    only the tokens where ``mask`` (B, N) is True; masked tokens come out as zeros."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        b, n, _ = x.shape
        flat = x.reshape(b * n, -1)
        if mask is None:
            return self.fc2(F.relu(self.bn(self.fc1(flat)))).view(b, n, -1)
        keep = mask.reshape(-1)
        out = flat.new_zeros(b * n, self.fc2.out_features)
        out[keep] = self.fc2(F.relu(self.bn(self.fc1(flat[keep]))))
        return out.view(b, n, -1)


def class_embedding(num_classes: int, embed_size: int) -> nn.Sequential:
    """C class scores -> D: Linear, ReLU, Dropout(0.1), LayerNorm (3SHNet's class and cell embeddings)."""
    return nn.Sequential(nn.Linear(num_classes, embed_size), nn.ReLU(), nn.Dropout(0.1), nn.LayerNorm(embed_size))


class SemanticFusion(nn.Module):
    """Regions gated by a query embedded from the per-class score maps (what the image shows)."""

    def __init__(self, embed_size: int, num_classes: int):
        super().__init__()
        self.region_mlp = TokenMLP(embed_size, embed_size // 2, embed_size)
        self.query = class_embedding(num_classes, embed_size)
        self.query_mlp = TokenMLP(embed_size, embed_size // 2, embed_size)
        self.scale = nn.Linear(embed_size, embed_size)
        self.out = nn.Linear(embed_size, embed_size)

    def forward(self, regions: Tensor, mask: Tensor, score_maps: Tensor) -> Tensor:
        """regions (B, R, D), mask (B, R) bool, score_maps (B, C, h, w) -> (B, R, D), zero at padding."""
        r = regions + self.region_mlp(regions, mask)
        q = self.query(score_maps.mean(dim=(2, 3))).unsqueeze(1)                      # (B, 1, D)
        q = q + self.query_mlp(q)
        gate = torch.sigmoid((r * q).sum(-1) / math.sqrt(r.shape[-1])) * mask           # (B, R)
        weighted = gate.unsqueeze(-1) * r
        out = F.relu(self.out(weighted * torch.tanh(self.scale(weighted)) + q))
        return out * mask.unsqueeze(-1)


class SpatialFusion(nn.Module):
    """Regions attend over the pixels of the label map, each a class id plus its position (where
    the objects are)."""

    def __init__(self, embed_size: int, key_dim: int = 128):
        super().__init__()
        self.key_dim = key_dim
        self.region_mlp = TokenMLP(embed_size, embed_size // 2, key_dim)
        self.keys = nn.Sequential(nn.Conv2d(1 + POSITION_DIM, key_dim, 3, padding=1), nn.BatchNorm2d(key_dim),
                                  nn.ReLU())
        self.out_mlp = TokenMLP(key_dim, embed_size // 2, embed_size)

    def forward(self, regions: Tensor, mask: Tensor, label_map: Tensor) -> Tensor:
        """regions (B, R, D), mask (B, R) bool, label_map (B, H, W) -> (B, R, D), zero at padding."""
        b, h, w = label_map.shape
        p = self.region_mlp(regions, mask)                                               # (B, R, P)
        pos = sinusoid(h * w, POSITION_DIM, label_map.device).t().reshape(1, POSITION_DIM, h, w)
        pixels = torch.cat([label_map.unsqueeze(1), pos.expand(b, -1, -1, -1)], dim=1)
        keys = self.keys(pixels).flatten(2)                                              # (B, P, H*W)
        attn = torch.softmax(ATTENTION_SMOOTH * (p @ keys) / math.sqrt(self.key_dim), dim=-1)
        context = attn @ keys.transpose(1, 2)                                            # (B, R, P)
        return self.out_mlp(context * mask.unsqueeze(-1) + p, mask)


def pack_valid(tokens: Tensor, valid: Tensor):
    """Moves the valid tokens of every row to the front, keeping their order: (packed, counts)."""
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
    packed = torch.gather(tokens, 1, order.unsqueeze(-1).expand_as(tokens))
    return packed, valid.sum(1)


class SegmentationImageEncoder(nn.Module):
    """The 3SHNet image encoder (module doc): :class:`SegmentedImages` -> (B, D) unit vectors."""

    def __init__(self, img_dim: int, num_classes: int, embed_size: int, spatial_dim: int = 128,
                 region_drop: float = 0.2):
        super().__init__()
        self.img_dim, self.num_classes, self.region_drop = img_dim, num_classes, region_drop
        self.fc = nn.Linear(img_dim, embed_size)
        xavier_uniform_(self.fc)
        self.region_mlp = TokenMLP(img_dim, embed_size // 2, embed_size)
        self.class_token = class_embedding(num_classes, embed_size)
        self.cell_embed = class_embedding(num_classes, embed_size)
        self.cell_mlp = TokenMLP(embed_size, embed_size // 2, embed_size)
        self.semantic = SemanticFusion(embed_size, num_classes)
        self.spatial = SpatialFusion(embed_size, spatial_dim)
        self.fusion_mlp = TokenMLP(embed_size, embed_size // 2, embed_size)
        self.pool = GPO()

    def drop_regions(self, x: Tensor, mask: Tensor):
        """Training-time size augmentation: each valid region is kept with probability 1 - region_drop
        (at least one per image); kept regions move to the front."""
        keep = (torch.rand(mask.shape, device=mask.device) >= self.region_drop) & mask
        none = ~keep.any(1)
        keep[none, 0] = True
        return pack_valid(x, keep)

    def check(self, images) -> None:
        if not isinstance(images, SegmentedImages):
            raise TypeError("3shnet encodes SegmentedImages (region features with segmentation inputs), got "
                            f"{type(images).__name__}: the data folder needs the segmentation files "
                            "{split}_segmentations.npy, {split}_seg_maps.npy, {split}_cat_onehots.npy")
        if images.regions.shape[-1] != self.img_dim:
            raise ValueError(f"the model was built for {self.img_dim}-dim region features, got "
                             f"{images.regions.shape[-1]}")
        if images.num_classes != self.num_classes:
            raise ValueError(f"the model was built for {self.num_classes} segmentation classes, got "
                             f"{images.num_classes}")

    def forward(self, images: SegmentedImages) -> Tensor:
        self.check(images)
        x, lengths = images.regions, images.region_lengths
        mask = length_mask(lengths, x.shape[1])
        if self.training and self.region_drop > 0:
            x, lengths = self.drop_regions(x, mask)
            mask = length_mask(lengths, x.shape[1])
        x = x * mask.unsqueeze(-1)
        base = self.fc(x) * mask.unsqueeze(-1)
        semantic = self.semantic(base, mask, images.score_maps)
        spatial = self.spatial(base, mask, images.label_map)
        features = base + self.region_mlp(x, mask)
        cells = self.cell_embed(images.score_maps.flatten(2).transpose(1, 2))           # (B, h*w, D)
        cells = cells + self.cell_mlp(cells)
        fused = self.fusion_mlp(semantic + spatial + features, mask)
        cls = self.class_token(images.class_presence).unsqueeze(1)
        tokens = torch.cat([cls, features, fused, cells], dim=1)
        always = torch.ones(x.shape[0], 1, dtype=torch.bool, device=x.device)
        valid = torch.cat([always, mask, mask, always.expand(-1, cells.shape[1])], dim=1)
        packed, counts = pack_valid(tokens, valid)
        return l2norm(self.pool(packed, counts))


class GRUTextEncoder(nn.Module):
    """Word embedding + BiGRU (the harness's word encoder), GPO over the words, l2-normalised."""

    def __init__(self, vocab_size: int, word_dim: int, embed_size: int, num_layers: int, dropout: float):
        super().__init__()
        self.words = WordEncoder(vocab_size, word_dim, embed_size, num_layers, dropout=dropout, normalize=False)
        self.pool = GPO()

    def forward(self, tokens: Tensor, lengths: Tensor, seeds: Optional[np.ndarray] = None) -> Tensor:
        return l2norm(self.pool(self.words(tokens, lengths, seeds), lengths))


def _transformers():
    try:
        import transformers
    except ImportError as exc:
        raise ImportError("--text-encoder bert needs the transformers package (pip install transformers, or "
                          f"the bert extra); it is not installed: {exc}") from None
    return transformers


class BertTextEncoder(nn.Module):
    """BERT (a local checkpoint folder, never downloaded) + Linear(hidden, D), GPO over the word
    pieces, l2-normalised. ``bert_config`` (a ``BertConfig.to_dict()``) builds the same network
    without reading ``bert_path``; the weights then come from a checkpoint's state dict."""

    def __init__(self, embed_size: int, bert_path: Optional[str] = None, bert_config: Optional[dict] = None):
        super().__init__()
        tf = _transformers()
        if bert_config is not None:
            self.bert = tf.BertModel(tf.BertConfig.from_dict(dict(bert_config)), add_pooling_layer=False)
        else:
            if not bert_path or not os.path.isfile(os.path.join(bert_path, "config.json")):
                raise FileNotFoundError(f"--bert-path {bert_path!r}: not a local BERT checkpoint folder (config.json, "
                                        "weights and vocab.txt, e.g. bert-base-uncased saved with save_pretrained)")
            log = tf.logging
            verbosity = log.get_verbosity()
            bars = getattr(log, "is_progress_bar_enabled", lambda: False)()
            log.set_verbosity_error()               # the unused pooler weights would be reported as "UNEXPECTED"
            if bars:
                log.disable_progress_bar()
            try:
                self.bert = tf.BertModel.from_pretrained(bert_path, add_pooling_layer=False, local_files_only=True)
            finally:
                log.set_verbosity(verbosity)
                if bars:
                    log.enable_progress_bar()
        self.linear = nn.Linear(self.bert.config.hidden_size, embed_size)
        self.pool = GPO()

    def forward(self, tokens: Tensor, lengths: Tensor, seeds: Optional[np.ndarray] = None) -> Tensor:
        """``seeds`` is accepted for the models' common signature; BERT's own dropout uses torch's generator."""
        limit = self.bert.config.max_position_embeddings
        tokens, lengths = tokens[:, :limit], lengths.clamp(max=limit)
        mask = length_mask(lengths.to(tokens.device), tokens.shape[1])
        hidden = self.bert(input_ids=tokens, attention_mask=mask.long()).last_hidden_state
        return l2norm(self.pool(self.linear(hidden), lengths))


class SHNet(nn.Module):
    """3SHNet (model name ``3shnet``): :class:`SegmentationImageEncoder` + a BiGRU or BERT text encoder,
    cosine similarity.

    Args:
        img_dim: region feature size; num_classes: segmentation classes C (133 in 3SHNet's release).
        vocab_size, word_dim, num_layers, dropout: the BiGRU text encoder (vocab_size also sizes nothing
            for BERT, whose own vocabulary is used).
        text_encoder: ``"bigru"`` or ``"bert"``; bert_path: local BERT checkpoint folder (bert only).
        bert_config: the BERT network's config dict (set automatically; rebuilds without bert_path).
        spatial_dim: key channels of the spatial fusion (128 in 3SHNet); region_drop: training-time
            region drop probability.
    """

    name = "3shnet"

    def __init__(self, img_dim: int, vocab_size: int, num_classes: int, embed_size: int = 1024, word_dim: int = 300,
                 num_layers: int = 1, dropout: float = 0.4, text_encoder: str = "bigru",
                 bert_path: Optional[str] = None, bert_config: Optional[dict] = None, spatial_dim: int = 128,
                 region_drop: float = 0.2, **_unused):
        super().__init__()
        if text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"text_encoder must be one of {TEXT_ENCODERS}, got {text_encoder!r}")
        if not 0 <= region_drop < 1:
            raise ValueError(f"region_drop must lie in [0, 1), got {region_drop}")
        if num_classes < 1 or img_dim < 1:
            raise ValueError(f"img_dim and num_classes must be >= 1, got {img_dim} and {num_classes}")
        self.img_enc = SegmentationImageEncoder(img_dim, num_classes, embed_size, spatial_dim, region_drop)
        if text_encoder == "bert":
            self.txt_enc = BertTextEncoder(embed_size, bert_path, bert_config)
            bert_config = self.txt_enc.bert.config.to_dict()
        else:
            self.txt_enc = GRUTextEncoder(vocab_size, word_dim, embed_size, num_layers, dropout)
        self.config = dict(img_dim=img_dim, vocab_size=vocab_size, num_classes=num_classes, embed_size=embed_size,
                           word_dim=word_dim, num_layers=num_layers, dropout=dropout, text_encoder=text_encoder,
                           bert_path=bert_path, bert_config=bert_config, spatial_dim=spatial_dim,
                           region_drop=region_drop)

    def encode_images(self, images: SegmentedImages) -> Tensor:
        """:class:`SegmentedImages` of B images -> (B, D) unit vectors."""
        return self.img_enc(images)

    def encode_captions(self, tokens: Tensor, lengths: Tensor, seeds: Optional[np.ndarray] = None) -> Tensor:
        """(B, L) ids, (B,) lengths -> (B, D) unit vectors; ``seeds``: (B,) per-caption word-dropout seeds
        (:func:`.dropout.sample_seeds`; BiGRU encoder only)."""
        return self.txt_enc(tokens, lengths, seeds)

    def similarity(self, img_emb: Tensor, cap_emb: Tensor, lengths: Tensor = None) -> Tensor:
        """(n_img, n_cap) cosine similarities."""
        return img_emb @ cap_emb.t()

    def forward(self, images: SegmentedImages, tokens: Tensor, lengths: Tensor,
                seeds: Optional[np.ndarray] = None) -> Tensor:
        return self.similarity(self.encode_images(images), self.encode_captions(tokens, lengths, seeds))

    def parameter_groups(self) -> List[dict]:
        """Optimizer groups: BERT's parameters (if any) at ``lr_scale`` 0.1 of the learning rate."""
        bert = list(self.txt_enc.bert.parameters()) if isinstance(self.txt_enc, BertTextEncoder) else []
        ids = {id(p) for p in bert}
        groups = [{"params": [p for p in self.parameters() if id(p) not in ids], "lr_scale": 1.0}]
        if bert:
            groups.append({"params": bert, "lr_scale": BERT_LR_SCALE})
        return groups
