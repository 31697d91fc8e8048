"""Argument checks and text encoding for :class:`vsl_ext.CaptionIndex`: each error names the argument
and what was expected; the checked values are what the native builder and kernels take."""
from __future__ import annotations

import itertools
import numbers
import re
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ._native import _C

MODES = ("tfidf", "cider-d", "phrases")  # phrases is built in Python (caption_index_phrases.py)
DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # scikit-learn's TfidfVectorizer default
MAX_ORDER = _C.CAPTION_INDEX_MAX_ORDER  # highest n-gram order (csrc/caption_index.h)


def threads() -> int:
    """Threads of the CPU kernels: torch's intra-op thread count."""
    return max(1, torch.get_num_threads())


def encode(texts: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes of all texts back to back (uint8), and the (len + 1) int64 byte offsets."""
    off = np.zeros(len(texts) + 1, dtype=np.int64)
    joined = "".join(texts)
    if joined.isascii():  # one byte per character: offsets from the string lengths
        if texts:
            np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)), out=off[1:])
        return np.frombuffer(joined.encode("ascii"), dtype=np.uint8), off
    enc = [t.encode("utf-8", "surrogatepass") for t in texts]
    np.cumsum(np.fromiter(map(len, enc), dtype=np.int64, count=len(enc)), out=off[1:])
    return np.frombuffer(b"".join(enc), dtype=np.uint8), off


def check_mode(mode) -> str:
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    return mode


def check_ngram_range(ngram_range, mode: str) -> Tuple[int, int]:
    """(min_n, max_n) with 1 <= min_n <= max_n <= MAX_ORDER; the mode's default for None."""
    if ngram_range is None:
        return (1, 1) if mode == "tfidf" else (1, 4)
    ok = (isinstance(ngram_range, (tuple, list)) and len(ngram_range) == 2
          and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in ngram_range))
    if not ok:
        raise ValueError(f"ngram_range must be a pair of integers (min_n, max_n), got {ngram_range!r}")
    lo, hi = int(ngram_range[0]), int(ngram_range[1])
    if not 1 <= lo <= hi <= MAX_ORDER:
        raise ValueError(f"ngram_range must satisfy 1 <= min_n <= max_n <= {MAX_ORDER}, got {ngram_range!r}")
    if mode == "cider-d" and lo != 1:
        raise ValueError(f"ngram_range for mode='cider-d' must start at 1 (CIDEr-D averages orders 1..n), "
                         f"got {ngram_range!r}")
    return lo, hi


def check_groups(groups) -> Tuple[List[str], np.ndarray]:
    """The captions of a list of caption lists, flattened, and the (images + 1) int64 offsets of each
    image's captions."""
    if isinstance(groups, (list, tuple)) and groups and set(map(type, groups)) <= {list, tuple}:
        counts = list(map(len, groups))
        caps = list(itertools.chain.from_iterable(groups))
        if min(counts) >= 1 and set(map(type, caps)) == {str}:  # fast path; errors are explained below
            return caps, image_offsets(counts)
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Iterable):
        raise TypeError("groups must be a list (one entry per image) of lists of caption strings")
    caps: List[str] = []
    counts: List[int] = []
    for i, g in enumerate(groups):
        if isinstance(g, (str, bytes)) or not isinstance(g, Iterable):
            raise TypeError(f"groups[{i}] must be a list of caption strings, got {type(g).__name__}")
        g = list(g)
        if not g:
            raise ValueError(f"groups[{i}] is empty: every image needs at least one caption")
        for c in g:
            if not isinstance(c, str):
                raise TypeError(f"groups[{i}] holds a {type(c).__name__}, captions must be str")
        caps.extend(g)
        counts.append(len(g))
    if not counts:
        raise ValueError("groups is empty: the index needs at least one image")
    return caps, image_offsets(counts)


def image_offsets(counts: Sequence[int]) -> np.ndarray:
    """(len(counts) + 1) int64 offsets of consecutive runs of these lengths."""
    ptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return ptr


def ids(values, n: int, what: str) -> np.ndarray:
    """Validated 1-D int64 ids in [0, n) (``what``: "image" or "caption", named in the errors)."""
    if isinstance(values, torch.Tensor):
        if values.dtype.is_floating_point or values.dtype.is_complex or values.dtype == torch.bool:
            raise TypeError(f"{what}_ids must hold integers, got a {values.dtype} tensor")
        arr = values.detach().to("cpu").numpy()
    elif isinstance(values, numbers.Integral):
        raise TypeError(f"{what}_ids must be a 1-D sequence of ints, got a single {type(values).__name__}")
    else:
        arr = np.asarray(values)
        if arr.size == 0:
            arr = arr.astype(np.int64)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{what}_ids must hold integers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{what}_ids must be 1-D, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    bad = (arr < 0) | (arr >= n)
    if bad.any():
        raise IndexError(f"{what} id {int(arr[np.argmax(bad)])} is out of range for an index of {n} {what}s")
    return arr


def device(value) -> torch.device:
    """torch.device of a device argument (None: CPU)."""
    if value is None:
        return torch.device("cpu")
    try:
        return torch.device(value)
    except (TypeError, RuntimeError) as exc:
        raise ValueError(f"device must be None, a torch.device or a device string, got {value!r}") from exc


def tfidf_docs(caps: List[str], tokenizer: Optional[Callable[[str], List[str]]], lowercase: bool,
               token_pattern: str) -> List[str]:
    """Each caption's tfidf tokens (scikit-learn's token_pattern, or the tokenizer's) joined by single
    spaces: the native builder splits on whitespace."""
    if lowercase:
        caps = [c.lower() for c in caps]
    if tokenizer is None:
        if not isinstance(token_pattern, str):
            raise TypeError(f"token_pattern must be a str, got {type(token_pattern).__name__}")
        try:
            pat = re.compile(token_pattern)
        except re.error as exc:
            raise ValueError(f"token_pattern is not a valid regular expression: {exc}") from exc
        if pat.groups > 1:
            raise ValueError(f"token_pattern has {pat.groups} capturing groups; at most one is allowed")
        findall = pat.findall
        if token_pattern == DEFAULT_TOKEN_PATTERN:
            return [" ".join(findall(c)) for c in caps]  # \w tokens never contain whitespace
        tokenize = findall
    else:
        tokenize = tokenizer
    out = []
    for c in caps:
        toks = tokenize(c)
        if isinstance(toks, str):
            raise TypeError("tokenizer must return a list of tokens, got a str")
        toks = list(toks)
        joined = " ".join(toks)
        if joined.split() != toks:
            raise ValueError(f"tokens must be non-empty strings without whitespace, got {toks!r}")
        out.append(joined)
    return out
