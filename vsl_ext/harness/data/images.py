"""Hand-crafted region features for raw photos (no pretrained weights needed).

Each image is resized to ``size`` x ``size`` and cut into a ``grid`` x ``grid`` grid of regions plus
one whole-image region. Every region is described by

* a joint HSV colour histogram (8 hue x 3 saturation x 3 value bins, L1-normalised, square-rooted),
* a HOG-style descriptor: unsigned gradient orientations (9 bins, magnitude-weighted) in 2 x 2
  sub-cells, L2-normalised and clipped at 0.2 then renormalised (Dalal-Triggs block normalisation),
* the mean and standard deviation of R, G, B.

That is 72 + 36 + 6 = 114 numbers per region. Decoding needs Pillow (``pip install pillow``).
"""
from __future__ import annotations

import numpy as np

HUE_BINS, SAT_BINS, VAL_BINS = 8, 3, 3
ORIENT_BINS, HOG_CELLS = 9, 2
FEATURE_DIM = HUE_BINS * SAT_BINS * VAL_BINS + ORIENT_BINS * HOG_CELLS * HOG_CELLS + 6


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading images needs Pillow: pip install pillow (or pip install 'vsl_ext[train]')") from None
    return Image


def load_image(path: str, size: int) -> tuple:
    """(rgb float32 (size, size, 3) in [0, 1], hsv uint8 (size, size, 3))."""
    Image = _pil()
    with Image.open(path) as im:
        im = im.convert("RGB").resize((size, size), Image.BILINEAR)
        rgb = np.asarray(im, dtype=np.float32) / 255.0
        hsv = np.asarray(im.convert("HSV"), dtype=np.uint8)
    return rgb, hsv


def _colour_hist(hsv: np.ndarray) -> np.ndarray:
    h = (hsv[..., 0].astype(np.int64) * HUE_BINS) >> 8
    s = (hsv[..., 1].astype(np.int64) * SAT_BINS) >> 8
    v = (hsv[..., 2].astype(np.int64) * VAL_BINS) >> 8
    idx = (h * SAT_BINS + s) * VAL_BINS + v
    hist = np.bincount(idx.ravel(), minlength=HUE_BINS * SAT_BINS * VAL_BINS).astype(np.float32)
    return np.sqrt(hist / max(1.0, hist.sum()))


def _gradients(gray: np.ndarray):
    gx = np.zeros_like(gray)
    gy = np.zeros_like(gray)
    gx[:, 1:-1] = gray[:, 2:] - gray[:, :-2]
    gy[1:-1, :] = gray[2:, :] - gray[:-2, :]
    mag = np.hypot(gx, gy)
    ang = np.mod(np.arctan2(gy, gx), np.pi)                       # unsigned orientation in [0, pi)
    bins = np.minimum((ang / np.pi * ORIENT_BINS).astype(np.int64), ORIENT_BINS - 1)
    return mag, bins


def _hog(mag: np.ndarray, bins: np.ndarray) -> np.ndarray:
    h, w = mag.shape
    out = []
    for i in range(HOG_CELLS):
        for j in range(HOG_CELLS):
            sl = (slice(i * h // HOG_CELLS, (i + 1) * h // HOG_CELLS),
                  slice(j * w // HOG_CELLS, (j + 1) * w // HOG_CELLS))
            out.append(np.bincount(bins[sl].ravel(), weights=mag[sl].ravel(), minlength=ORIENT_BINS))
    v = np.concatenate(out).astype(np.float32)
    v /= np.sqrt((v ** 2).sum() + 1e-6)
    v = np.minimum(v, 0.2)
    return v / np.sqrt((v ** 2).sum() + 1e-6)


def region_features(rgb: np.ndarray, hsv: np.ndarray, grid: int = 4) -> np.ndarray:
    """(grid * grid + 1, FEATURE_DIM) float32: grid cells row by row, then the whole image."""
    size = rgb.shape[0]
    gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    mag, bins = _gradients(gray)
    boxes = [(slice(i * size // grid, (i + 1) * size // grid), slice(j * size // grid, (j + 1) * size // grid))
             for i in range(grid) for j in range(grid)]
    boxes.append((slice(0, size), slice(0, size)))
    feats = np.empty((len(boxes), FEATURE_DIM), dtype=np.float32)
    for r, sl in enumerate(boxes):
        px = rgb[sl].reshape(-1, 3)
        feats[r] = np.concatenate([_colour_hist(hsv[sl]), _hog(mag[sl], bins[sl]), px.mean(0), px.std(0)])
    return feats


def image_features(path: str, grid: int = 4, size: int = 192) -> np.ndarray:
    rgb, hsv = load_image(path, size)
    return region_features(rgb, hsv, grid)
