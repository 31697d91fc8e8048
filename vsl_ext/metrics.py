"""Image-text retrieval metrics: Recall@K and median rank, the SCAN/SGRAF protocol.

``sims`` is an (N images x M captions) matrix; caption ``c`` belongs to image ``c // captions_per_image``
(the SCAN "precomp" order). Ranks are 0-based counts of wrong items scored at least as high:

* image -> text: the image's rank is the rank of its best-ranked true caption, i.e. the number of
  other images' captions scored ``>=`` its best true caption;
* text -> image: a caption's rank is the number of other images scored ``>=`` its true image.

Without ties this is exactly SCAN's ``argsort`` protocol; ties are broken against the true item
(pessimistic, so a constant similarity matrix scores R@K = 0, never 100). Infinities are ordinary
scores (``+inf`` tied with ``+inf`` counts against the true item, as any tie does). NaN is resolved
against the true item too, so it never makes a rank better: a NaN true score counts as ``-inf``
(every other item, ``-inf`` included, is scored at least as high) and a wrong item with a NaN
score counts as scored above the true item; a NaN matrix scores R@K = 0.
R@K is the percentage of queries with rank < K, medr = floor(median rank) + 1, rsum is the sum of
the six recalls. Large matrices (COCO 5K: 5,000 x 25,000) are processed in row/column chunks, so
the extra memory is bounded by ``chunk_elements`` booleans.
"""
from __future__ import annotations

import numbers
from typing import Dict, Sequence, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]

KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "i2t_medr", "t2i_medr", "rsum")
PROTOCOLS = ("full", "coco1k", "coco5k", "f30k1k")


def _as_tensor(sims: ArrayLike) -> torch.Tensor:
    if isinstance(sims, np.ndarray):
        real = np.issubdtype(sims.dtype, np.floating) or np.issubdtype(sims.dtype, np.integer)
        if sims.dtype == np.bool_ or not real:
            raise TypeError(f"sims must hold real numbers, got a numpy array of dtype {sims.dtype}")
        if sims.dtype not in (np.float32, np.float64):  # float16, longdouble, integers: as float64
            sims = _exact_float64(sims)
        t = torch.from_numpy(np.ascontiguousarray(sims))
    elif isinstance(sims, torch.Tensor):
        t = sims.detach()
    else:
        raise TypeError(f"sims must be a numpy array or torch.Tensor, got {type(sims).__name__}")
    if t.dim() != 2:
        raise ValueError(f"sims must be a 2-D (images x captions) matrix, got shape {tuple(t.shape)}")
    if t.dtype == torch.bool or t.dtype.is_complex:
        raise TypeError(f"sims must hold real numbers, got dtype {t.dtype}")
    if t.dtype not in (torch.float32, torch.float64):  # float16, bfloat16, integers: as float64
        t = torch.from_numpy(_exact_float64(t.cpu().numpy())) if not t.dtype.is_floating_point else t.double()
    return t


def _exact_float64(a: np.ndarray) -> np.ndarray:
    """``a`` as float64, refusing integers that float64 would round (ranks compare exact scores)."""
    if np.issubdtype(a.dtype, np.integer) and a.size and max(abs(int(a.max())), abs(int(a.min()))) > 2 ** 53:
        raise ValueError(f"sims holds integers beyond 2**53 (dtype {a.dtype}), which float64 cannot compare exactly; "
                         "pass floating-point scores")
    return a.astype(np.float64)


def _true_scores(t: torch.Tensor) -> torch.Tensor:
    """A true item's scores as the ranks compare them: NaN as -inf (the worst score)."""
    return torch.nan_to_num(t, nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))


def _at_least(scores: torch.Tensor, true_score: torch.Tensor) -> torch.Tensor:
    """Which wrong items count against the true item: scored >= it, or NaN."""
    return (scores >= true_score) | torch.isnan(scores)


def _check_layout(n_img: int, n_cap: int, captions_per_image: int) -> None:
    if isinstance(captions_per_image, bool) or not isinstance(captions_per_image, numbers.Integral) \
            or captions_per_image < 1:
        raise ValueError(f"captions_per_image must be a positive int, got {captions_per_image!r}")
    if n_img == 0:
        raise ValueError("sims must be non-empty")
    if n_cap != n_img * captions_per_image:
        raise ValueError(f"sims has shape ({n_img}, {n_cap}) but {n_img} images with {captions_per_image} "
                         f"captions each need {n_img * captions_per_image} caption columns")


def ranks(sims: ArrayLike, captions_per_image: int = 5, chunk_elements: int = 1 << 25):
    """0-based ranks: ``(i2t_ranks (N,), t2i_ranks (M,))`` as int64 numpy arrays (see module doc)."""
    s = _as_tensor(sims)
    n_img, n_cap = s.shape
    _check_layout(n_img, n_cap, captions_per_image)
    cpi = int(captions_per_image)

    i2t = torch.empty(n_img, dtype=torch.int64)
    rows = max(1, chunk_elements // n_cap)
    for a in range(0, n_img, rows):
        b = min(n_img, a + rows)
        block = s[a:b]                                             # (r, M)
        own = block.view(b - a, n_img, cpi)                        # (r, N, cpi)
        idx = torch.arange(a, b)
        best = _true_scores(own[torch.arange(b - a), idx]).max(dim=1).values  # (r,) best true caption score
        ge = _at_least(own, best.view(-1, 1, 1)).sum(dim=2)        # (r, N) per image: captions >= best
        ge[torch.arange(b - a), idx] = 0                           # the image's own captions are not wrong
        i2t[a:b] = ge.sum(dim=1)

    t2i = torch.empty(n_cap, dtype=torch.int64)
    cols = max(1, chunk_elements // n_img)
    for a in range(0, n_cap, cols):
        b = min(n_cap, a + cols)
        block = s[:, a:b]                                          # (N, c)
        truth = torch.arange(a, b) // cpi
        true_score = _true_scores(block[truth, torch.arange(b - a)])  # (c,)
        ge = _at_least(block, true_score.view(1, -1))
        ge[truth, torch.arange(b - a)] = False
        t2i[a:b] = ge.sum(dim=0)
    return i2t.numpy(), t2i.numpy()


def _summary(r: np.ndarray, prefix: str) -> Dict[str, float]:
    out = {f"{prefix}_r{k}": 100.0 * float(np.mean(r < k)) for k in (1, 5, 10)}
    out[f"{prefix}_medr"] = float(np.floor(np.median(r)) + 1)
    out[f"{prefix}_meanr"] = float(r.mean() + 1)
    return out


def recall_at_k(sims: ArrayLike, captions_per_image: int = 5, *, chunk_elements: int = 1 << 25) -> Dict[str, float]:
    """Recall@{1,5,10} (percent) both directions, median/mean ranks and rsum for one test set.

    Args:
        sims: (N, N * captions_per_image) image-caption similarities, numpy or torch (any device).
        captions_per_image: consecutive captions per image (5 for COCO and Flickr30K).
        chunk_elements: bound on the temporary boolean block size.

    Returns:
        dict with ``i2t_r1, i2t_r5, i2t_r10, t2i_r1, t2i_r5, t2i_r10, i2t_medr, t2i_medr, rsum``
        (plus ``i2t_meanr``, ``t2i_meanr``).
    """
    s = _as_tensor(sims)
    if s.device.type != "cpu":
        s = s.cpu()
    i2t, t2i = ranks(s, captions_per_image, chunk_elements)
    out = {**_summary(i2t, "i2t"), **_summary(t2i, "t2i")}
    out["rsum"] = sum(out[k] for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"))
    return out


def recall_at_k_folds(sims: ArrayLike, folds: int, captions_per_image: int = 5) -> Dict[str, float]:
    """Mean of :func:`recall_at_k` over ``folds`` equal consecutive image folds (COCO 1K: 5 folds of
    1,000 images of the 5K test set, each against its own 5,000 captions), as SGRAF reports it."""
    s = _as_tensor(sims)
    n_img = s.shape[0]
    if folds < 1 or n_img % folds:
        raise ValueError(f"{n_img} images cannot be split into {folds} equal folds")
    size = n_img // folds
    results = []
    for f in range(folds):
        block = s[f * size:(f + 1) * size, f * size * captions_per_image:(f + 1) * size * captions_per_image]
        results.append(recall_at_k(block, captions_per_image))
    return {k: float(np.mean([r[k] for r in results])) for k in results[0]}


def evaluate_protocol(sims: ArrayLike, protocol: str = "full", captions_per_image: int = 5) -> Dict[str, float]:
    """Metrics under a named protocol.

    * ``full``: all images and captions at once.
    * ``coco1k``: mean over 5 folds of 1,000 images (needs the 5,000-image COCO test set, or any
      multiple of 1,000 images: one fold per 1,000).
    * ``coco5k``: all 5,000 COCO test images (same as ``full``; checks the size).
    * ``f30k1k``: the 1,000 Flickr30K test images (same as ``full``; checks the size).
    """
    s = _as_tensor(sims)
    n_img = s.shape[0]
    if protocol == "full":
        return recall_at_k(s, captions_per_image)
    if protocol == "coco1k":
        if n_img % 1000:
            raise ValueError(f"coco1k needs a multiple of 1,000 images (the 5K test set), got {n_img}")
        return recall_at_k_folds(s, n_img // 1000, captions_per_image)
    if protocol in ("coco5k", "f30k1k"):
        expected = 5000 if protocol == "coco5k" else 1000
        if n_img != expected:
            raise ValueError(f"{protocol} evaluates {expected} images, got {n_img}; use protocol='full'")
        return recall_at_k(s, captions_per_image)
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


def format_metrics(m: Dict[str, float], keys: Sequence[str] = KEYS) -> str:
    """One line: ``i2t R@1/5/10 a/b/c  t2i R@1/5/10 d/e/f  medr x/y  rsum z``."""
    return (f"i2t R@1/5/10 {m['i2t_r1']:.1f}/{m['i2t_r5']:.1f}/{m['i2t_r10']:.1f}  "
            f"t2i R@1/5/10 {m['t2i_r1']:.1f}/{m['t2i_r5']:.1f}/{m['t2i_r10']:.1f}  "
            f"medr {m['i2t_medr']:.0f}/{m['t2i_medr']:.0f}  rsum {m['rsum']:.1f}")
