"""Benchmark cases of bench_sigmoid_rank.py and bench_vsl_loss.py: what runs, on which inputs, and how
much memory the reference would need.

Shared by the pytest suite (timing, CUDA memory) and the CPU memory probe (``_rss_server``), so a
case is a plain dict that both sides turn into the same callable with :func:`make_call`.
"""
from __future__ import annotations

import functools
import math
import weakref
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from . import _peers
from ._env import COCO_CAPTIONS

N_FULL = [32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
# --quick: on CPU under 3 minutes on 2 cores (every op, implementation and peer once, at n = 128,
# forward+backward only: each torch.compile case costs ~10 s of compiling there); on CUDA the rows of
# the one-command GPU session (benchmarks/gpu_session.sh): vsl_loss forward+backward, n = 128 to 16,384.
N_QUICK = {"cpu": [128], "cuda": [128, 1024, 4096, 16384]}
QUICK_PASSES = ("forward+backward",)
MAIN_OPS = (("sigmoid_rank", None), ("vsl_loss", "row"), ("vsl_loss", "public-code"))
QUICK_MAIN_OPS = {"cpu": MAIN_OPS, "cuda": MAIN_OPS[1:]}
# Issue 6's large-n section: dense vs sorted paths of our kernels, on CPU and on CUDA.
N_LARGE_FULL = {"cpu": [32, 64, 128, 256, 512, 1024, 2048, 4096],
                "cuda": [256, 512, 1024, 2048, 4096, 8192, 16384]}
N_LARGE_QUICK = {"cpu": [64, 128], "cuda": [256, 1024]}
# The window section: dense vs sorted on rows whose share of pairs inside the +-30 tau window is set,
# at a few n: where the sorted algorithm stops paying off (sets the CUDA auto rule, csrc/vsl_constants.h).
N_WINDOW_FULL = {"cpu": [256, 1024], "cuda": [1024, 2048, 4096, 8192]}
N_WINDOW_QUICK = {"cpu": [256], "cuda": [1024]}
WINDOW_FRACTIONS = (0.01, 0.03, 0.1, 0.25, 0.5, 0.75, 1.0)
WINDOW_FRACTIONS_QUICK = (0.01, 1.0)
SECTIONS = ("main", "large-n", "window")

PASSES = ("forward", "forward+backward")
EMBED_DIM = 1024
DIAGONAL_BOOST = 0.5  # matching image-text pairs are more similar than the rest
SEED = 1234
CAPTIONS_FILE = COCO_CAPTIONS / "testall_caps.txt"


# ---------------------------------------------------------------------------------------------- cases
def label(case: dict) -> str:
    """Series name in tables and plots."""
    if case["impl"] == "vsl_ext":
        name = "vsl_ext"
        if case["op"] == "vsl_loss":
            name += " " + case["variant"]
        if case["algorithm"] != "auto":
            name += " " + case["algorithm"]
        return name
    if case["impl"] in _peers.PEERS:
        name = _peers.PEERS[case["impl"]][0]
        return name + " public-code" if case["variant"] == "public-code" else name
    if case["op"] == "vsl_loss":
        return "public_code_vsl_loss" if case["variant"] == "public-code" else "reference row"
    return "reference"


def case_id(case: dict) -> str:
    p = "fwd" if case["pass"] == "forward" else "fwdbwd"
    window = f"-w{case['window']:g}" if case.get("window") is not None else ""
    return f"{case['section']}-{case['op']}-{p}-{label(case).replace(' ', '_')}-n{case['n']}{window}"


def series_key(case: dict) -> tuple:
    """Cases that differ only in n (used to extrapolate run time from the previous n)."""
    return tuple((k, case[k]) for k in ("section", "op", "impl", "variant", "algorithm", "pass", "device"))


def make_cases(device: str, quick: bool, max_n: Optional[int] = None,
               sections: Sequence[str] = SECTIONS) -> List[dict]:
    """All rank cases in run order: section by section as listed, each in ascending n (so a series'
    time can be extrapolated from its previous n)."""
    def case(section, op, impl, variant, algorithm, pas, n, window=None):
        return {"suite": "rank", "section": section, "op": op, "impl": impl, "variant": variant,
                "algorithm": algorithm, "pass": pas, "n": n, "device": device, "window": window}

    def main():
        ops = QUICK_MAIN_OPS[device] if quick else MAIN_OPS
        for n in (N_QUICK[device] if quick else N_FULL):
            for pas in (QUICK_PASSES if quick else PASSES):
                for op, variant in ops:
                    yield case("main", op, "vsl_ext", variant, "auto", pas, n)
                    yield case("main", op, "reference", variant, None, pas, n)
                    for peer in _peers.PEERS_OF[(op, variant)]:
                        if device in _peers.PEERS[peer][1]:
                            yield case("main", op, peer, variant, None, pas, n)

    def large_n():
        for n in (N_LARGE_QUICK if quick else N_LARGE_FULL)[device]:
            for op in ("sigmoid_rank", "vsl_loss"):
                for algorithm in ("dense", "sorted"):
                    yield case("large-n", op, "vsl_ext", "row" if op == "vsl_loss" else None, algorithm,
                               "forward+backward", n)

    def window():
        for n in (N_WINDOW_QUICK if quick else N_WINDOW_FULL)[device]:
            for fraction in (WINDOW_FRACTIONS_QUICK if quick else WINDOW_FRACTIONS):
                for algorithm in ("dense", "sorted"):
                    yield case("window", "sigmoid_rank", "vsl_ext", None, algorithm, "forward+backward", n,
                               fraction)

    makers = {"main": main, "large-n": large_n, "window": window}
    unknown = [s for s in sections if s not in makers]
    if unknown:
        raise ValueError(f"sections: unknown {unknown}; expected some of {list(SECTIONS)}")
    cases = [c for s in dict.fromkeys(sections) for c in makers[s]()]
    if max_n is not None:
        cases = [c for c in cases if c["n"] <= max_n]
    return cases


# ---------------------------------------------------------------------------------------------- inputs
@functools.lru_cache(maxsize=1)
def caption_index():
    """CaptionIndex over COCO 5K-test captions, or None when the data or the class is unavailable."""
    if not CAPTIONS_FILE.exists():
        return None
    try:
        from vsl_ext import CaptionIndex
    except ImportError:
        return None
    return CaptionIndex.from_scan_file(CAPTIONS_FILE, captions_per_image=5, mode="tfidf")


def semantic_source() -> str:
    index = caption_index()
    if index is None:
        return "symmetric random matrix with ties (COCO captions or CaptionIndex unavailable)"
    return (f"CaptionIndex tf-idf image similarity of random COCO 5K-test images ({CAPTIONS_FILE.name}, "
            f"{len(index)} images; batches larger than that repeat images)")


def make_inputs(n: int, device: str = "cpu") -> Dict[str, torch.Tensor]:
    """Training-like (S, C) and an upstream gradient G for sigmoid_rank, all float32 (n, n)."""
    g = torch.Generator().manual_seed(SEED + n)
    images = torch.nn.functional.normalize(torch.randn(n, EMBED_DIM, generator=g), dim=1)
    texts = torch.nn.functional.normalize(torch.randn(n, EMBED_DIM, generator=g), dim=1)
    S = images.to(device) @ texts.to(device).t()
    S.diagonal().add_(DIAGONAL_BOOST)
    index = caption_index()
    if index is not None:
        perm = torch.randperm(len(index), generator=g)
        ids = perm[torch.arange(n) % len(index)]
        C = index.image_similarity(ids).to(device)
    else:
        levels = torch.randint(0, 16, (n, n), generator=g).float() / 16  # many exact ties, like CIDEr/tf-idf
        C = torch.triu(levels, 1)
        C = (C + C.t()).fill_diagonal_(1.0).to(device)
    G = torch.randn(n, n, generator=g).to(device)
    return {"S": S.contiguous(), "C": C.contiguous(), "G": G.contiguous()}


def window_input(n: int, fraction: float, device: str = "cpu", tau: float = 1e-3) -> torch.Tensor:
    """(n, n) float32 rows of i.i.d. uniform values on [0, L], with L chosen so that the expected share
    of a row's pairs within the float32 window (+-30 tau) is ``fraction``: for uniform values that
    share is 2x - x^2 with x = 30 tau / L."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction: expected a value in (0, 1], got {fraction}")
    from vsl_ext._native import _C

    half_window = _C.SATURATION["float32"] * tau
    spread = half_window / (1.0 - math.sqrt(1.0 - fraction))
    g = torch.Generator().manual_seed(SEED + n + round(fraction * 1e6))
    return (torch.rand(n, n, generator=g) * spread).to(device).contiguous()


# ---------------------------------------------------------------------------------------------- callables
def make_call(case: dict, inputs: Dict[str, torch.Tensor]) -> Callable[[], None]:
    """One call of the case: a forward, or a forward and backward from a fresh leaf. A window-section
    case ranks :func:`window_input` (made here, before the call) instead of S."""
    run = make_run(case, inputs)

    def call():
        run()
    return call


def make_run(case: dict, inputs: Dict[str, torch.Tensor]) -> Callable[[], tuple]:
    """The case's call returning (value, gradient with respect to S or None): what the checks compare
    (``_peers.check_error``)."""
    import vsl_ext
    from vsl_ext import reference

    S, C, G = inputs["S"], inputs["C"], inputs["G"]
    if case.get("window") is not None:
        S = window_input(case["n"], case["window"], str(S.device))
    op, impl, variant, algorithm = case["op"], case["impl"], case["variant"], case["algorithm"]
    if op == "sigmoid_rank":
        if impl == "vsl_ext":
            def f(s):
                return vsl_ext.sigmoid_rank(s, algorithm=algorithm)
        elif impl in _peers.PEERS:
            f = _peers.function(impl, op, variant)
        else:
            f = reference.sigmoid_rank
    elif impl == "vsl_ext":
        def f(s):
            return vsl_ext.vsl_loss(s, C, variant=variant, algorithm=algorithm)
    elif impl in _peers.PEERS:
        peer_loss = _peers.function(impl, op, variant)

        def f(s):
            return peer_loss(s, C)
    else:
        ref = reference.public_code_vsl_loss if variant == "public-code" else reference.vsl_loss

        def f(s):
            return ref(s, C)

    if case["pass"] == "forward":
        def run():
            with torch.no_grad():
                return f(S), None
    else:
        def run():
            s = S.detach().requires_grad_(True)
            out = f(s)
            if out.dim() == 0:
                out.backward()
            else:
                out.backward(G)
            return out, s.grad
    return run


def warm_up_lazy_imports() -> None:
    """Pay the one-time cost of the first custom-op call (torch.library imports ~800 modules, ~3 s)
    on meta tensors: nothing is computed, so no OpenMP pool starts and forking stays safe."""
    n = 8
    inputs = {k: torch.zeros(n, n, device="meta") for k in ("S", "C", "G")}
    seen = set()
    for case in make_cases("cpu", quick=True, max_n=None):
        if case["impl"] in _peers.PEERS:  # compiled kernels do not take meta tensors
            continue
        key = (case["op"], case["impl"], case["variant"], case["pass"])
        if key not in seen:
            seen.add(key)
            make_call(dict(case, algorithm="auto" if case["impl"] == "vsl_ext" else None), inputs)()


# ---------------------------------------------------------------------------------------------- n^3 memory
class _CubeTracker(torch.utils._python_dispatch.TorchDispatchMode):
    """Peak number of bytes held by simultaneously live storages of at least ``threshold`` bytes."""

    def __init__(self, threshold: int):
        super().__init__()
        self.threshold, self.live, self.current, self.peak = threshold, {}, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes >= self.threshold and key not in self.live:
                self.live[key] = nbytes
                self.current += nbytes
                self.peak = max(self.peak, self.current)
                weakref.finalize(storage, self._free, key)
        return out

    def _free(self, key):
        self.current -= self.live.pop(key, 0)


@functools.lru_cache(maxsize=None)
def reference_cube_count(op: str, variant: Optional[str], pas: str) -> int:
    """How many n x n x n tensors the reference holds at once at its peak (forward, or forward and
    backward), counted by running it at n = 16 under a dispatch mode that tracks live storages."""
    n = 16
    case = {"op": op, "impl": "reference", "variant": variant, "algorithm": None, "pass": pas}
    g = torch.Generator().manual_seed(0)
    inputs = {k: torch.randn(n, n, generator=g) for k in ("S", "C", "G")}
    call = make_call(case, inputs)
    tracker = _CubeTracker(threshold=n ** 3 * 4)
    with tracker:
        call()
    return round(tracker.peak / (n ** 3 * 4))


def reference_bytes(case: dict) -> int:
    """Predicted peak bytes of a reference case: its n^3 float32 tensors (the n^2 ones are ignored)."""
    return reference_cube_count(case["op"], case["variant"], case["pass"]) * case["n"] ** 3 * 4


def inputs_file(cache_dir: Path, n: int) -> Path:
    return Path(cache_dir) / f"inputs-n{n}.pt"
