"""Sparse caption index: per-batch semantic similarity between images from their human captions.

VSL needs, for every training batch, a matrix ``C`` of semantic similarities between the batch's
images, computed from each image's captions (paper Eq. 3). The published code builds a *dense*
scikit-learn TF-IDF matrix; :class:`CaptionIndex` keeps a sparse n-gram index instead and computes the
``B x B`` matrix of a batch with a sparse C++ kernel (CPU) or CUDA kernel (GPU).

>>> from vsl_ext import CaptionIndex
>>> groups = [["a dog runs", "a brown dog"], ["a red car"]]   # captions of image 0, image 1
>>> index = CaptionIndex.from_captions(groups)
>>> C = index.image_similarity([0, 1, 0])           # (3, 3) float32 tensor
>>> cider = CaptionIndex.from_captions(groups, mode="cider-d")
>>> cider.cider_d(["a dog is running"], [0])        # CIDEr-D against image 0's captions
array([1.50981514])

Modes:

* ``"tfidf"``: scikit-learn's ``TfidfVectorizer`` (lowercase, token pattern ``(?u)\\b\\w\\w+\\b``,
  raw counts, smooth idf ``ln((1 + N) / (1 + df)) + 1`` with N captions, l2-normalised caption
  vectors); ``sim(p, q)`` is the cosine of two captions and ``K[i, j]`` the mean over the caption
  pairs of images i and j, i.e. the dot product of the images' mean caption vectors.
* ``"cider-d"``: pycocoevalcap's ``Cider`` (CIDEr-D): whitespace tokens, n-grams 1..4, document
  frequency over images, clipped tf-idf dot products, Gaussian length penalty (sigma 6) on the number
  of bigrams, x10. ``sim(p, q)`` is the CIDEr-D of caption p against the single reference q, so K is
  not symmetric.
* ``"phrases"``: phrase-level labels (SSAMT, Fan et al., ICMR 2023; :mod:`vsl_ext.phrases`): each
  caption is parsed into a text scene graph whose entities, attributes and (subject, relation,
  object) triples are its labels; each image is a bag of labels over its captions (tf = number of
  its captions holding the label), weighted by ``idf = ln((1 + N) / (1 + df)) + 1`` with N images and
  df = images holding the label (scikit-learn's smooth idf, documents = images), l2-normalised;
  ``K[i, j]`` is the dot product of the image vectors: symmetric, in [0, 1], ``K[i, i] = 1`` for an
  image with labels and 0 rows for one without. Needs the ``phrases`` extra (spaCy); see
  ``docs/phrases.md``.
"""
from __future__ import annotations

import itertools
import json
import math
import numbers
import os
import re
import struct
import zlib
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ._atomic import atomic_open
from . import _native
from .caption_files import count_hint, read_scan_captions
from ._native import _C

__all__ = ["CaptionIndex"]

_MODES = {"tfidf": 0, "cider-d": 1, "phrases": 2}  # phrases is built in Python
_DEFAULT_PATTERN = r"(?u)\b\w\w+\b"
_MAX_ORDER = 32
_SMEM_ROW_CAP = 6144  # CUDA: rows up to this many entries are staged in shared memory (48 KiB)

_MAGIC = b"VSLCAPIX"
FORMAT_VERSION = 2  # the newest version written and read
# Version 1 (tfidf, cider-d) is still written for those modes, whose layout did not change, so that
# older vsl_ext releases keep reading them; version 2 added mode "phrases" (older releases reject it
# by its version number).
_READABLE = {1: ("tfidf", "cider-d"), 2: ("tfidf", "cider-d", "phrases")}
_MODE_VERSION = {"tfidf": 1, "cider-d": 1, "phrases": 2}
_PREAMBLE = struct.Struct("<8sIQI")  # magic, format version, header length, header crc32
_ALIGN = 64

# Arrays written by save(); the hash tables and derived arrays are rebuilt after loading.
_COMMON = ("img_ptr", "tok_blob", "tok_off", "feat_prefix", "feat_last", "order_ptr", "cap_indptr", "cap_indices",
           "cap_tf", "cap_data", "df", "idf")
_PERSISTENT = {
    "tfidf": _COMMON + ("img_indptr", "img_indices", "img_data"),
    "cider-d": _COMMON + ("cap_norm", "cap_len"),
    "phrases": ("img_ptr", "tok_blob", "tok_off", "df", "idf", "img_indptr", "img_indices", "img_data"),
}
_DTYPES = {
    "img_ptr": np.int64, "tok_blob": np.uint8, "tok_off": np.int64, "feat_prefix": np.int32, "feat_last": np.int32,
    "order_ptr": np.int64, "cap_indptr": np.int64, "cap_indices": np.int32, "cap_tf": np.int32,
    "cap_data": np.float32, "df": np.int32, "idf": np.float64, "img_indptr": np.int64, "img_indices": np.int32,
    "img_data": np.float32, "cap_norm": np.float64, "cap_len": np.int32,
}
_TABLES = ("tok_slots", "child")

Groups = Sequence[Sequence[str]]
Ids = Union[Sequence[int], np.ndarray, torch.Tensor]


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _encode(texts: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes of all texts back to back, and the (len + 1) byte offsets."""
    off = np.zeros(len(texts) + 1, dtype=np.int64)
    joined = "".join(texts)
    if joined.isascii():  # one byte per character: offsets from the string lengths
        if texts:
            np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)), out=off[1:])
        return np.frombuffer(joined.encode("ascii"), dtype=np.uint8), off
    enc = [t.encode("utf-8", "surrogatepass") for t in texts]
    np.cumsum(np.fromiter(map(len, enc), dtype=np.int64, count=len(enc)), out=off[1:])
    return np.frombuffer(b"".join(enc), dtype=np.uint8), off


def _check_mode(mode) -> str:
    if not isinstance(mode, str) or mode not in _MODES:
        raise ValueError(f"mode must be one of {sorted(_MODES)}, got {mode!r}")
    return mode


def _check_ngram_range(ngram_range, mode: str) -> Tuple[int, int]:
    if ngram_range is None:
        return (1, 1) if mode == "tfidf" else (1, 4)
    ok = (isinstance(ngram_range, (tuple, list)) and len(ngram_range) == 2
          and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in ngram_range))
    if not ok:
        raise ValueError(f"ngram_range must be a pair of integers (min_n, max_n), got {ngram_range!r}")
    lo, hi = int(ngram_range[0]), int(ngram_range[1])
    if not 1 <= lo <= hi <= _MAX_ORDER:
        raise ValueError(f"ngram_range must satisfy 1 <= min_n <= max_n <= {_MAX_ORDER}, got {ngram_range!r}")
    if mode == "cider-d" and lo != 1:
        raise ValueError(f"ngram_range for mode='cider-d' must start at 1 (CIDEr-D averages orders 1..n), "
                         f"got {ngram_range!r}")
    return lo, hi


def _check_groups(groups) -> Tuple[List[str], np.ndarray]:
    if isinstance(groups, (list, tuple)) and groups and set(map(type, groups)) <= {list, tuple}:
        counts = list(map(len, groups))
        caps = list(itertools.chain.from_iterable(groups))
        if min(counts) >= 1 and set(map(type, caps)) == {str}:  # fast path; errors are explained below
            img_ptr = np.zeros(len(counts) + 1, dtype=np.int64)
            np.cumsum(counts, out=img_ptr[1:])
            return caps, img_ptr
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
    img_ptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=img_ptr[1:])
    return caps, img_ptr


def _ids(ids, n: int, what: str) -> np.ndarray:
    """Validated 1-D int64 ids in [0, n)."""
    if isinstance(ids, torch.Tensor):
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise TypeError(f"{what}_ids must hold integers, got a {ids.dtype} tensor")
        arr = ids.detach().to("cpu").numpy()
    elif isinstance(ids, numbers.Integral):
        raise TypeError(f"{what}_ids must be a 1-D sequence of ints, got a single {type(ids).__name__}")
    else:
        arr = np.asarray(ids)
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


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (TypeError, RuntimeError) as exc:
        raise ValueError(f"device must be None, a torch.device or a device string, got {device!r}") from exc


class CaptionIndex:
    """Sparse n-gram index over the captions of a set of images.

    Build it with :meth:`from_captions` or :meth:`from_scan_file`; query a batch with
    :meth:`image_similarity` / :meth:`caption_similarity`; score new captions with :meth:`cider_d`
    (``mode="cider-d"``). Images and captions are numbered in corpus order.
    """

    def __init__(self, arrays: Dict[str, np.ndarray], meta: dict):
        self._a = arrays
        self._meta = meta
        self._device_cache: Dict[str, Dict[str, torch.Tensor]] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_captions(cls, groups: Groups, mode: str = "tfidf", ngram_range: Optional[Tuple[int, int]] = None, *,
                      tokenizer: Optional[Callable[[str], List[str]]] = None, lowercase: Optional[bool] = None,
                      token_pattern: str = _DEFAULT_PATTERN, sigma: float = 6.0,
                      phrase_cache: Union[str, os.PathLike, None] = None) -> "CaptionIndex":
        """Index the captions of a list of images.

        Args:
            groups: one entry per image, each a non-empty list of caption strings (images may have
                different numbers of captions).
            mode: ``"tfidf"`` (scikit-learn ``TfidfVectorizer`` semantics), ``"cider-d"``
                (pycocoevalcap ``Cider``) or ``"phrases"`` (scene-graph labels, see the module
                docstring; parses every caption with spaCy, see :func:`vsl_ext.phrases.parse`).
            ngram_range: ``(min_n, max_n)`` n-gram orders; default (1, 1) for tfidf and (1, 4) for
                cider-d (which must start at 1).
            tokenizer: tfidf only: callable str -> list of tokens used instead of ``token_pattern``
                (as in scikit-learn; tokens must be non-empty and free of whitespace).
            lowercase: lowercase captions first; default True for tfidf (scikit-learn) and False for
                cider-d (pycocoevalcap does not lowercase; the captions usually are already).
            token_pattern: tfidf only: scikit-learn's token regular expression.
            sigma: cider-d only: standard deviation of the Gaussian length penalty.
            phrase_cache: phrases only: file caching the captions' parses (see
                :func:`vsl_ext.phrases.parse`; rebuilt when the captions, spaCy, the model or the
                rules change).

        Raises:
            ImportError: mode ``"phrases"`` without spaCy or its English model (the message says
                what to install).
        """
        mode = _check_mode(mode)
        if mode == "phrases":
            if ngram_range is not None or tokenizer is not None or lowercase is not None \
                    or token_pattern != _DEFAULT_PATTERN or sigma != 6.0:
                raise ValueError("ngram_range/tokenizer/lowercase/token_pattern/sigma do not apply to "
                                 "mode='phrases' (labels come from the scene-graph parser)")
            caps, img_ptr = _check_groups(groups)
            from . import phrases
            labels = phrases.parse(caps, cache=phrase_cache)
            return cls._from_label_sets([lab.labels() for lab in labels], img_ptr, phrases.parser_info())
        if phrase_cache is not None:
            raise ValueError("phrase_cache applies to mode='phrases' only")
        nmin, nmax = _check_ngram_range(ngram_range, mode)
        if lowercase is None:
            lowercase = mode == "tfidf"
        if not isinstance(lowercase, bool):
            raise TypeError(f"lowercase must be a bool, got {type(lowercase).__name__}")
        if mode == "cider-d":
            if tokenizer is not None or token_pattern != _DEFAULT_PATTERN:
                raise ValueError("tokenizer/token_pattern apply to mode='tfidf'; cider-d splits on whitespace")
            if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not (
                    math.isfinite(sigma) and sigma > 0):
                raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
        elif tokenizer is not None and not callable(tokenizer):
            raise TypeError("tokenizer must be callable (str -> list of str)")
        caps, img_ptr = _check_groups(groups)

        if mode == "tfidf":
            docs = _tfidf_docs(caps, tokenizer, lowercase, token_pattern)
        else:
            docs = [c.lower() for c in caps] if lowercase else caps
        blob, off = _encode(docs)
        arrays = dict(_C.caption_build(blob, off, img_ptr, nmin, nmax, _MODES[mode], _threads()))
        arrays["img_ptr"] = img_ptr
        meta = {
            "mode": mode,
            "ngram_range": [nmin, nmax],
            "lowercase": lowercase,
            "token_pattern": None if tokenizer is not None else token_pattern,
            "custom_tokenizer": tokenizer is not None,
            "sigma": float(sigma) if mode == "cider-d" else None,
        }
        return cls(arrays, meta)

    @classmethod
    def from_phrase_labels(cls, groups: Sequence[Sequence["PhraseLabels"]]) -> "CaptionIndex":
        """A ``mode="phrases"`` index from labels already parsed: one entry per image, each a
        non-empty list of :class:`vsl_ext.phrases.PhraseLabels` (one per caption), e.g. from
        :func:`vsl_ext.phrases.parse`. Label fields must be non-empty strings without tabs or
        newlines. Needs no spaCy."""
        from .phrases import PhraseLabels
        if isinstance(groups, (str, bytes)) or not isinstance(groups, Iterable):
            raise TypeError("groups must be a list (one entry per image) of lists of PhraseLabels")
        sets, counts = [], []
        for i, g in enumerate(groups):
            if isinstance(g, (str, bytes, PhraseLabels)) or not isinstance(g, Iterable):
                raise TypeError(f"groups[{i}] must be a list of PhraseLabels, got {type(g).__name__}")
            g = list(g)
            if not g:
                raise ValueError(f"groups[{i}] is empty: every image needs at least one caption")
            for lab in g:
                if not isinstance(lab, PhraseLabels):
                    raise TypeError(f"groups[{i}] holds a {type(lab).__name__}, expected PhraseLabels")
                sets.append(_checked_labels(lab, i))
            counts.append(len(g))
        if not counts:
            raise ValueError("groups is empty: the index needs at least one image")
        img_ptr = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=img_ptr[1:])
        return cls._from_label_sets(sets, img_ptr, None)

    @classmethod
    def _from_label_sets(cls, labels: List[Sequence[str]], img_ptr: np.ndarray, parser) -> "CaptionIndex":
        arrays = _phrase_arrays(labels, img_ptr)
        meta = {"mode": "phrases", "ngram_range": None, "lowercase": None, "token_pattern": None,
                "custom_tokenizer": False, "sigma": None, "parser": parser}
        return cls(arrays, meta)

    @classmethod
    def from_scan_file(cls, path: Union[str, os.PathLike], captions_per_image: int = 5, *,
                       encoding: str = "utf-8", **kw) -> "CaptionIndex":
        """Index a SCAN/"precomp" caption file: one caption per line, ``captions_per_image``
        consecutive lines per image (e.g. ``testall_caps.txt``), lines as SCAN reads them
        (:func:`vsl_ext.caption_files.read_scan_captions`). ``kw`` go to :meth:`from_captions`."""
        if isinstance(captions_per_image, bool) or not isinstance(captions_per_image, numbers.Integral) \
                or captions_per_image < 1:
            raise ValueError(f"captions_per_image must be a positive integer, got {captions_per_image!r}")
        lines = read_scan_captions(path, encoding)
        k = int(captions_per_image)
        if not lines or len(lines) % k:
            raise ValueError(f"{os.fspath(path)!r} has {len(lines)} caption lines, not a positive multiple of "
                             f"captions_per_image={k}{count_hint(lines)}")
        return cls.from_captions([lines[i:i + k] for i in range(0, len(lines), k)], **kw)

    # ------------------------------------------------------------------ properties
    @property
    def mode(self) -> str:
        return self._meta["mode"]

    @property
    def ngram_range(self) -> Optional[Tuple[int, int]]:
        """n-gram orders (None for mode "phrases")."""
        r = self._meta["ngram_range"]
        return None if r is None else tuple(r)

    @property
    def sigma(self) -> Optional[float]:
        return self._meta["sigma"]

    @property
    def num_images(self) -> int:
        return len(self._a["img_ptr"]) - 1

    def __len__(self) -> int:
        return self.num_images

    @property
    def num_captions(self) -> int:
        return int(self._a["img_ptr"][-1])

    @property
    def vocab_size(self) -> int:
        """Number of features (distinct n-grams of the orders in ``ngram_range``, or distinct
        phrase labels)."""
        return len(self._a["df"])

    @property
    def nbytes(self) -> int:
        """Host memory held by the index's arrays (lookup tables included; device copies not)."""
        return int(sum(a.nbytes for a in self._a.values()))

    def __repr__(self) -> str:
        return (f"CaptionIndex(mode={self.mode!r}, ngram_range={self.ngram_range}, images={self.num_images}, "
                f"captions={self.num_captions}, vocab_size={self.vocab_size}, nbytes={self.nbytes})")

    def image_captions(self, image_id: int) -> range:
        """Caption ids of one image."""
        (i,) = _ids([image_id], self.num_images, "image")
        return range(int(self._a["img_ptr"][i]), int(self._a["img_ptr"][i + 1]))

    def feature_names(self) -> List[str]:
        """The n-grams in feature-id order (tokens joined by a space, as scikit-learn does); for
        mode "phrases" the labels in the form of :meth:`vsl_ext.phrases.PhraseLabels.labels`
        (``"triple\tcat\tsleep on\tbench"``), sorted."""
        a = self._a
        blob, off = a["tok_blob"].tobytes(), a["tok_off"]
        names = [blob[off[i]:off[i + 1]].decode("utf-8", "surrogatepass") for i in range(len(off) - 1)]
        if self.mode == "phrases":
            return names
        prefix, last = a["feat_prefix"], a["feat_last"]
        for i in range(len(names), len(prefix)):
            names.append(names[prefix[i]] + " " + names[last[i]])
        return names[int(a["order_ptr"][self.ngram_range[0] - 1]):]

    def caption_vectors(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR ``(indptr, indices, data)`` of the caption vectors (num_captions x vocab_size):
        l2-normalised tf-idf (tfidf) or CIDEr-D weights ``tf * idf`` (cider-d). Read-only views.
        Mode "phrases" keeps image vectors only (ValueError)."""
        if self.mode == "phrases":
            raise ValueError("mode='phrases' keeps image vectors only (see image_vectors())")
        return tuple(_readonly(self._a[k]) for k in ("cap_indptr", "cap_indices", "cap_data"))

    def image_vectors(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR ``(indptr int64, indices int32, data float32)`` of the image vectors (num_images x
        vocab_size) whose dot products are :meth:`image_similarity`: mean caption vectors (tfidf) or
        l2-normalised label tf-idf (phrases). Read-only views; cider-d has none (ValueError)."""
        if self.mode == "cider-d":
            raise ValueError("mode='cider-d' has no image vectors (its similarity is not a dot product)")
        return tuple(_readonly(self._a[k]) for k in ("img_indptr", "img_indices", "img_data"))

    # ------------------------------------------------------------------ queries
    def image_similarity(self, image_ids: Ids, device=None) -> torch.Tensor:
        """``K[i, j] = mean over captions p of image_ids[i] and q of image_ids[j] of sim(p, q)``.

        Returns a (B, B) float32 tensor on ``device`` (default CPU). Repeated ids are allowed.
        """
        ids = _ids(image_ids, self.num_images, "image")
        if self.mode in ("tfidf", "phrases"):
            return self._gram("img", ids, _device(device))
        ptr = self._a["img_ptr"]
        starts, counts = ptr[ids], ptr[ids + 1] - ptr[ids]
        gptr = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(counts, out=gptr[1:])
        caps = np.arange(gptr[-1], dtype=np.int64) + np.repeat(starts - gptr[:-1], counts)
        return self._cider(caps, gptr, _device(device))

    def caption_similarity(self, caption_ids: Ids, device=None) -> torch.Tensor:
        """``S[a, b] = sim(caption a, caption b)`` for captions numbered in corpus order; (B, B)
        float32 on ``device``. cider-d: CIDEr-D of caption a against the single reference b.
        Not defined for mode "phrases" (ValueError): its labels are pooled per image."""
        if self.mode == "phrases":
            raise ValueError("caption_similarity is not defined for mode='phrases' (labels are pooled per image)")
        ids = _ids(caption_ids, self.num_captions, "caption")
        if self.mode == "tfidf":
            return self._gram("cap", ids, _device(device))
        return self._cider(ids, np.arange(len(ids) + 1, dtype=np.int64), _device(device))

    def cider_d(self, candidates: Sequence[str], image_ids: Ids) -> np.ndarray:
        """CIDEr-D of each candidate against all captions of the matching image.

        Equals pycocoevalcap's ``Cider().compute_score`` per-image scores when it is given the
        index's whole corpus as references (document frequencies come from the index). Needs
        ``mode="cider-d"``. Returns float64 scores, one per candidate.
        """
        if self.mode != "cider-d":
            raise ValueError("cider_d needs an index built with mode='cider-d'")
        if isinstance(candidates, str) or not isinstance(candidates, Iterable):
            raise TypeError("candidates must be a list of caption strings")
        candidates = list(candidates)
        if not set(map(type, candidates)) <= {str}:
            for c in candidates:
                if not isinstance(c, str):
                    raise TypeError(f"candidates must be strings, got {type(c).__name__}")
        ids = _ids(image_ids, self.num_images, "image")
        if len(ids) != len(candidates):
            raise ValueError(f"image_ids has {len(ids)} entries but candidates has {len(candidates)}")
        if self._meta["lowercase"]:
            candidates = [c.lower() for c in candidates]
        blob, off = _encode(candidates)
        return _C.caption_cider_d(self._cider_view(), blob, off, ids, self.sigma, _threads())

    # ------------------------------------------------------------------ persistence
    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the index to one versioned file (atomically: temp file + ``os.replace``). Modes
        tfidf and cider-d are written as format version 1 (readable by older vsl_ext releases),
        phrases as version 2."""
        path = os.fspath(path)
        names = _PERSISTENT[self.mode]
        entries, offset = [], 0
        for name in names:
            arr = np.ascontiguousarray(self._a[name])
            offset = -(-offset // _ALIGN) * _ALIGN
            entries.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape), "offset": offset,
                            "nbytes": arr.nbytes})
            offset += arr.nbytes
        payload_len = offset
        crc = 0
        chunks = []
        pos = 0
        for e, name in zip(entries, names):
            pad = bytes(e["offset"] - pos)
            data = memoryview(np.ascontiguousarray(self._a[name])).cast("B")
            crc = zlib.crc32(data, zlib.crc32(pad, crc))
            chunks += [pad, data]
            pos = e["offset"] + e["nbytes"]
        version = _MODE_VERSION[self.mode]
        header = {"format": "vsl_ext.CaptionIndex", "version": version, "meta": self._meta,
                  "arrays": entries, "payload_nbytes": payload_len, "payload_crc32": crc}
        hbytes = json.dumps(header, sort_keys=True).encode("utf-8")
        hbytes += b" " * ((-(_PREAMBLE.size + len(hbytes))) % _ALIGN)
        with atomic_open(path) as f:
            f.write(_PREAMBLE.pack(_MAGIC, version, len(hbytes), zlib.crc32(hbytes)))
            f.write(hbytes)
            for c in chunks:
                f.write(c)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "CaptionIndex":
        """Read an index written by :meth:`save`. A file that is not a CaptionIndex, was written by
        another format version, or is truncated or corrupt raises ``ValueError``."""
        path = os.fspath(path)
        with open(path, "rb") as f:
            buf = bytearray(os.fstat(f.fileno()).st_size)
            n = f.readinto(buf)
        what = f"{path!r} is not a readable vsl_ext CaptionIndex file"
        if n != len(buf) or len(buf) < _PREAMBLE.size:
            raise ValueError(f"{what}: truncated ({len(buf)} bytes)")
        magic, version, hlen, hcrc = _PREAMBLE.unpack_from(buf, 0)
        if magic != _MAGIC:
            raise ValueError(f"{what}: wrong magic bytes")
        if version not in _READABLE:
            raise ValueError(f"{path!r} is a CaptionIndex file of format version {version}; this vsl_ext reads "
                             f"versions {sorted(_READABLE)} (rebuild the index)")
        start = _PREAMBLE.size + hlen
        if start > len(buf):
            raise ValueError(f"{what}: truncated header")
        hbytes = bytes(buf[_PREAMBLE.size:start])
        if zlib.crc32(hbytes) != hcrc:
            raise ValueError(f"{what}: header checksum mismatch (corrupt file)")
        try:
            header = json.loads(hbytes.decode("utf-8"))
            meta, entries = header["meta"], header["arrays"]
            payload_len, payload_crc = int(header["payload_nbytes"]), int(header["payload_crc32"])
            mode = meta["mode"]
            names = _PERSISTENT[mode]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{what}: bad header ({exc})") from exc
        if header.get("version") != version or header.get("format") != "vsl_ext.CaptionIndex":
            raise ValueError(f"{what}: header names format {header.get('format')!r} version "
                             f"{header.get('version')!r}")
        if mode not in _READABLE[version]:
            raise ValueError(f"{what}: mode {mode!r} does not exist in format version {version}")
        if len(buf) - start != payload_len:
            raise ValueError(f"{what}: payload is {len(buf) - start} bytes, expected {payload_len} "
                             "(truncated or corrupt file)")
        payload = memoryview(buf)[start:]
        if zlib.crc32(payload) != payload_crc:
            raise ValueError(f"{what}: payload checksum mismatch (corrupt file)")
        arrays = {}
        try:
            by_name = {e["name"]: e for e in entries}
            for name in names:
                e = by_name[name]
                dtype = np.dtype(e["dtype"])
                if dtype != np.dtype(_DTYPES[name]):
                    raise ValueError(f"array {name} has dtype {dtype}")
                shape = tuple(int(s) for s in e["shape"])
                count = int(np.prod(shape, dtype=np.int64))
                off, nb = int(e["offset"]), int(e["nbytes"])
                if off < 0 or nb != count * dtype.itemsize or off + nb > payload_len:
                    raise ValueError(f"array {name} lies outside the payload")
                arrays[name] = np.frombuffer(buf, dtype=dtype, count=count, offset=start + off).reshape(shape)
            _check_structure(arrays, meta)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{what}: {exc}") from exc
        return cls(arrays, meta)

    # ------------------------------------------------------------------ internals
    def _cider_view(self) -> dict:
        a = self._a
        if "tok_slots" not in a:
            a.update(dict(_C.caption_tables(a["tok_blob"], a["tok_off"], a["feat_prefix"], a["feat_last"],
                                            a["order_ptr"])))
        return a

    def _inv_norm(self) -> np.ndarray:
        if "inv_norm" not in self._a:
            norm = self._a["cap_norm"]
            with np.errstate(divide="ignore"):
                self._a["inv_norm"] = np.where(norm > 0, 1.0 / norm, 0.0).astype(np.float32)
        return self._a["inv_norm"]

    def _bounds(self) -> np.ndarray:
        op = self._a["order_ptr"]
        return np.ascontiguousarray(op[self.ngram_range[0] - 1:] - op[self.ngram_range[0] - 1], dtype=np.int64)

    def _gram(self, which: str, rows: np.ndarray, dev: torch.device) -> torch.Tensor:
        B = len(rows)
        indptr, indices, data = (self._a[f"{which}_{k}"] for k in ("indptr", "indices", "data"))
        if dev.type == "cuda":
            d = self._on_device(dev)
            out = torch.empty((B, B), dtype=torch.float32, device=dev)
            if B:
                nnz = int((indptr[rows + 1] - indptr[rows]).max())
                r = torch.from_numpy(rows).to(dev)
                _C.caption_gram_cuda(d[f"{which}_indptr"].data_ptr(), d[f"{which}_indices"].data_ptr(),
                                     d[f"{which}_data"].data_ptr(), r.data_ptr(), B,
                                     nnz if nnz <= _SMEM_ROW_CAP else 0, out.data_ptr(),
                                     *_native.cuda_launch_args(dev))
            return out
        out = torch.empty((B, B), dtype=torch.float32)
        if B:
            _C.caption_gram_cpu(indptr, indices, data, self.vocab_size, rows, out.data_ptr(), _threads())
        return out if dev.type == "cpu" else out.to(dev)

    def _cider(self, caps: np.ndarray, gptr: np.ndarray, dev: torch.device) -> torch.Tensor:
        G = len(gptr) - 1
        a = self._a
        if dev.type == "cuda":
            d = self._on_device(dev)
            out = torch.empty((G, G), dtype=torch.float32, device=dev)
            if G:
                Pb = len(caps)
                singleton = Pb == G
                nnz = int((a["cap_indptr"][caps + 1] - a["cap_indptr"][caps]).max())
                c = torch.from_numpy(caps).to(dev)
                g = torch.from_numpy(gptr).to(dev)
                scratch = out if singleton else torch.empty(Pb * Pb, dtype=torch.float32, device=dev)
                _C.caption_cider_cuda(d["cap_indptr"].data_ptr(), d["cap_indices"].data_ptr(),
                                      d["cap_data"].data_ptr(), d["inv_norm"].data_ptr(), d["cap_len"].data_ptr(),
                                      [int(x) for x in self._bounds()], c.data_ptr(), Pb, g.data_ptr(), G,
                                      singleton, float(self.sigma), nnz if nnz <= _SMEM_ROW_CAP else 0,
                                      scratch.data_ptr(), out.data_ptr(), *_native.cuda_launch_args(dev))
            return out
        out = torch.empty((G, G), dtype=torch.float32)
        if G:
            _C.caption_cider_cpu(a["cap_indptr"], a["cap_indices"], a["cap_data"], self._inv_norm(), a["cap_len"],
                                 self._bounds(), caps, gptr, float(self.sigma), out.data_ptr(), _threads())
        return out if dev.type == "cpu" else out.to(dev)

    def _on_device(self, dev: torch.device) -> Dict[str, torch.Tensor]:
        # The CUDA kernels trust feature ids (the CPU kernels check them per query): check them
        # before the first upload.
        for n in ("cap_indices", "img_indices") if not self._device_cache else ():
            ids = self._a.get(n)
            if ids is not None and len(ids) and not 0 <= int(ids.min()) <= int(ids.max()) < self.vocab_size:
                raise ValueError(f"caption index array {n} holds feature ids outside [0, {self.vocab_size}): "
                                 "the index is corrupt")
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {dev} was requested but torch sees no CUDA device "
                               "(a CPU-only torch build, or no GPU)")
        _native.cuda_usable()
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        key = str(dev)
        if key not in self._device_cache:
            names = ["cap_indptr", "cap_indices", "cap_data"]
            names += ["img_indptr", "img_indices", "img_data"] if self.mode == "tfidf" else ["cap_len"]
            if self.mode == "phrases":
                names = ["img_indptr", "img_indices", "img_data"]
            d = {n: torch.from_numpy(np.array(self._a[n])).to(dev) for n in names}
            if self.mode == "cider-d":
                d["inv_norm"] = torch.from_numpy(np.array(self._inv_norm())).to(dev)
            self._device_cache[key] = d
        return self._device_cache[key]

    def __getstate__(self):  # pickling (e.g. DataLoader workers): host arrays only
        return {"a": {k: v for k, v in self._a.items() if k in _PERSISTENT[self.mode]}, "meta": self._meta}

    def __setstate__(self, state):
        self.__init__(dict(state["a"]), state["meta"])


def _readonly(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


def _tfidf_docs(caps: List[str], tokenizer, lowercase: bool, token_pattern: str) -> List[str]:
    """Each caption's tokens joined by single spaces (the C++ builder splits on whitespace)."""
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
        if token_pattern == _DEFAULT_PATTERN:
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


def _check_structure(a: Dict[str, np.ndarray], meta: dict) -> None:
    """Consistency checks of loaded arrays, so that the kernels never read out of bounds."""
    mode = meta["mode"]
    if mode == "phrases":
        _check_phrase_structure(a)
        return
    nmin, nmax = _check_ngram_range(tuple(meta["ngram_range"]), mode)
    if mode == "cider-d" and not (isinstance(meta.get("sigma"), (int, float)) and meta["sigma"] > 0):
        raise ValueError("bad sigma")
    for name in _PERSISTENT[mode]:
        want = 2 if name == "cap_norm" else 1
        if a[name].ndim != want:
            raise ValueError(f"array {name} has {a[name].ndim} dimensions")

    def offsets(name, total):
        o = a[name]
        if len(o) < 1 or o[0] != 0 or o[-1] != total or (len(o) > 1 and np.any(np.diff(o) < 0)):
            raise ValueError(f"array {name} is not a valid offset array")

    I, P = len(a["img_ptr"]) - 1, len(a["cap_indptr"]) - 1
    offsets("img_ptr", P)
    if I < 1 or np.any(np.diff(a["img_ptr"]) < 1):
        raise ValueError("every image needs at least one caption")
    offsets("tok_off", len(a["tok_blob"]))
    V = len(a["tok_off"]) - 1
    op = a["order_ptr"]
    if len(op) != nmax + 1 or op[0] != 0 or op[1] != V or np.any(np.diff(op) < 0):
        raise ValueError("array order_ptr is inconsistent")
    Fi = int(op[-1])
    F = Fi - int(op[nmin - 1])
    if len(a["feat_prefix"]) != Fi or len(a["feat_last"]) != Fi:
        raise ValueError("feature arrays have the wrong length")
    nnz = len(a["cap_indices"])
    offsets("cap_indptr", nnz)
    for name in ("cap_tf", "cap_data"):
        if len(a[name]) != nnz:
            raise ValueError(f"array {name} has the wrong length")
    if nnz and (a["cap_indices"].min() < 0 or a["cap_indices"].max() >= F):
        raise ValueError("array cap_indices holds ids outside the vocabulary")
    if len(a["df"]) != F or len(a["idf"]) != F:
        raise ValueError("df/idf have the wrong length")
    if mode == "tfidf":
        offsets("img_indptr", len(a["img_indices"]))
        if len(a["img_indptr"]) != I + 1 or len(a["img_data"]) != len(a["img_indices"]):
            raise ValueError("image rows are inconsistent")
        if len(a["img_indices"]) and (a["img_indices"].min() < 0 or a["img_indices"].max() >= F):
            raise ValueError("array img_indices holds ids outside the vocabulary")
    else:
        if a["cap_norm"].shape != (P, nmax - nmin + 1) or len(a["cap_len"]) != P:
            raise ValueError("cap_norm/cap_len have the wrong shape")


def _checked_labels(lab, image: int) -> Tuple[str, ...]:
    """The label strings of one PhraseLabels, checked so that they cannot collide."""
    kinds = (("entities", lab.entities, 0), ("attributes", lab.attributes, 2), ("triples", lab.triples, 3))
    for what, items, arity in kinds:
        if not isinstance(items, tuple):
            raise TypeError(f"groups[{image}]: PhraseLabels.{what} must be a tuple, got {type(items).__name__}")
        for item in items:
            fields = (item,) if arity == 0 else item
            if (arity and (not isinstance(item, tuple) or len(item) != arity)) or not all(
                    isinstance(f, str) and f and "\t" not in f and "\n" not in f for f in fields):
                raise ValueError(f"groups[{image}]: bad PhraseLabels.{what} entry {item!r} (expected "
                                 f"{'a string' if not arity else f'a tuple of {arity} strings'}, non-empty, "
                                 "without tabs or newlines)")
    return lab.labels()


def _phrase_arrays(labels: List[Sequence[str]], img_ptr: np.ndarray) -> Dict[str, np.ndarray]:
    """Arrays of a phrases index: sorted label vocabulary, df/idf over images, l2-normalised image
    tf-idf vectors in CSR (tf = number of the image's captions holding the label)."""
    I = len(img_ptr) - 1
    vocab = sorted(set(itertools.chain.from_iterable(labels)))
    V = len(vocab)
    fid = {name: k for k, name in enumerate(vocab)}
    per_cap = [set(map(fid.__getitem__, lab)) for lab in labels]  # a label counts once per caption
    lens = np.fromiter(map(len, per_cap), dtype=np.int64, count=len(per_cap))
    feats = np.fromiter(itertools.chain.from_iterable(per_cap), dtype=np.int64, count=int(lens.sum()))
    image_of_caption = np.repeat(np.arange(I, dtype=np.int64), np.diff(img_ptr))
    rows_of = np.repeat(image_of_caption, lens)
    keys, tf = np.unique(rows_of * max(V, 1) + feats, return_counts=True)  # sorted by (image, label)
    rows, cols = keys // max(V, 1), keys % max(V, 1)
    df = np.bincount(cols, minlength=V)
    idf = np.log((1.0 + I) / (1.0 + df)) + 1.0
    w = tf * idf[cols]
    norm = np.sqrt(np.bincount(rows, weights=w * w, minlength=I))
    indptr = np.zeros(I + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=I), out=indptr[1:])
    blob, off = _encode(vocab)
    return {"img_ptr": img_ptr, "tok_blob": blob, "tok_off": off, "df": df.astype(np.int32), "idf": idf,
            "img_indptr": indptr, "img_indices": cols.astype(np.int32),
            "img_data": (w / norm[rows]).astype(np.float32)}


def _check_phrase_structure(a: Dict[str, np.ndarray]) -> None:
    for name in _PERSISTENT["phrases"]:
        if a[name].ndim != 1:
            raise ValueError(f"array {name} has {a[name].ndim} dimensions")
    ptr = a["img_ptr"]
    if len(ptr) < 2 or ptr[0] != 0 or np.any(np.diff(ptr) < 1):
        raise ValueError("array img_ptr is not a valid offset array (every image needs a caption)")
    off = a["tok_off"]
    if len(off) < 1 or off[0] != 0 or off[-1] != len(a["tok_blob"]) or np.any(np.diff(off) < 0):
        raise ValueError("array tok_off is not a valid offset array")
    V, I = len(off) - 1, len(ptr) - 1
    if len(a["df"]) != V or len(a["idf"]) != V:
        raise ValueError("df/idf have the wrong length")
    ip, ix = a["img_indptr"], a["img_indices"]
    if len(ip) != I + 1 or ip[0] != 0 or ip[-1] != len(ix) or np.any(np.diff(ip) < 0) \
            or len(a["img_data"]) != len(ix):
        raise ValueError("image rows are inconsistent")
    if len(ix) and (ix.min() < 0 or ix.max() >= V):
        raise ValueError("array img_indices holds ids outside the vocabulary")
