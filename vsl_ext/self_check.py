"""The installation self-check, ``python -m vsl_ext``: what was built, what is there, and whether every
kernel family computes its formula on every usable device.

It prints the versions (vsl_ext, :func:`vsl_ext.build_info`, torch, CUDA, Python), the devices
(GPUs with their compute capability) and the threads, then checks, on the CPU and on each GPU that
torch and vsl_ext's CUDA kernels can both use:

* ``sigmoid_rank``: both algorithms ("dense", "sorted") and both directions, ranks and their
  gradient, on float32 matrices whose rows cross the CPU's dense/sorted switch (64 columns), the CUDA
  kernels' 256-thread block and 1,024-column tile, and CUDA's automatic switch (2,048 columns);
* ``vsl_loss``: both variants ("row", "public-code") and both algorithms, the loss and its gradients
  with respect to S and C, at n = 6, 70 and 130 (on a GPU also 300 and 1,030);
* ``smooth_ap_loss``: both algorithms, the loss and its gradient, tau = 0.01, on relevance with a query
  without relevant references and an all-relevant one, rows across the CUDA kernels' 256-thread block
  and 1,024-column tile;
* ``CaptionIndex``: tf-idf and CIDEr-D image and caption similarities of a small corpus.

Every result is compared with an independent float64 computation of its formula: the ranks and
losses by the pure-PyTorch formulas of :mod:`vsl_ext.reference` (evaluated a block of rows at a
time, on the device checked), the caption index by plain-Python tf-idf and CIDEr-D
(:func:`tfidf_similarity`, :func:`cider_d_similarity`). On a GPU each result is also compared with
the CPU kernels'. The
tolerances are the test suite's: relative 1e-5 for ranks and losses, 1e-5 of the largest entry for
gradients, 1e-5 absolute (+ 1e-5 relative) for similarities. Finally it times one forward+backward
of ``vsl_loss`` at n = 1,024 per device.

The last line is ``vsl_ext self-check: PASS`` or ``vsl_ext self-check: FAIL (...)`` naming each
failed check (device, op, algorithm or mode, direction or variant, forward or backward); the exit
code is 0 or 1. It calls the public API only (``vsl_ext.sigmoid_rank``, ``vsl_ext.vsl_loss``,
``vsl_ext.smooth_ap_loss``, ``vsl_ext.CaptionIndex``), as a user's program does. ``--require-cuda``
makes a machine whose GPU cannot be checked fail (the GPU session's use); without it, the reason CUDA
is not checked is printed and the CPU result decides.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

import numpy as np
import torch

TAU = 1e-3
RTOL = 1e-5        # ranks and losses, relative (tests/helpers.py: check_rank, check_loss)
LOSS_ATOL = 1e-6   # losses, absolute
GRAD_RTOL = 1e-5   # gradients, relative to the gradient's largest entry
SIM_TOL = 1e-5     # similarities, absolute and relative
# (rows, cols) of the rank checks: a small matrix; rows across the CPU's dense/sorted switch (64
# columns); across the CUDA kernels' 256-thread block and 1,024-column tile; past CUDA's automatic
# switch to the sorted algorithm (2,048 columns).
RANK_SHAPES = ((5, 7), (9, 70), (3, 1030), (2, 2100))
# n of the loss checks: across the CPU's dense/sorted switch; on a GPU also across the CUDA kernels'
# 256-thread block and 1,024-column tile (the float64 formula then runs on the GPU: n^3 work)
LOSS_SIZES = (6, 70, 130)
LOSS_SIZES_CUDA = (6, 70, 300, 1030)
SMOOTH_AP_TAU = 0.01
SMOOTH_AP_SHAPES = ((5, 7), (9, 70), (3, 1030))  # rows across the CUDA block (256) and tile (1,024)
TIMED_N = 1024
ROW_BLOCK_ELEMENTS = 2_000_000  # float64 elements of one (rows, cols, cols) block of the reference


# ----------------------------------------------------------------------------------------- results
@dataclass
class Check:
    """One kernel family on one device, against the float64 formula (and the CPU kernels on a GPU)."""

    name: str                 # "cpu sigmoid_rank sorted descending backward"
    worst: float = 0.0        # largest error / tolerance over the sizes (<= 1 passes)
    failures: List[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def compare(self, what: str, actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> None:
        """Record max |actual - expected| / (atol + rtol |expected|) over the entries; > 1 fails."""
        actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
        if actual.shape != expected.shape:
            self.failures.append(f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
            self.worst = math.inf
            return
        bound = atol + rtol * expected.abs()
        excess = ((actual - expected).abs() / bound).nan_to_num(nan=math.inf)
        ratio = float(excess.max()) if excess.numel() else 0.0
        self.worst = max(self.worst, ratio)
        if not ratio <= 1.0:
            at = np.unravel_index(int(excess.argmax()), tuple(excess.shape)) if excess.dim() else ()
            idx = tuple(int(i) for i in at)
            self.failures.append(f"{what}: {float(actual[idx]):.9g} at {list(idx)}, expected "
                                 f"{float(expected[idx]):.9g} (error {ratio:.3g}x the tolerance)")


# ----------------------------------------------------------------------------------- float64 formulas
def _row_blocks(rows: int, cols: int) -> Iterator[slice]:
    step = max(1, ROW_BLOCK_ELEMENTS // max(1, cols * cols))
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))


def rank_formula(m: torch.Tensor, grad: torch.Tensor, descending: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """float64 ranks of m's rows and d sum(grad * R) / dm by :func:`vsl_ext.reference.sigmoid_rank`,
    a block of rows at a time (rows are independent)."""
    from . import reference

    m, grad = m.detach().double(), grad.double()
    ranks, dm = torch.empty_like(m), torch.empty_like(m)
    for b in _row_blocks(*m.shape):
        x = m[b].clone().requires_grad_(True)
        r = reference.sigmoid_rank(x, TAU, descending)
        (dm[b],) = torch.autograd.grad(r, x, grad[b])
        ranks[b] = r.detach()
    return ranks, dm


def _public_code_ranks(x_rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """The published code's rank of a block of rows b of S: ``SR[b, c] = 1 + sum_{a != c} sig((S[a, b] -
    S[b, c]) / tau)`` with its clamped sigmoid, given the rows ``S[b, :]`` and the columns ``S[:, b]``
    (as rows), both (B, n)."""
    from . import reference

    n = x_rows.shape[1]
    terms = reference.public_code_sigmoid(columns.unsqueeze(1) - x_rows.unsqueeze(2), TAU)  # [b, c, a]
    off_diagonal = 1.0 - torch.eye(n, dtype=x_rows.dtype, device=x_rows.device)
    return (terms * off_diagonal).sum(dim=-1) + 1.0


def loss_formula(s: torch.Tensor, c: torch.Tensor, variant: str) -> Tuple[float, torch.Tensor, torch.Tensor]:
    """float64 VSL ``1 - mean(min(SR, CR) / max(SR, CR))`` and its gradients with respect to S and C, a
    block of rows at a time: the row variant ranks rows (:func:`vsl_ext.reference.sigmoid_rank`), the
    public-code variant ranks S[b, c] against column b of S (:func:`vsl_ext.reference.public_code_vsl_loss`,
    whose whole-matrix form needs n^3 memory)."""
    from . import reference

    s64 = s.detach().double().requires_grad_(True)
    c64 = c.detach().double().requires_grad_(True)
    n = s.shape[0]
    total = 0.0
    grads = [torch.zeros_like(s64), torch.zeros_like(c64)]
    for b in _row_blocks(n, n):
        if variant == "row":
            sr, cr = reference.sigmoid_rank(s64[b], TAU), reference.sigmoid_rank(c64[b], TAU)
        else:
            sr = _public_code_ranks(s64[b], s64.t()[b])
            cr = _public_code_ranks(c64[b], c64.t()[b])
        part = (torch.minimum(sr, cr) / torch.maximum(sr, cr)).sum()
        for acc, g in zip(grads, torch.autograd.grad(part, (s64, c64))):
            acc += g
        total += float(part.detach())
    scale = -1.0 / (n * n)
    return 1.0 + total * scale, grads[0] * scale, grads[1] * scale


_TFIDF_TOKEN = re.compile(r"(?u)\b\w\w+\b")


def tfidf_similarity(groups: Sequence[Sequence[str]], caption_ids: Sequence[int],
                     image_ids: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """float64 (caption, image) similarity of CaptionIndex mode "tfidf", from the definition:
    lowercased tokens ``(?u)\\b\\w\\w+\\b``, idf ``ln((1 + N) / (1 + df)) + 1`` over the N captions,
    l2-normalised caption vectors; caption similarity their dot product, image similarity the mean
    over the two images' caption pairs."""
    captions = [c for g in groups for c in g]
    counts = [Counter(_TFIDF_TOKEN.findall(c.lower())) for c in captions]
    df = Counter(t for cnt in counts for t in cnt)
    idf = {t: math.log((1 + len(captions)) / (1 + d)) + 1.0 for t, d in df.items()}
    vectors = []
    for cnt in counts:
        v = {t: k * idf[t] for t, k in cnt.items()}
        norm = math.sqrt(sum(x * x for x in v.values()))
        vectors.append({t: x / norm for t, x in v.items()} if norm > 0 else {})

    def dot(p, q):
        return sum(x * q.get(t, 0.0) for t, x in p.items())

    owner = [i for i, g in enumerate(groups) for _ in g]
    caps_of = [[p for p in range(len(captions)) if owner[p] == i] for i in range(len(groups))]
    cap_sim = np.array([[dot(vectors[a], vectors[b]) for b in caption_ids] for a in caption_ids])
    img_sim = np.array([[np.mean([dot(vectors[p], vectors[q]) for p in caps_of[i] for q in caps_of[j]])
                         for j in image_ids] for i in image_ids])
    return cap_sim, img_sim


def cider_d_similarity(groups: Sequence[Sequence[str]], caption_ids: Sequence[int], image_ids: Sequence[int],
                       sigma: float = 6.0, max_order: int = 4) -> Tuple[np.ndarray, np.ndarray]:
    """float64 (caption, image) similarity of CaptionIndex mode "cider-d", from pycocoevalcap's
    definition: whitespace tokens, n-grams 1..4, document frequency over images, weights ``tf * (ln
    images - ln max(1, df))``, per order ``sum min(w_p, w_q) w_q / (|w_p| |w_q|)`` times a Gaussian
    penalty (sigma) on the difference in bigram counts, mean over orders, x10. Caption similarity
    [a, b] is caption a scored against the single reference b; image similarity the mean over the
    two images' caption pairs."""
    captions = [c for g in groups for c in g]

    def ngrams(text):
        words = text.split()
        return Counter(tuple(words[i:i + k]) for k in range(1, max_order + 1) for i in range(len(words) - k + 1))

    counts = [ngrams(c) for c in captions]
    owner = [i for i, g in enumerate(groups) for _ in g]
    df = Counter(g for i in range(len(groups)) for g in set().union(*(counts[p] for p in range(len(captions))
                                                                      if owner[p] == i)))
    log_images = math.log(len(groups))
    weights, norms, lengths = [], [], []
    for cnt in counts:
        w = {g: k * (log_images - math.log(max(1.0, df[g]))) for g, k in cnt.items()}
        weights.append(w)
        norms.append([math.sqrt(sum(x * x for g, x in w.items() if len(g) == k)) for k in range(1, max_order + 1)])
        lengths.append(sum(k for g, k in cnt.items() if len(g) == 2))

    def score(p, q):
        penalty = math.exp(-((lengths[p] - lengths[q]) ** 2) / (2 * sigma * sigma))
        total = 0.0
        for k in range(1, max_order + 1):
            val = sum(min(x, weights[q].get(g, 0.0)) * weights[q].get(g, 0.0)
                      for g, x in weights[p].items() if len(g) == k)
            if norms[p][k - 1] != 0 and norms[q][k - 1] != 0:
                val /= norms[p][k - 1] * norms[q][k - 1]
            total += val * penalty
        return 10.0 * total / max_order

    caps_of = [[p for p in range(len(captions)) if owner[p] == i] for i in range(len(groups))]
    cap_sim = np.array([[score(a, b) for b in caption_ids] for a in caption_ids])
    img_sim = np.array([[np.mean([score(p, q) for p in caps_of[i] for q in caps_of[j]]) for j in image_ids]
                        for i in image_ids])
    return cap_sim, img_sim


# ------------------------------------------------------------------------------------------- inputs
def rank_input(shape: Tuple[int, int], seed: int) -> torch.Tensor:
    """float32 rows with most pairs inside the sigmoid's window (spread of a few tau), exact ties
    (every third column on a grid of 2 tau) and one row of widely spread values (saturated pairs)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 5 * TAU
    x[:, ::3] = torch.round(x[:, ::3] / (2 * TAU)) * (2 * TAU)
    x[-1] = torch.rand(shape[1], generator=g, dtype=torch.float64)
    return (x + 0.5).float()


def loss_inputs(n: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """float32 (S, C): S image-text similarities within a few tau, C symmetric with ties (as tf-idf's)."""
    g = torch.Generator().manual_seed(seed)
    s = 0.2 + torch.randn(n, n, generator=g, dtype=torch.float64) * 5 * TAU
    levels = torch.randint(0, 8, (n, n), generator=g).double() * 4 * TAU
    return s.float(), ((levels + levels.t()) / 2).float()


def smooth_ap_inputs(shape: Tuple[int, int], seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """float32 sims within a few tau of each other (tau = 0.01) and a bool relevance with a query without
    relevant references (skipped) and, from 2 rows, an all-relevant query (AP 1, gradient 0)."""
    g = torch.Generator().manual_seed(seed)
    sims = 0.5 + torch.randn(shape, generator=g, dtype=torch.float64) * 5 * SMOOTH_AP_TAU
    relevant = torch.rand(shape, generator=g) < 0.3
    relevant[0] = False
    relevant[-1, 0] = True
    if shape[0] > 2:
        relevant[1] = True
    return sims.float(), relevant


def smooth_ap_formula(sims: torch.Tensor, relevant: torch.Tensor) -> Tuple[float, torch.Tensor]:
    """The Smooth-AP loss and its gradient by :func:`vsl_ext.reference.smooth_ap_loss` in float64."""
    from . import reference

    x = sims.double().requires_grad_(True)
    loss = reference.smooth_ap_loss(x, relevant, SMOOTH_AP_TAU)
    (grad,) = torch.autograd.grad(loss, x)
    return float(loss.detach()), grad


CAPTIONS = [
    ["A man riding a horse on the beach .", "a man rides a horse , a horse !", "Horse and rider at sunset"],
    ["Two dogs play in the snow", "two dogs playing in snow snow snow", "..."],
    ["a man riding a bike down the street", "A man on a bicycle", "a cat on a bike"],
    ["the cat sat on the mat", "a cat on a mat", "the mat the cat the hat", "Café naïve déjà vu"],
    ["a dog runs on the beach", "a brown dog on a beach at sunset"],
]


# ------------------------------------------------------------------------------------------- checks
def _rank_checks(device: str, checks: Dict[str, Check], seed: int, versus_cpu: Optional[bool] = None) -> None:
    """Records the rank checks on ``device`` in ``checks``; ``versus_cpu`` (default: on a GPU) also
    compares with the CPU kernels' results."""
    import vsl_ext

    versus_cpu = device != "cpu" if versus_cpu is None else versus_cpu
    for shape_no, shape in enumerate(RANK_SHAPES):
        m = rank_input(shape, seed + shape_no)
        grad = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 100 + shape_no))
        for descending in (True, False):
            want_r, want_g = rank_formula(m.to(device), grad.to(device), descending)
            direction = "descending" if descending else "ascending"
            for algorithm in ("dense", "sorted"):
                fwd = checks.setdefault(f"{device} sigmoid_rank {algorithm} {direction} forward",
                                        Check(f"{device} sigmoid_rank {algorithm} {direction} forward"))
                bwd = checks.setdefault(f"{device} sigmoid_rank {algorithm} {direction} backward",
                                        Check(f"{device} sigmoid_rank {algorithm} {direction} backward"))
                x = m.to(device).requires_grad_(True)
                r = vsl_ext.sigmoid_rank(x, TAU, descending, algorithm=algorithm)
                (gx,) = torch.autograd.grad(r, x, grad.to(device))
                size = f"{shape[0]}x{shape[1]}"
                fwd.compare(f"ranks {size}", r, want_r, RTOL, 0.0)
                bwd.compare(f"gradient {size}", gx, want_g, 0.0, GRAD_RTOL * float(want_g.abs().max()) + 1e-10)
                if versus_cpu:
                    xc = m.clone().requires_grad_(True)
                    rc = vsl_ext.sigmoid_rank(xc, TAU, descending, algorithm=algorithm)
                    (gc,) = torch.autograd.grad(rc, xc, grad)
                    fwd.compare(f"ranks {size} vs CPU kernels", r, rc, RTOL, 0.0)
                    bwd.compare(f"gradient {size} vs CPU kernels", gx, gc, 0.0,
                                GRAD_RTOL * float(gc.abs().max()) + 1e-10)


def _loss_checks(device: str, checks: Dict[str, Check], seed: int, versus_cpu: Optional[bool] = None) -> None:
    """Records the loss checks on ``device`` in ``checks`` (``versus_cpu`` as for the rank checks)."""
    import vsl_ext

    versus_cpu = device != "cpu" if versus_cpu is None else versus_cpu
    for n in (LOSS_SIZES if device == "cpu" else LOSS_SIZES_CUDA):
        s, c = loss_inputs(n, seed + n)
        for variant in ("row", "public-code"):
            want, want_ds, want_dc = loss_formula(s.to(device), c.to(device), variant)
            for algorithm in ("dense", "sorted"):
                name = f"{device} vsl_loss {variant} {algorithm}"
                fwd = checks.setdefault(f"{name} forward", Check(f"{name} forward"))
                bwd = checks.setdefault(f"{name} backward", Check(f"{name} backward"))
                results = []
                for on in ([device, "cpu"] if versus_cpu else [device]):
                    x, y = s.to(on).requires_grad_(True), c.to(on).requires_grad_(True)
                    loss = vsl_ext.vsl_loss(x, y, TAU, variant, algorithm=algorithm)
                    results.append((loss, *torch.autograd.grad(loss, (x, y))))
                loss, ds, dc = results[0]
                fwd.compare(f"loss n={n}", loss, torch.tensor(want), RTOL, LOSS_ATOL)
                for label, got, expected in (("dS", ds, want_ds), ("dC", dc, want_dc)):
                    bwd.compare(f"{label} n={n}", got, expected, 0.0, GRAD_RTOL * float(expected.abs().max()) + 1e-10)
                if versus_cpu:
                    cpu_result = results[1]
                    fwd.compare(f"loss n={n} vs CPU kernels", loss, cpu_result[0], RTOL, LOSS_ATOL)
                    for label, got, expected in (("dS", ds, cpu_result[1]), ("dC", dc, cpu_result[2])):
                        bwd.compare(f"{label} n={n} vs CPU kernels", got, expected, 0.0,
                                    GRAD_RTOL * float(expected.abs().max()) + 1e-10)


def _smooth_ap_checks(device: str, checks: Dict[str, Check], seed: int, versus_cpu: Optional[bool] = None) -> None:
    """Records the Smooth-AP checks on ``device`` in ``checks`` (``versus_cpu`` as for the rank checks)."""
    import vsl_ext

    versus_cpu = device != "cpu" if versus_cpu is None else versus_cpu
    for shape_no, shape in enumerate(SMOOTH_AP_SHAPES):
        sims, relevant = smooth_ap_inputs(shape, seed + shape_no)
        want, want_grad = smooth_ap_formula(sims.to(device), relevant.to(device))
        size = f"{shape[0]}x{shape[1]}"
        for algorithm in ("dense", "sorted"):
            name = f"{device} smooth_ap_loss {algorithm}"
            fwd = checks.setdefault(f"{name} forward", Check(f"{name} forward"))
            bwd = checks.setdefault(f"{name} backward", Check(f"{name} backward"))
            results = []
            for on in ([device, "cpu"] if versus_cpu else [device]):
                x = sims.to(on).requires_grad_(True)
                loss = vsl_ext.smooth_ap_loss(x, relevant.to(on), SMOOTH_AP_TAU, algorithm=algorithm)
                results.append((loss, torch.autograd.grad(loss, x)[0]))
            loss, grad = results[0]
            fwd.compare(f"loss {size}", loss, torch.tensor(want), RTOL, LOSS_ATOL)
            bwd.compare(f"gradient {size}", grad, want_grad, 0.0, GRAD_RTOL * float(want_grad.abs().max()) + 1e-10)
            if versus_cpu:
                fwd.compare(f"loss {size} vs CPU kernels", loss, results[1][0], RTOL, LOSS_ATOL)
                bwd.compare(f"gradient {size} vs CPU kernels", grad, results[1][1], 0.0,
                            GRAD_RTOL * float(results[1][1].abs().max()) + 1e-10)


def _caption_checks(device: str, checks: Dict[str, Check], versus_cpu: Optional[bool] = None) -> None:
    """Records the caption index checks on ``device`` in ``checks`` (``versus_cpu`` as for the rank checks)."""
    from .caption_index import CaptionIndex

    versus_cpu = device != "cpu" if versus_cpu is None else versus_cpu
    image_ids = [0, 3, 1, 4, 2, 3]  # repeats, as training batches may hold
    caption_ids = [0, 5, 1, 9, 12, 3, 14, 7]
    for mode, formula in (("tfidf", tfidf_similarity), ("cider-d", cider_d_similarity)):
        check = checks.setdefault(f"{device} CaptionIndex {mode}", Check(f"{device} CaptionIndex {mode}"))
        index = CaptionIndex.from_captions(CAPTIONS, mode=mode)
        want_caps, want_images = formula(CAPTIONS, caption_ids, image_ids)
        got_images = index.image_similarity(image_ids, device=device)
        got_caps = index.caption_similarity(caption_ids, device=device)
        check.compare("image similarity", got_images, torch.from_numpy(want_images), SIM_TOL, SIM_TOL)
        check.compare("caption similarity", got_caps, torch.from_numpy(want_caps), SIM_TOL, SIM_TOL)
        if versus_cpu:
            check.compare("image similarity vs CPU kernels", got_images, index.image_similarity(image_ids),
                          SIM_TOL, SIM_TOL)
            check.compare("caption similarity vs CPU kernels", got_caps, index.caption_similarity(caption_ids),
                          SIM_TOL, SIM_TOL)


def _synchronize(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize(device)


def time_loss(device: str, n: int = TIMED_N, repeats: int = 3) -> float:
    """Seconds of one ``vsl_loss`` forward+backward (row variant, algorithm "auto", float32) at n,
    the best of ``repeats`` after one untimed call."""
    import vsl_ext

    s, c = loss_inputs(n, 7)
    s, c = s.to(device), c.to(device)
    best = math.inf
    for i in range(repeats + 1):
        x = s.clone().requires_grad_(True)
        _synchronize(device)
        start = time.perf_counter()
        vsl_ext.vsl_loss(x, c).backward()
        _synchronize(device)
        if i:
            best = min(best, time.perf_counter() - start)
    return best


# ------------------------------------------------------------------------------------- environment
def cuda_devices() -> Tuple[List[str], str]:
    """(the GPUs whose kernels can be checked, as torch device names; why CUDA is not checked, or "")."""
    from ._native import build_info

    info = build_info()
    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            return [], f"torch {torch.__version__} is a CPU-only build"
        return [], f"torch (CUDA {torch.version.cuda}) sees no GPU"
    if not info["cuda"]:
        return [], "vsl_ext was built without CUDA kernels (no nvcc at install time; VSL_EXT_CUDA=1 pip install .)"
    if not info["cuda_devices"]:
        return [], f"vsl_ext's CUDA kernels see no GPU: {info['cuda_error']}"
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())], ""


def _cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(out: TextIO) -> None:
    """The versions, the build, the devices and the threads."""
    from ._native import build_info
    from ._version import __version__

    info = build_info()
    out.write(f"vsl_ext {__version__} self-check\n")
    out.write("build: " + ", ".join(f"{k}={info[k]!r}" for k in sorted(info) if k != "version") + "\n")
    out.write(f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}), numpy {np.__version__}, "
              f"Python {platform.python_version()} on {platform.machine()} {platform.system()}\n")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out.write(f"threads: torch {torch.get_num_threads()} intra-op, {cpus} CPUs usable "
              f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})\n")
    out.write(f"device cpu: {_cpu_model()}\n")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out.write(f"device cuda:{i}: {p.name}, compute capability {p.major}.{p.minor}, "
                      f"{p.total_memory / 2**30:.0f} GiB\n")


# --------------------------------------------------------------------------------------------- main
FAMILIES = ("sigmoid_rank", "vsl_loss", "smooth_ap_loss", "CaptionIndex")


def run(out: TextIO = sys.stdout, require_cuda: bool = False, timing: bool = True,
        only: Sequence[str] = FAMILIES) -> bool:
    """Prints the description and the checks of the kernel families ``only`` (some of :data:`FAMILIES`)
    to ``out``; True if all passed (see the module docstring)."""
    describe(out)
    gpus, why_not = cuda_devices()
    problems: List[str] = []
    if why_not:
        out.write(f"CUDA not checked: {why_not}\n")
        if require_cuda:
            problems.append(f"CUDA not checked: {why_not}")
    checks: Dict[str, Check] = {}
    families: List[Tuple[str, Callable[[str, Dict[str, Check]], None]]] = [
        ("sigmoid_rank", lambda d, c: _rank_checks(d, c, seed=11)),
        ("vsl_loss", lambda d, c: _loss_checks(d, c, seed=23)),
        ("smooth_ap_loss", lambda d, c: _smooth_ap_checks(d, c, seed=31)),
        ("CaptionIndex", _caption_checks),
    ]
    start = time.perf_counter()
    for device in ["cpu", *gpus]:
        for family, check in families:
            if family not in only:
                continue
            try:
                check(device, checks)
            except Exception as exc:  # a crash is a failure of that family on that device
                name = f"{device} {family}"
                checks[name] = Check(name, math.inf, [f"raised {type(exc).__name__}: {exc}"])
    for c in checks.values():
        status = "ok  " if c.passed else "FAIL"
        out.write(f"  {status} {c.name:<48} worst error {c.worst:.2g}x the tolerance\n")
        for failure in c.failures[:3]:
            out.write(f"       {failure}\n")
    out.write(f"checks: {len(checks)} in {time.perf_counter() - start:.1f} s\n")
    problems += [c.name for c in checks.values() if not c.passed]
    if timing:
        for device in ["cpu", *gpus]:
            try:
                seconds = time_loss(device)
                out.write(f"timing: {device} vsl_loss forward+backward, n = {TIMED_N}: {seconds * 1e3:.1f} ms\n")
            except Exception as exc:
                out.write(f"timing: {device} raised {type(exc).__name__}: {exc}\n")
                problems.append(f"{device} vsl_loss timing")
    if problems:
        out.write("Please report this to vsl_ext's maintainers (an issue in its repository) with the whole "
                  "output above and how vsl_ext was installed (pip command, version or commit).\n")
        out.write(f"vsl_ext self-check: FAIL ({'; '.join(problems)})\n")
    else:
        out.write("vsl_ext self-check: PASS\n")
    out.flush()
    return not problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m vsl_ext [--require-cuda] [--no-timing] [--only FAMILY ...]``: exit code 0 (PASS) or 1
    (FAIL)."""
    parser = argparse.ArgumentParser(prog="python -m vsl_ext", description="vsl_ext's installation self-check: "
                                     "the build, the devices, and every kernel against its float64 formula.")
    parser.add_argument("--require-cuda", action="store_true", help="fail if the CUDA kernels cannot be checked")
    parser.add_argument("--no-timing", action="store_true", help="skip the n = 1,024 timing")
    parser.add_argument("--only", nargs="+", choices=FAMILIES, default=FAMILIES, metavar="FAMILY",
                        help=f"check only these kernel families ({', '.join(FAMILIES)}; default: all)")
    args = parser.parse_args(argv)
    return 0 if run(sys.stdout, require_cuda=args.require_cuda, timing=not args.no_timing, only=args.only) else 1
