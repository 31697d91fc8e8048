"""SCAN "precomp" data: ``{split}_ims.npy`` + ``{split}_caps.txt``, memory-mapped.

Layout of a data folder (what SCAN/SGRAF/VSL users download for COCO and Flickr30K)::

    DIR/                      # or DIR/{dataset}_precomp/
      train_ims.npy           # float (N, regions, dim), e.g. (29000, 36, 2048), or (N, dim)
      train_caps.txt          # one caption per line, captions_per_image consecutive lines per image
      dev_ims.npy  dev_caps.txt
      test_ims.npy test_caps.txt        # COCO: testall_ims.npy/testall_caps.txt is the 5K test set

The feature file is opened with ``np.load(mmap_mode="r")``: only the rows of a batch are read, so
COCO's 113K x 36 x 2048 training file never has to fit in RAM. Caption files are read as SCAN reads
them (:func:`vsl_ext.caption_files.read_scan_captions`); how captions pair with feature rows (one row
per image, or some older releases' one row per caption) is decided and checked by
:func:`.layout.rows_per_image`.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ...caption_files import read_scan_captions
from .layout import rows_per_image
from .vocab import Vocabulary

SPLIT_ALIASES = {"val": "dev", "valid": "dev", "validation": "dev"}


def resolve_data_dir(data: str, dataset: Optional[str] = None) -> str:
    """``data`` itself if it holds ``*_caps.txt`` files, else ``data/{dataset}_precomp`` or ``data/{dataset}``."""
    if not os.path.isdir(data):
        raise FileNotFoundError(f"data folder not found: {data}")
    candidates = [data]
    if dataset:
        candidates += [os.path.join(data, f"{dataset}_precomp"), os.path.join(data, dataset)]
    for c in candidates:
        if os.path.isdir(c) and any(f.endswith("_caps.txt") for f in os.listdir(c)):
            return c
    tried = ", ".join(candidates)
    raise FileNotFoundError(f"no SCAN precomp files ({{split}}_caps.txt + {{split}}_ims.npy) found in: {tried}")


def split_paths(data_dir: str, split: str) -> Tuple[str, str]:
    split = SPLIT_ALIASES.get(split, split)
    return os.path.join(data_dir, f"{split}_ims.npy"), os.path.join(data_dir, f"{split}_caps.txt")


read_captions = read_scan_captions   # the one caption-file reader, under its old harness name


class PrecompSplit:
    """One split of a SCAN precomp folder.

    Args:
        data_dir: folder holding ``{split}_ims.npy`` and ``{split}_caps.txt``.
        split: ``train``, ``dev``, ``test``, ``testall``, ...
        vocab: vocabulary used to encode captions (None: build nothing, captions as text only).
        captions_per_image: consecutive caption lines per image (5 for COCO/Flickr30K). Image ``j``
            owns captions ``j * k .. j * k + k - 1``; the feature file holds one row per image or one
            per caption (verified copies), see :mod:`.layout`. Everything that pairs captions with
            images (:meth:`batch`, :meth:`epoch_batches`, :meth:`caption_groups`, the metrics) uses
            this split's ``captions_per_image``.
        mmap: memory-map the feature file (default) instead of reading it.

    Raises:
        FileNotFoundError: a file is missing. ValueError: bad features, undecodable captions, or
        counts that fit no layout (the message says which ``captions_per_image`` to pass).
    """

    def __init__(self, data_dir: str, split: str, vocab: Optional[Vocabulary] = None,
                 captions_per_image: int = 5, mmap: bool = True):
        ims_path, caps_path = split_paths(data_dir, split)
        missing = [p for p in (ims_path, caps_path) if not os.path.isfile(p)]
        if missing:
            present = sorted(f for f in os.listdir(data_dir) if f.endswith((".npy", ".txt"))) \
                if os.path.isdir(data_dir) else []
            raise FileNotFoundError(f"missing {' and '.join(missing)} (split {split!r}); "
                                    f"found in {data_dir}: {present or 'no .npy/.txt files'}")
        if isinstance(captions_per_image, bool) or not isinstance(captions_per_image, int) or captions_per_image < 1:
            raise ValueError(f"captions_per_image must be a positive int, got {captions_per_image!r}")
        self.split = split
        self.ims_path, self.caps_path = ims_path, caps_path
        self.captions_per_image = cpi = captions_per_image
        try:
            ims = np.load(ims_path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, EOFError) as exc:   # EOFError: an empty file
            raise ValueError(f"{ims_path} is not a plain numeric .npy array: {exc or 'empty file'}") from None
        if not isinstance(ims, np.ndarray):      # np.load opens .npz archives too
            if hasattr(ims, "close"):
                ims.close()
            raise ValueError(f"{ims_path} is a {type(ims).__name__} archive, not one .npy array (save the features "
                             "with np.save)")
        if ims.ndim not in (2, 3):
            raise ValueError(f"{ims_path} has shape {ims.shape}; expected (images, regions, dim) or (images, dim)")
        if not np.issubdtype(ims.dtype, np.floating):
            raise ValueError(f"{ims_path} has dtype {ims.dtype}; expected float features")
        if 0 in ims.shape:
            raise ValueError(f"{ims_path} is empty (shape {ims.shape}): every image needs at least one region of "
                             "at least one feature")
        self.ims = ims
        self.captions = read_scan_captions(caps_path)
        n_caps = len(self.captions)
        self.image_stride = rows_per_image(ims, self.captions, cpi, ims_path, caps_path)  # feature rows per image
        self.num_captions = n_caps
        self.num_images = n_caps // cpi
        self.num_regions = 1 if ims.ndim == 2 else ims.shape[1]
        self.img_dim = ims.shape[-1]
        self.vocab = vocab
        self.segmentation = None     # segmentation inputs, see segmentation.attach_segmentation
        self.tokens: Optional[List[np.ndarray]] = None
        if vocab is not None:
            self.tokens = [np.asarray(vocab.encode(c), dtype=np.int64) for c in self.captions]

    def __repr__(self) -> str:
        return (f"PrecompSplit({self.split!r}: {self.num_images} images x {self.num_regions} regions x "
                f"{self.img_dim}, {self.num_captions} captions)")

    def image_of_caption(self, caption_ids) -> np.ndarray:
        """int64 image id of each caption id (``caption_id // captions_per_image``)."""
        return np.asarray(caption_ids, dtype=np.int64) // self.captions_per_image

    def epoch_batches(self, batch_size: int, seed: int, epoch: int) -> List[np.ndarray]:
        """:func:`epoch_batches` over this split's images and captions per image."""
        return epoch_batches(self.num_images, self.captions_per_image, batch_size, seed, epoch)

    def captions_of_image(self, image_id: int) -> List[str]:
        c = self.captions_per_image
        return self.captions[image_id * c:(image_id + 1) * c]

    def caption_groups(self) -> List[List[str]]:
        return [self.captions_of_image(i) for i in range(self.num_images)]

    def images(self, image_ids):
        """float32 (B, regions, dim) features of the given images (rows read from the memory map); with
        segmentation inputs attached, a ``segmentation.SegmentedImages`` holding them too."""
        ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_images):
            raise IndexError(f"image id out of range [0, {self.num_images})")
        rows = ids * self.image_stride
        order = np.argsort(rows, kind="stable")          # sequential reads from the memory map
        feats = np.empty((len(rows),) + self.ims.shape[1:], dtype=np.float32)
        if len(rows):
            feats[order] = self.ims[rows[order]]
        t = torch.from_numpy(feats)
        t = t if t.dim() == 3 else t.unsqueeze(1)
        return t if self.segmentation is None else self.segmentation.attach(t, rows)

    def caption_tokens(self, caption_ids) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, L) padded token ids (0 = <pad>) and (B,) lengths."""
        if self.tokens is None:
            raise RuntimeError("this split was opened without a vocabulary")
        return pad_tokens([self.tokens[int(c)] for c in np.asarray(caption_ids).reshape(-1)])

    def batch(self, caption_ids) -> dict:
        """Everything a training/eval step needs for a batch of captions and their images."""
        caption_ids = np.asarray(caption_ids, dtype=np.int64)
        image_ids = self.image_of_caption(caption_ids)
        tokens, lengths = self.caption_tokens(caption_ids)
        return {"images": self.images(image_ids), "tokens": tokens, "lengths": lengths,
                "image_ids": image_ids, "caption_ids": caption_ids}


def pad_tokens(seqs: Sequence[np.ndarray]) -> Tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
    out = torch.zeros(len(seqs), int(lengths.max()) if len(seqs) else 0, dtype=torch.int64)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.from_numpy(np.asarray(s, dtype=np.int64))
    return out, lengths


def epoch_batches(num_images: int, captions_per_image: int, batch_size: int, seed: int, epoch: int) -> List[np.ndarray]:
    """The caption ids of every batch of one training epoch, a pure function of (seed, epoch).

    Every caption is visited once per epoch. The epoch is ``captions_per_image`` rounds; each round
    is a random permutation of the images with one not-yet-used caption each, so a batch inside a
    round never holds two captions of one image (a second caption of the same image would be a
    false negative for the triplet loss). At round boundaries, images of the previous round's tail
    are moved out of the next round's head when possible. A final batch smaller than half a batch
    is merged into the previous one (BatchNorm and VSL need more than one pair).
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2, got {batch_size}")
    rng = np.random.default_rng([int(seed), int(epoch), 0x5C4A])
    cpi = captions_per_image
    slots = np.argsort(rng.random((num_images, cpi)), axis=1)   # caption slot of image i in round r
    order: List[int] = []
    for r in range(cpi):
        perm = rng.permutation(num_images)
        tail_len = len(order) % batch_size
        if tail_len:
            tail = set(int(i) for i in np.asarray(order[-tail_len:]) // cpi)
            head = batch_size - tail_len
            for pos in range(min(head, num_images)):
                if int(perm[pos]) in tail:
                    for swap in range(head, num_images):
                        if int(perm[swap]) not in tail:
                            perm[pos], perm[swap] = perm[swap], perm[pos]
                            break
        order.extend((perm * cpi + slots[perm, r]).tolist())
    ids = np.asarray(order, dtype=np.int64)
    batches = [ids[i:i + batch_size] for i in range(0, len(ids), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < max(2, batch_size // 2):
        last = batches.pop()
        batches[-1] = np.concatenate([batches[-1], last])
    return batches
