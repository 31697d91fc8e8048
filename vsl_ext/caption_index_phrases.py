"""Mode "phrases" of :class:`vsl_ext.CaptionIndex`: the index arrays from scene-graph labels
(:mod:`vsl_ext.phrases`, SSAMT, Fan et al., ICMR 2023).

Each image is a bag of labels over its captions (tf = number of its captions holding the label),
weighted by scikit-learn's smooth idf with images as documents, ``ln((1 + N) / (1 + df)) + 1``,
l2-normalised. Built in numpy; the Gram kernels of mode tfidf compute the similarities.
"""
from __future__ import annotations

import itertools
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

from .caption_index_inputs import encode, image_offsets


def label_sets(groups) -> Tuple[List[Tuple[str, ...]], np.ndarray]:
    """The label strings of every caption of ``groups`` (one entry per image, each a non-empty list
    of :class:`vsl_ext.phrases.PhraseLabels`), checked, and the (images + 1) int64 caption offsets."""
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
    return sets, image_offsets(counts)


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


def phrase_arrays(labels: List[Sequence[str]], img_ptr: np.ndarray) -> Dict[str, np.ndarray]:
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
    blob, off = encode(vocab)
    return {"img_ptr": img_ptr, "tok_blob": blob, "tok_off": off, "df": df.astype(np.int32), "idf": idf,
            "img_indptr": indptr, "img_indices": cols.astype(np.int32),
            "img_data": (w / norm[rows]).astype(np.float32)}
