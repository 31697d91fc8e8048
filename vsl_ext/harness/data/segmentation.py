"""Segmentation inputs of a SCAN precomp split, in the file layout of 3SHNet's release.

3SHNet (Ge et al., "3SHNet: Boosting Image-Sentence Retrieval via Visual Semantic-Spatial
Self-Highlighting", Information Processing and Management 2024; code XuriGe1995/3SHNet) feeds its
image encoder, besides the region features, three arrays per image computed by a panoptic
segmentation network (UPSNet, 133 COCO panoptic classes: 80 "things" + 53 "stuff"). They lie beside
the features, one file each per split, row ``k`` belonging to row ``k`` of ``{split}_ims.npy``::

    {split}_segmentations.npy   (N, C, h, w) float   per-class segmentation score maps ("score maps"),
                                                      release: (N, 133, 7, 7)
    {split}_seg_maps.npy        (N, H, W)    int or float  class id of every pixel ("label map"),
                                                      release: (N, 64, 64) (README and code; the
                                                      encoder's comment says 128 x 128)
    {split}_cat_onehots.npy     (N, C)       float/int/bool  which classes occur ("class presence"),
                                                      release: (N, 133)

Any C, (h, w) and (H, W) are accepted (the synthetic demo writes C = 30 classes, 4 x 4 score maps and
8 x 8 label maps); C must agree between the score maps and the class presence. The files are opened
with ``np.load(mmap_mode="r")`` like the region features, so only a batch's rows are read; every
batch is converted to float32. A missing, unreadable or misshaped file raises an error that names it.

:func:`attach_segmentation` hooks the three files into a :class:`~.precomp.PrecompSplit`, whose
``images()`` then returns :class:`SegmentedImages` (regions + segmentation inputs) instead of a bare
region tensor.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

SEGMENTATION_FILES = {"score_maps": "{split}_segmentations.npy", "label_map": "{split}_seg_maps.npy",
                      "class_presence": "{split}_cat_onehots.npy"}
_EXPECTED = {"score_maps": "(images, classes, h, w) float per-class score maps",
             "label_map": "(images, H, W) class id per pixel",
             "class_presence": "(images, classes) class presence (one-hot / multi-hot)"}
_NDIM = {"score_maps": 4, "label_map": 3, "class_presence": 2}


class SegmentedImages:
    """A batch of images with their segmentation inputs (the image side of ``3shnet``).

    Attributes (B images):
        regions: (B, R, img_dim) float32 region (or grid) features, zero-padded past ``region_lengths``.
        region_lengths: (B,) int64 number of valid regions per image (1 <= length <= R).
        label_map: (B, H, W) float32 class id per pixel.
        class_presence: (B, C) float32.
        score_maps: (B, C, h, w) float32.
    """

    __slots__ = ("regions", "region_lengths", "label_map", "class_presence", "score_maps")

    def __init__(self, regions: Tensor, label_map: Tensor, class_presence: Tensor, score_maps: Tensor,
                 region_lengths: Optional[Tensor] = None):
        if regions.dim() != 3:
            raise ValueError(f"regions must be (images, regions, dim), got shape {tuple(regions.shape)}")
        b, r = regions.shape[:2]
        if r < 1:
            raise ValueError("regions must hold at least one region per image")
        if region_lengths is None:
            region_lengths = torch.full((b,), r, dtype=torch.int64, device=regions.device)
        region_lengths = torch.as_tensor(region_lengths, device=regions.device).to(torch.int64)
        checks = (("region_lengths", region_lengths, 1), ("label_map", label_map, 3),
                  ("class_presence", class_presence, 2), ("score_maps", score_maps, 4))
        for name, t, ndim in checks:
            if t.dim() != ndim or t.shape[0] != b:
                raise ValueError(f"{name} must have {ndim} dims with {b} rows (one per image), "
                                 f"got shape {tuple(t.shape)}")
        if b and (int(region_lengths.min()) < 1 or int(region_lengths.max()) > r):
            raise ValueError(f"region_lengths must lie in [1, {r}], got {region_lengths.tolist()}")
        if class_presence.shape[1] != score_maps.shape[1]:
            raise ValueError(f"class_presence has {class_presence.shape[1]} classes but score_maps has "
                             f"{score_maps.shape[1]}")
        self.regions = regions
        self.region_lengths = region_lengths
        self.label_map = label_map.float()
        self.class_presence = class_presence.float()
        self.score_maps = score_maps.float()

    @classmethod
    def _unchecked(cls, regions, label_map, class_presence, score_maps, region_lengths) -> "SegmentedImages":
        out = cls.__new__(cls)
        out.regions, out.label_map, out.class_presence = regions, label_map, class_presence
        out.score_maps, out.region_lengths = score_maps, region_lengths
        return out

    def to(self, device) -> "SegmentedImages":
        return self._unchecked(self.regions.to(device), self.label_map.to(device), self.class_presence.to(device),
                               self.score_maps.to(device), self.region_lengths.to(device))

    def __len__(self) -> int:
        return self.regions.shape[0]

    def __getitem__(self, index) -> "SegmentedImages":
        """The images selected by ``index`` (a slice or index tensor), e.g. ``batch[i:i + 1]``."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return self._unchecked(self.regions[index], self.label_map[index], self.class_presence[index],
                               self.score_maps[index], self.region_lengths[index])

    @property
    def num_classes(self) -> int:
        return self.class_presence.shape[1]

    def __repr__(self) -> str:
        return (f"SegmentedImages(regions {tuple(self.regions.shape)}, label_map {tuple(self.label_map.shape)}, "
                f"class_presence {tuple(self.class_presence.shape)}, score_maps {tuple(self.score_maps.shape)})")


def segmentation_paths(data_dir: str, split: str) -> Dict[str, str]:
    """``{"score_maps": .., "label_map": .., "class_presence": ..}`` file paths of a split."""
    from .precomp import SPLIT_ALIASES

    split = SPLIT_ALIASES.get(split, split)
    return {k: os.path.join(data_dir, pattern.format(split=split)) for k, pattern in SEGMENTATION_FILES.items()}


def has_segmentation(data_dir: str, split: str) -> bool:
    return all(os.path.isfile(p) for p in segmentation_paths(data_dir, split).values())


class SegmentationSplit:
    """The three segmentation arrays of one split, memory-mapped and validated.

    Args:
        data_dir, split: where ``{split}_segmentations.npy``, ``{split}_seg_maps.npy`` and
            ``{split}_cat_onehots.npy`` lie.
        num_rows: rows the arrays must have (those of ``{split}_ims.npy``); None: not checked.
        mmap: memory-map the files (default) instead of reading them.

    Raises:
        FileNotFoundError: a file is missing (all missing ones are named).
        ValueError: a file is not a plain numeric .npy array, has the wrong number of dimensions or
            dtype, or its row or class count disagrees with the others or with ``num_rows``.
    """

    def __init__(self, data_dir: str, split: str, num_rows: Optional[int] = None, mmap: bool = True):
        self.paths = segmentation_paths(data_dir, split)
        missing = [p for p in self.paths.values() if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"missing segmentation input {' and '.join(missing)} (split {split!r}); the "
                                    f"3shnet model needs {', '.join(os.path.basename(p) for p in self.paths.values())} "
                                    f"beside the features (see docs/3shnet.md)")
        self.arrays: Dict[str, np.ndarray] = {}
        for key, path in self.paths.items():
            try:
                arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
            except ValueError as exc:
                raise ValueError(f"{path} is not a plain numeric .npy array: {exc}") from None
            if not isinstance(arr, np.ndarray):
                raise ValueError(f"{path} is not a single .npy array")
            if arr.ndim != _NDIM[key]:
                raise ValueError(f"{path} has shape {arr.shape}; expected {_EXPECTED[key]}")
            numeric = np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
            if not numeric or (key == "score_maps" and not np.issubdtype(arr.dtype, np.floating)):
                kind = "float" if key == "score_maps" else "numeric"
                raise ValueError(f"{path} has dtype {arr.dtype}; expected {kind} values ({_EXPECTED[key]})")
            if 0 in arr.shape:
                raise ValueError(f"{path} is empty (shape {arr.shape})")
            self.arrays[key] = arr
        rows = {k: a.shape[0] for k, a in self.arrays.items()}
        want = num_rows if num_rows is not None else rows["score_maps"]
        for key, n in rows.items():
            if n != want:
                what = "the image features" if num_rows is not None else os.path.basename(self.paths["score_maps"])
                raise ValueError(f"{self.paths[key]} has {n} rows but {what} have {want}: the segmentation files "
                                 f"need one row per row of {{split}}_ims.npy, in the same order")
        c_maps, c_presence = self.arrays["score_maps"].shape[1], self.arrays["class_presence"].shape[1]
        if c_maps != c_presence:
            raise ValueError(f"{self.paths['class_presence']} has {c_presence} classes but "
                             f"{self.paths['score_maps']} has {c_maps}")
        self.num_rows = want
        self.num_classes = c_maps
        self.score_shape: Tuple[int, int] = tuple(self.arrays["score_maps"].shape[2:])
        self.label_shape: Tuple[int, int] = tuple(self.arrays["label_map"].shape[1:])

    def signature(self) -> dict:
        """What a model trained on these inputs depends on (stored in checkpoints)."""
        return {"classes": self.num_classes, "score_maps": list(self.score_shape), "label_map": list(self.label_shape)}

    def rows(self, rows: np.ndarray) -> Dict[str, Tensor]:
        """float32 tensors of the given rows: label_map (B, H, W), class_presence (B, C), score_maps (B, C, h, w)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= self.num_rows):
            raise IndexError(f"segmentation row out of range [0, {self.num_rows})")
        order = np.argsort(rows, kind="stable")          # sequential reads from the memory maps
        out = {}
        for key, arr in self.arrays.items():
            block = np.empty((len(rows),) + arr.shape[1:], dtype=np.float32)
            if len(rows):
                block[order] = arr[rows[order]]
            out[key] = torch.from_numpy(block)
        return out

    def attach(self, regions: Tensor, rows: np.ndarray) -> SegmentedImages:
        """The region features of a batch together with the segmentation rows ``rows``."""
        parts = self.rows(rows)
        return SegmentedImages(regions, parts["label_map"], parts["class_presence"], parts["score_maps"])


def attach_segmentation(split, mmap: bool = True) -> SegmentationSplit:
    """Open the segmentation files of a :class:`~.precomp.PrecompSplit` and hook them into it: from
    then on ``split.images(ids)`` returns :class:`SegmentedImages`. Returns the opened files."""
    data_dir = os.path.dirname(split.ims_path)
    seg = SegmentationSplit(data_dir, split.split, num_rows=split.ims.shape[0], mmap=mmap)
    split.segmentation = seg
    return seg
