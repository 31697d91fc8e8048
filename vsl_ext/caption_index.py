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

Where the parts live: argument checks in :mod:`vsl_ext.caption_index_inputs`, the file format in
:mod:`vsl_ext.caption_index_file`, mode "phrases" in :mod:`vsl_ext.caption_index_phrases`, the
kernels in ``csrc/caption_index*`` (entry points and constants: ``csrc/caption_index.h``).
"""
from __future__ import annotations

import math
import numbers
import os
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import _native
from . import caption_index_file as _file
from . import caption_index_inputs as _inputs
from . import caption_index_phrases as _phrases
from .caption_files import count_hint, read_scan_captions
from ._native import _C

__all__ = ["CaptionIndex"]

_SMEM_ROW_CAP = _C.CAPTION_INDEX_SMEM_ROW_CAP  # CUDA: rows up to this many entries are staged in shared memory

Groups = Sequence[Sequence[str]]
Ids = Union[Sequence[int], np.ndarray, torch.Tensor]


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
                      token_pattern: str = _inputs.DEFAULT_TOKEN_PATTERN, sigma: float = 6.0,
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
            ValueError, TypeError: a bad argument (the message names it).
            ImportError: mode ``"phrases"`` without spaCy or its English model (the message says
                what to install).
        """
        mode = _inputs.check_mode(mode)
        if mode == "phrases":
            if ngram_range is not None or tokenizer is not None or lowercase is not None \
                    or token_pattern != _inputs.DEFAULT_TOKEN_PATTERN or sigma != 6.0:
                raise ValueError("ngram_range/tokenizer/lowercase/token_pattern/sigma do not apply to "
                                 "mode='phrases' (labels come from the scene-graph parser)")
            caps, img_ptr = _inputs.check_groups(groups)
            from . import phrases
            labels = phrases.parse(caps, cache=phrase_cache)
            return cls._from_label_sets([lab.labels() for lab in labels], img_ptr, phrases.parser_info())
        if phrase_cache is not None:
            raise ValueError("phrase_cache applies to mode='phrases' only")
        nmin, nmax = _inputs.check_ngram_range(ngram_range, mode)
        if lowercase is None:
            lowercase = mode == "tfidf"
        if not isinstance(lowercase, bool):
            raise TypeError(f"lowercase must be a bool, got {type(lowercase).__name__}")
        if mode == "cider-d":
            if tokenizer is not None or token_pattern != _inputs.DEFAULT_TOKEN_PATTERN:
                raise ValueError("tokenizer/token_pattern apply to mode='tfidf'; cider-d splits on whitespace")
            if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not (
                    math.isfinite(sigma) and sigma > 0):
                raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
        elif tokenizer is not None and not callable(tokenizer):
            raise TypeError("tokenizer must be callable (str -> list of str)")
        caps, img_ptr = _inputs.check_groups(groups)

        if mode == "tfidf":
            docs = _inputs.tfidf_docs(caps, tokenizer, lowercase, token_pattern)
        else:
            docs = [c.lower() for c in caps] if lowercase else caps
        blob, off = _inputs.encode(docs)
        arrays = dict(_C.caption_index_build(blob, off, img_ptr, nmin, nmax, mode, _inputs.threads()))
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
        newlines (ValueError; TypeError for a value of the wrong type). Needs no spaCy."""
        sets, img_ptr = _phrases.label_sets(groups)
        return cls._from_label_sets(sets, img_ptr, None)

    @classmethod
    def _from_label_sets(cls, labels: List[Sequence[str]], img_ptr: np.ndarray, parser) -> "CaptionIndex":
        arrays = _phrases.phrase_arrays(labels, img_ptr)
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
        (i,) = _inputs.ids([image_id], self.num_images, "image")
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
        Raises IndexError for an id outside [0, num_images), TypeError for non-integer ids.
        """
        rows = _inputs.ids(image_ids, self.num_images, "image")
        if self.mode in ("tfidf", "phrases"):
            return self._gram("img", rows, _inputs.device(device))
        ptr = self._a["img_ptr"]
        starts, counts = ptr[rows], ptr[rows + 1] - ptr[rows]
        gptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(counts, out=gptr[1:])
        caps = np.arange(gptr[-1], dtype=np.int64) + np.repeat(starts - gptr[:-1], counts)
        return self._cider_matrix(caps, gptr, _inputs.device(device))

    def caption_similarity(self, caption_ids: Ids, device=None) -> torch.Tensor:
        """``S[a, b] = sim(caption a, caption b)`` for captions numbered in corpus order; (B, B)
        float32 on ``device``. cider-d: CIDEr-D of caption a against the single reference b.
        Not defined for mode "phrases" (ValueError): its labels are pooled per image."""
        if self.mode == "phrases":
            raise ValueError("caption_similarity is not defined for mode='phrases' (labels are pooled per image)")
        rows = _inputs.ids(caption_ids, self.num_captions, "caption")
        if self.mode == "tfidf":
            return self._gram("cap", rows, _inputs.device(device))
        return self._cider_matrix(rows, np.arange(len(rows) + 1, dtype=np.int64), _inputs.device(device))

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
        images = _inputs.ids(image_ids, self.num_images, "image")
        if len(images) != len(candidates):
            raise ValueError(f"image_ids has {len(images)} entries but candidates has {len(candidates)}")
        if self._meta["lowercase"]:
            candidates = [c.lower() for c in candidates]
        blob, off = _inputs.encode(candidates)
        return _C.caption_index_cider_d(self._with_lookups(), blob, off, images, self.sigma, _inputs.threads())

    # ------------------------------------------------------------------ persistence
    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the index to one versioned file (atomically: temp file + ``os.replace``). Modes
        tfidf and cider-d are written as format version 1 (readable by older vsl_ext releases),
        phrases as version 2. The format: :mod:`vsl_ext.caption_index_file`."""
        _file.write(path, self._a, self._meta)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "CaptionIndex":
        """Read an index written by :meth:`save`. A file that is not a CaptionIndex, was written by
        another format version, or is truncated or corrupt raises ``ValueError``."""
        arrays, meta = _file.read(path)
        return cls(arrays, meta)

    # ------------------------------------------------------------------ internals
    def _with_lookups(self) -> dict:
        """The arrays with the token hash table and the n-gram trie (built on first use)."""
        a = self._a
        if "tok_slots" not in a:
            a.update(dict(_C.caption_index_lookup_tables(a["tok_blob"], a["tok_off"], a["feat_prefix"],
                                                         a["feat_last"], a["order_ptr"])))
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
                r = torch.from_numpy(rows).to(dev)
                _C.caption_index_gram_cuda(d[f"{which}_indptr"].data_ptr(), d[f"{which}_indices"].data_ptr(),
                                           d[f"{which}_data"].data_ptr(), r.data_ptr(), B, _smem_cap(indptr, rows),
                                           out.data_ptr(), *_native.cuda_launch_args(dev))
            return out
        out = torch.empty((B, B), dtype=torch.float32)
        if B:
            _C.caption_index_gram_cpu(indptr, indices, data, self.vocab_size, rows, out.data_ptr(), _inputs.threads())
        return out if dev.type == "cpu" else out.to(dev)

    def _cider_matrix(self, caps: np.ndarray, gptr: np.ndarray, dev: torch.device) -> torch.Tensor:
        G = len(gptr) - 1
        a = self._a
        if dev.type == "cuda":
            d = self._on_device(dev)
            out = torch.empty((G, G), dtype=torch.float32, device=dev)
            if G:
                Pb = len(caps)
                singleton = Pb == G
                c = torch.from_numpy(caps).to(dev)
                g = torch.from_numpy(gptr).to(dev)
                scratch = out if singleton else torch.empty(Pb * Pb, dtype=torch.float32, device=dev)
                _C.caption_index_cider_matrix_cuda(
                    d["cap_indptr"].data_ptr(), d["cap_indices"].data_ptr(), d["cap_data"].data_ptr(),
                    d["inv_norm"].data_ptr(), d["cap_len"].data_ptr(), [int(x) for x in self._bounds()],
                    c.data_ptr(), Pb, g.data_ptr(), G, singleton, float(self.sigma),
                    _smem_cap(a["cap_indptr"], caps), scratch.data_ptr(), out.data_ptr(),
                    *_native.cuda_launch_args(dev))
            return out
        out = torch.empty((G, G), dtype=torch.float32)
        if G:
            _C.caption_index_cider_matrix_cpu(a["cap_indptr"], a["cap_indices"], a["cap_data"], self._inv_norm(),
                                              a["cap_len"], self._bounds(), caps, gptr, float(self.sigma),
                                              out.data_ptr(), _inputs.threads())
        return out if dev.type == "cpu" else out.to(dev)

    def _on_device(self, dev: torch.device) -> Dict[str, torch.Tensor]:
        # The CUDA kernels trust feature ids (the CPU kernels check them per query): check them
        # before the first upload.
        for n in ("cap_indices", "img_indices") if not self._device_cache else ():
            feature_ids = self._a.get(n)
            if feature_ids is not None and len(feature_ids) and not (
                    0 <= int(feature_ids.min()) <= int(feature_ids.max()) < self.vocab_size):
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
        return {"a": {k: v for k, v in self._a.items() if k in _file.PERSISTENT[self.mode]}, "meta": self._meta}

    def __setstate__(self, state):
        self.__init__(dict(state["a"]), state["meta"])


def _smem_cap(indptr: np.ndarray, rows: np.ndarray) -> int:
    """Entries per row a CUDA launch stages in shared memory: the longest of the batch's rows when
    it fits (at most _SMEM_ROW_CAP), else 0 (every row is read from global memory)."""
    nnz = int((indptr[rows + 1] - indptr[rows]).max())
    return nnz if nnz <= _SMEM_ROW_CAP else 0


def _readonly(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v

