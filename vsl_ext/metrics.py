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

import contextlib
import functools
import io
import numbers
import warnings
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


# ------------------------------------------------------------------------------ semantic-aware metrics
ECCV_KEYS = ("eccv_r1", "eccv_map_at_r", "eccv_rprecision", "cxc_r1", "cxc_r5", "cxc_r10",
             "coco_5k_r1", "coco_5k_r5", "coco_5k_r10")
_ECCV_INSTALL = 'pip install "vsl_ext[eccv]"  (or: pip install eccv-caption)'
COCO_5K_SHAPE = (5000, 25000)


@functools.lru_cache(maxsize=1)
def _eccv_package():
    """eccv_caption's ``Metrics`` with its bundled annotations (loaded once, about 1 s)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "failed to import ujson": the standard json is used
            import eccv_caption
    except ImportError as exc:
        raise ImportError(f"eccv_caption_metrics needs the eccv-caption package: {_ECCV_INSTALL}") from exc
    return eccv_caption.Metrics()


def coco_5k_test_ids():
    """``(image_ids (5000,), caption_ids (25000,))``, int64 COCO ids of the COCO 5K test set in SCAN's
    testall order, from the eccv-caption package (its ``coco_test_ids`` and caption -> image
    annotations): caption ``c`` belongs to image ``c // 5``.

    Raises ImportError without eccv-caption, RuntimeError when its data do not group each image's
    five captions together (then the SCAN order cannot be verified).
    """
    m = _eccv_package()
    caption_ids = np.asarray(m.coco_ids, dtype=np.int64).reshape(-1)
    t2i = m.coco_gts["t2i"]
    try:
        owner = np.array([t2i[int(c)][0] for c in caption_ids], dtype=np.int64)
    except (KeyError, IndexError) as exc:
        raise RuntimeError(f"eccv_caption's data lack the image of caption {exc}; cannot verify SCAN's testall "
                           "order") from None
    grouped = owner.reshape(-1, 5) if owner.size == COCO_5K_SHAPE[1] else None
    if grouped is None or not (grouped == grouped[:, :1]).all() or len(np.unique(grouped[:, 0])) != COCO_5K_SHAPE[0]:
        raise RuntimeError("eccv_caption's coco_test_ids are not 5,000 images x 5 consecutive captions; "
                           "cannot verify SCAN's testall order")
    return grouped[:, 0].copy(), caption_ids


def _check_ids(ids, reference: np.ndarray, what: str) -> np.ndarray:
    if ids is None:
        return reference
    ids = np.asarray(ids)
    if ids.shape != reference.shape or not np.issubdtype(ids.dtype, np.integer) \
            or not np.array_equal(np.sort(ids), np.sort(reference)):
        raise ValueError(f"{what} must be the {reference.size:,} COCO ids of the COCO 5K test set's {what[:-4]}s "
                         "(a permutation of eccv_caption's), one per "
                         f"{'row' if what.startswith('image') else 'column'} of sims")
    return ids.astype(np.int64)


def _scores(scores: ArrayLike) -> torch.Tensor:
    """``scores`` as a CPU float32/float64 tensor (float16 and bfloat16 as float32, which holds them exactly)."""
    if isinstance(scores, torch.Tensor) and scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.detach().cpu().float()
    elif isinstance(scores, np.ndarray) and scores.dtype == np.float16:
        scores = scores.astype(np.float32)
    s = _as_tensor(scores)
    return s.cpu() if s.device.type != "cpu" else s


def top_ranked(scores: ArrayLike, k: int, chunk_elements: int = 1 << 24) -> np.ndarray:
    """The ``k`` best-scored columns of each row, best first: ``(rows, k)`` int64 column indices.

    The order is that of a stable descending sort (``np.argsort(-row, kind="stable")[:k]``): equal
    scores in column order; NaN counts as ``-inf``. ``torch.topk`` picks the top ``k + 1`` of each row;
    a row whose k-th and (k+1)-th scores tie is redone exactly (its tied columns in column order).
    ``chunk_elements`` bounds the scores copied at a time.
    """
    s = _scores(scores)
    n, m = s.shape
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= m:
        raise ValueError(f"k must be an integer in [1, {m}], got {k!r}")
    k = int(k)
    out = np.empty((n, k), dtype=np.int64)
    rows = max(1, chunk_elements // m)
    for a in range(0, n, rows):
        x = s[a:a + rows].contiguous()
        if torch.isnan(x).any():
            x = torch.nan_to_num(x, nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
        vals, idx = torch.topk(x, min(k + 1, m), dim=1, sorted=True)
        vals, idx = vals.numpy(), idx.numpy()
        order = np.lexsort((idx, -vals), axis=1)                 # score descending, then column
        out[a:a + rows] = np.take_along_axis(idx, order, axis=1)[:, :k]
        if k < m:
            xn = x.numpy()
            for r in np.flatnonzero(vals[:, k - 1] == vals[:, k]):  # ties across the k-th place
                kth = vals[r, k - 1]
                cand = np.concatenate([np.flatnonzero(xn[r] > kth), np.flatnonzero(xn[r] == kth)])[:k]
                out[a + r] = cand[np.lexsort((cand, -xn[r, cand]))]
    return out


def eccv_caption_metrics(sims: ArrayLike, *, image_ids=None, caption_ids=None) -> Dict[str, Dict[str, float]]:
    """ECCV Caption, CxC and COCO 5K retrieval scores of a COCO 5K test similarity matrix.

    ECCV Caption (Chun et al., "ECCV Caption: Correcting False Negatives by Collecting
    Machine-and-Human-verified Image-Caption Associations for MS-COCO", ECCV 2022) re-annotated
    COCO's test set with the plausible matches that R@K counts as misses. The scores are those of
    the ``eccv-caption`` package (``eccv_caption.Metrics().compute_all_metrics``), which bundles the
    ECCV Caption, CxC (Parekh et al., EACL 2021) and COCO annotations; this function ranks the
    captions of every image and the images of every caption and hands the rankings to it.

    Args:
        sims: (5000, 25000) image x caption similarities, numpy or torch (any device, any real
            dtype), rows and columns in SCAN's testall order (caption ``c`` belongs to image
            ``c // 5``) unless ``image_ids``/``caption_ids`` say otherwise.
        image_ids: optional (5000,) COCO image ids of the rows (a permutation of the test set's).
        caption_ids: optional (25000,) COCO caption ids of the columns (a permutation of the test set's).

    Rankings sort scores in descending order; equal scores keep row/column order (a stable sort)
    and NaN counts as ``-inf``.

    Returns:
        ``{metric: {"i2t": float, "t2i": float}}`` for :data:`ECCV_KEYS`: ``eccv_r1``,
        ``eccv_map_at_r``, ``eccv_rprecision`` (ECCV Caption R@1, mAP@R, R-Precision), ``cxc_r1/5/10``
        and ``coco_5k_r1/5/10``, each a fraction in [0, 1] (not a percentage), as the package returns them.

    Raises:
        ImportError: eccv-caption is not installed (``pip install "vsl_ext[eccv]"``).
        ValueError: ``sims`` is not (5000, 25000), or the ids are not the test set's.
        TypeError: ``sims`` is not a real-valued numpy array or tensor.
        RuntimeError: the package's data cannot confirm SCAN's testall order.
    """
    s = _scores(sims)
    if tuple(s.shape) != COCO_5K_SHAPE:
        raise ValueError(f"sims must be the COCO 5K test similarity matrix, (5000 images, 25000 captions) in SCAN's "
                         f"testall order (testall_caps.txt: caption c of image c // 5), got shape {tuple(s.shape)}")
    package = _eccv_package()
    scan_images, scan_captions = coco_5k_test_ids()
    image_ids = _check_ids(image_ids, scan_images, "image_ids")
    caption_ids = _check_ids(caption_ids, scan_captions, "caption_ids")
    # The package reads a query's first max(K, R) items (R: its ECCV positives), never more.
    longest = max([len(v) for gts in (package.eccv_gts, package.cxc_gts, package.coco_gts)
                   for v in gts["i2t"].values()] + [10])
    i2t_top = caption_ids[top_ranked(s, longest)]
    longest = max([len(v) for gts in (package.eccv_gts, package.cxc_gts, package.coco_gts)
                   for v in gts["t2i"].values()] + [10])
    t2i_top = image_ids[top_ranked(s.t(), longest)]
    i2t = {int(q): row.tolist() for q, row in zip(image_ids, i2t_top)}
    t2i = {int(q): row.tolist() for q, row in zip(caption_ids, t2i_top)}
    with contextlib.redirect_stderr(io.StringIO()):  # the package's progress bars
        scores = package.compute_all_metrics(i2t, t2i, target_metrics=("eccv_r1", "eccv_map_at_r", "eccv_rprecision",
                                                                       "cxc_recalls", "coco_5k_recalls"),
                                             Ks=(1, 5, 10), verbose=False)
    return {k: {d: float(scores[k][d]) for d in ("i2t", "t2i")} for k in ECCV_KEYS}


def format_eccv_metrics(m: Dict[str, Dict[str, float]]) -> str:
    """One line, percentages: ``ECCV mAP@R i/t  R-P i/t  R@1 i/t  CxC R@1/5/10 ...  COCO 5K R@1/5/10 ...``."""
    def pair(k):
        return f"{100 * m[k]['i2t']:.1f}/{100 * m[k]['t2i']:.1f}"

    def triple(p, d):
        return "/".join(f"{100 * m[f'{p}_r{k}'][d]:.1f}" for k in (1, 5, 10))
    return (f"ECCV mAP@R {pair('eccv_map_at_r')}  R-P {pair('eccv_rprecision')}  R@1 {pair('eccv_r1')} (i2t/t2i)  "
            f"CxC R@1/5/10 i2t {triple('cxc', 'i2t')} t2i {triple('cxc', 't2i')}  "
            f"COCO 5K R@1/5/10 i2t {triple('coco_5k', 'i2t')} t2i {triple('coco_5k', 't2i')}")


def _semantic_pair(sims: ArrayLike, semantic: ArrayLike, captions_per_image: int):
    s, c = _scores(sims), _scores(semantic)
    n_img, n_cap = s.shape
    _check_layout(n_img, n_cap, captions_per_image)
    if tuple(c.shape) != (n_img, n_img):
        raise ValueError(f"semantic must be the ({n_img}, {n_img}) image x image similarity C of the sims' "
                         f"{n_img} images (CaptionIndex.image_similarity), got shape {tuple(c.shape)}")
    nan = float("-inf")
    return torch.nan_to_num(s, nan=nan), torch.nan_to_num(c, nan=nan)


def _ordinal_ranks(x: torch.Tensor, chunk_elements: int) -> torch.Tensor:
    """1-based ranks of each row's entries in descending order, ties in column order (int64)."""
    out = torch.empty(x.shape, dtype=torch.int64)
    rows = max(1, chunk_elements // max(1, x.shape[1]))
    ranks = torch.arange(1, x.shape[1] + 1, dtype=torch.int64)
    for a in range(0, x.shape[0], rows):
        order = torch.sort(x[a:a + rows].contiguous(), dim=1, descending=True, stable=True).indices
        out[a:a + rows].scatter_(1, order, ranks.expand_as(order).contiguous())
    return out


def average_semantic_precision(sims: ArrayLike, semantic: ArrayLike, captions_per_image: int = 5, *,
                               chunk_elements: int = 1 << 24) -> Dict[str, float]:
    """ASP, the agreement of the similarity ranking with the semantic ranking that DAA reports (Li et
    al., "A Differentiable Semantic Metric Approximation in Probabilistic Embedding for Cross-Modal
    Retrieval", NeurIPS 2022; ``ASP_compute`` in VL-Group/2022-NeurIPS-DAA).

    For a query q (an image for i2t, a caption for t2i) and every item i of the other modality,
    ``R_S(i)`` is i's 1-based rank by ``sims`` and ``R_C(i)`` its rank by the semantic similarity;
    ``ASP_q = mean_i min(R_S, R_C) / max(R_S, R_C)`` and ASP is 100 times the mean over queries.
    The semantic similarity of image i and caption c is ``semantic[i, c // captions_per_image]``,
    VSL's image-level C. Ranks are descending with ties in index order (DAA's ``argsort`` leaves
    their order unspecified); NaN counts as ``-inf``.

    Args:
        sims: (N, N * captions_per_image) image x caption similarities (numpy or torch, real).
        semantic: (N, N) image x image semantic similarity C, e.g. ``CaptionIndex.image_similarity``.

    Returns:
        ``{"i2t": float, "t2i": float}`` in percent, [0, 100].

    Raises ValueError for shapes that do not match (or sims with other than N * captions_per_image
    columns), TypeError for non-real inputs.
    """
    s, c = _semantic_pair(sims, semantic, captions_per_image)
    cpi = int(captions_per_image)
    n_img, n_cap = s.shape
    # i2t: the captions of image j share C[i, j]; ties in caption order = images in index order, then
    # the image's captions in order, so R_C(c) = cpi * (R_C,img(c // cpi) - 1) + c % cpi + 1.
    c_img = _ordinal_ranks(c, chunk_elements)                                   # (N, N)
    within = torch.arange(n_cap, dtype=torch.int64) % cpi
    totals = {"i2t": 0.0, "t2i": 0.0}
    rows = max(1, chunk_elements // n_cap)
    for a in range(0, n_img, rows):
        r_s = _ordinal_ranks(s[a:a + rows], chunk_elements).double()
        r_c = (cpi * (c_img[a:a + rows].repeat_interleave(cpi, dim=1) - 1) + within + 1).double()
        totals["i2t"] += float((torch.minimum(r_s, r_c) / torch.maximum(r_s, r_c)).mean(dim=1).sum())
    c_img_t = _ordinal_ranks(c.t(), chunk_elements)
    cols = max(1, chunk_elements // n_img)
    for a in range(0, n_cap, cols):
        r_s = _ordinal_ranks(s[:, a:a + cols].t(), chunk_elements).double()     # (c, N): caption queries
        r_c = c_img_t[torch.arange(a, min(n_cap, a + cols)) // cpi].double()  # C[:, c // cpi]
        totals["t2i"] += float((torch.minimum(r_s, r_c) / torch.maximum(r_s, r_c)).mean(dim=1).sum())
    return {"i2t": 100.0 * totals["i2t"] / n_img, "t2i": 100.0 * totals["t2i"] / n_cap}


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks of each row's entries, ties sharing their mean rank (float64, 0-based), as Spearman uses."""
    v, order = torch.sort(x, dim=1, stable=True)
    n_rows, n = v.shape
    new = torch.ones_like(v, dtype=torch.bool)
    new[:, 1:] = v[:, 1:] != v[:, :-1]
    run = torch.cumsum(new.flatten(), 0) - 1                                      # global run id
    pos = torch.arange(n, dtype=torch.float64).repeat(n_rows)
    n_runs = int(run[-1]) + 1
    first = torch.full((n_runs,), float("inf"), dtype=torch.float64).scatter_reduce(0, run, pos, "amin")
    last = torch.full((n_runs,), -1.0, dtype=torch.float64).scatter_reduce(0, run, pos, "amax")
    mean_rank = ((first + last) / 2)[run].view(n_rows, n)
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def rank_agreement(sims: ArrayLike, semantic: ArrayLike, captions_per_image: int = 5, *,
                   chunk_rows: int = 256) -> float:
    """Mean Spearman correlation between each image's row of S and its row of C (the "rank agreement
    of S with C" of vsl-time-kernels' demos).

    ``S[i, j]`` is the mean similarity of image i to image j's captions (``sims`` averaged over each
    image's ``captions_per_image`` columns) and C the (N, N) image x image semantic similarity.
    Spearman's rho of two rows is the Pearson correlation of their ranks, ties sharing their mean
    rank (as ``scipy.stats.spearmanr``); a row of constant values has no correlation and counts as 0.
    NaN counts as ``-inf``.

    Returns a float in [-1, 1]. Raises ValueError/TypeError as :func:`average_semantic_precision`.
    """
    s, c = _semantic_pair(sims, semantic, captions_per_image)
    n_img = s.shape[0]
    s_img = s.double().view(n_img, n_img, int(captions_per_image)).mean(dim=2)
    total = 0.0
    for a in range(0, n_img, max(1, int(chunk_rows))):
        ra, rc = _average_ranks(s_img[a:a + chunk_rows]), _average_ranks(c[a:a + chunk_rows].double())
        ra = ra - ra.mean(dim=1, keepdim=True)
        rc = rc - rc.mean(dim=1, keepdim=True)
        den = torch.sqrt((ra * ra).sum(dim=1) * (rc * rc).sum(dim=1))
        rho = torch.where(den > 0, (ra * rc).sum(dim=1) / torch.where(den > 0, den, 1.0), 0.0)
        total += float(rho.sum())
    return total / n_img
