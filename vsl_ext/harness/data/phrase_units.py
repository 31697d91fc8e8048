"""Phrase units of captions: the text side's phrase grain (SSAMT) and the phrase-level labels.

Every caption is parsed into its text scene graph by :func:`vsl_ext.phrases.parse` (spaCy; the
``phrases`` or ``test`` extra). Its **phrase units** are the graph's

* entities ``"dog"``: kind 1, slots ``(entity, -, -)``, text ``"dog"``;
* attributes ``("dog", "red")``: kind 2, slots ``(entity, modifier, -)``, text ``"red dog"``;
* triples ``("man", "ride", "horse")``: kind 3, slots ``(subject, relation, object)``, text
  ``"man ride horse"``;

in that order, each kind in order of first mention. A unit's **label** is its
:meth:`vsl_ext.phrases.PhraseLabels.labels` string (``"entity\\tdog"``,
``"attribute\\tdog\\tred"``, ``"triple\\tman\\tride\\thorse"``), numbered per split in sorted order.
The label set ``L_i`` of image i is the union of the labels of all its captions (all of them, not
only those in a batch). Words are lemmas, tokenised with :func:`vocab.tokenize` and encoded with the
run's vocabulary (0 = padding, unknown words = ``<unk>``).

:func:`attach_phrases` parses a split once (the parse is cached in a file next to the captions,
``{split}_caps.phrases``, or in a fallback folder when the data folder is not writable) and stores
the result as ``split.phrases``; :meth:`CaptionPhrases.batch` then gives the padded tensors of a
batch of captions.
"""
from __future__ import annotations

import os
import tempfile
from array import array
from typing import List, NamedTuple, Optional, Sequence

import numpy as np
import torch

from .vocab import Vocabulary, tokenize

KINDS = ("entity", "attribute", "triple")   # kind ids 1, 2, 3; 0 is padding
SLOTS = 3


class PhraseBatch(NamedTuple):
    """Padded phrase units of B captions (P = most units of a caption in the batch, at least 1).

    Attributes:
        slots: int64 (B, P, 3, W) word ids of each unit's slots (subject/entity, relation/modifier,
            object), 0-padded; W >= 1.
        kinds: int64 (B, P): 1 entity, 2 attribute, 3 triple, 0 padding (a caption with no units
            has a row of zeros).
        labels: int64 (B, P): label id in the split's label numbering, -1 at padding.
        text: int64 (B, P, T) word ids of the unit's text in reading order ("red dog",
            "man ride horse"), 0-padded; T >= 1.
        text_lengths: int64 (B, P): words in ``text`` (0 at padding).
    """
    slots: torch.Tensor
    kinds: torch.Tensor
    labels: torch.Tensor
    text: torch.Tensor
    text_lengths: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """bool (B, P), True at real units."""
        return self.kinds > 0

    def to(self, device) -> "PhraseBatch":
        return PhraseBatch(*(t.to(device) for t in self))


def _unit_fields(lab) -> List[tuple]:
    """(kind, label string, slot strings, reading-order string) of every unit of one PhraseLabels."""
    out = [(1, "entity\t" + e, (e, "", ""), e) for e in lab.entities]
    out += [(2, "attribute\t" + n + "\t" + m, (n, m, ""), m + " " + n) for n, m in lab.attributes]
    out += [(3, "triple\t" + "\t".join(t), t, " ".join(t)) for t in lab.triples]
    return out


def phrase_texts(labels: Sequence) -> List[str]:
    """The reading-order text of every unit of the given PhraseLabels (for building a vocabulary
    that holds the lemmas, e.g. "ride" when the captions only say "riding")."""
    return [f[3] for lab in labels for f in _unit_fields(lab)]


def _ragged_take(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(n, max(1, lengths.max())) int64: row k holds ``flat[starts[k]:starts[k] + lengths[k]]``, 0-padded."""
    width = max(1, int(lengths.max()) if lengths.size else 1)
    pos = np.arange(width)
    keep = pos[None, :] < lengths[:, None]
    idx = np.where(keep, starts[:, None] + pos[None, :], 0)
    return np.where(keep, flat[idx] if flat.size else 0, 0).astype(np.int64)


class CaptionPhrases:
    """The phrase units of every caption of a split, encoded with a vocabulary.

    Storage is ragged (int32 word arrays with offsets), about 50 MB for COCO's 566K training
    captions; :meth:`batch` pads a batch's units.

    Args:
        labels: one :class:`vsl_ext.phrases.PhraseLabels` per caption, in caption order.
        vocab: the vocabulary of the run's caption encoder.
        captions_per_image: consecutive captions per image (caption c belongs to image
            ``c // captions_per_image``).

    Raises ``ValueError`` when ``len(labels)`` is not a multiple of ``captions_per_image``.
    """

    def __init__(self, labels: Sequence, vocab: Vocabulary, captions_per_image: int):
        if captions_per_image < 1 or len(labels) % captions_per_image:
            raise ValueError(f"{len(labels)} captions' labels do not split into images of captions_per_image="
                             f"{captions_per_image}")
        self.captions_per_image = captions_per_image
        first_seen: dict = {}                 # label string -> id in order of first mention
        words_of: dict = {}                   # text -> word ids (memoised: names repeat a lot)
        counts = array("q")
        kinds, label_ids, slot_len, slot_words, text_len, text_words = (array("b"), array("q"), array("i"),
                                                                        array("i"), array("i"), array("i"))

        def ids_of(text: str):
            got = words_of.get(text)
            if got is None:
                got = words_of[text] = vocab_ids(vocab, text)
            return got

        for lab in labels:
            units = _unit_fields(lab)
            counts.append(len(units))
            for kind, name, slots, text in units:
                kinds.append(kind)
                label_ids.append(first_seen.setdefault(name, len(first_seen)))
                for field in slots:
                    ids = ids_of(field)
                    slot_len.append(len(ids))
                    slot_words.extend(ids)
                ids = ids_of(text)
                text_len.append(len(ids))
                text_words.extend(ids)
        self.label_names: List[str] = sorted(first_seen)
        rank = np.empty(len(first_seen), dtype=np.int64)
        rank[[first_seen[n] for n in self.label_names]] = np.arange(len(first_seen))
        counts_np = np.frombuffer(counts, dtype=np.int64) if len(counts) else np.zeros(0, np.int64)
        self.caption_ptr = np.concatenate([[0], np.cumsum(counts_np)]).astype(np.int64)
        self.kinds = np.array(kinds, dtype=np.int64)
        self.labels = rank[np.array(label_ids, dtype=np.int64)] if len(label_ids) else np.zeros(0, np.int64)
        self.slot_lengths = np.array(slot_len, dtype=np.int64).reshape(-1, SLOTS)          # (U, 3)
        self.slot_starts = (np.cumsum(self.slot_lengths.reshape(-1)) - self.slot_lengths.reshape(-1)).reshape(-1, SLOTS)
        self.slot_words = np.array(slot_words, dtype=np.int32)
        self.text_lengths = np.array(text_len, dtype=np.int64)
        self.text_starts = np.cumsum(self.text_lengths) - self.text_lengths
        self.text_words = np.array(text_words, dtype=np.int32)
        # image label sets as sorted keys image * n_labels + label (for a vectorised membership test)
        self.num_images = len(labels) // captions_per_image
        image_of_unit = np.repeat(np.arange(len(labels), dtype=np.int64) // captions_per_image, counts_np)
        self._keys = np.unique(image_of_unit * max(1, len(self.label_names)) + self.labels)

    def __len__(self) -> int:
        return len(self.caption_ptr) - 1

    def units_of(self, caption_id: int) -> List[str]:
        """The label strings of one caption's units, in unit order."""
        a, b = self.caption_ptr[caption_id], self.caption_ptr[caption_id + 1]
        return [self.label_names[i] for i in self.labels[a:b]]

    def batch(self, caption_ids) -> PhraseBatch:
        """Padded :class:`PhraseBatch` of the given captions (ids into this split)."""
        ids = np.asarray(caption_ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise IndexError(f"caption id out of range [0, {len(self)})")
        starts, counts = self.caption_ptr[ids], self.caption_ptr[ids + 1] - self.caption_ptr[ids]
        B, P = len(ids), max(1, int(counts.max()) if len(ids) else 1)
        rows = np.repeat(np.arange(B), counts)
        cols = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        src = np.repeat(starts, counts) + cols                                   # unit ids, in batch order
        slot_part = _ragged_take(self.slot_words, self.slot_starts[src].reshape(-1),
                                 self.slot_lengths[src].reshape(-1))
        text_part = _ragged_take(self.text_words, self.text_starts[src], self.text_lengths[src])
        slots = np.zeros((B, P, SLOTS, slot_part.shape[1]), dtype=np.int64)
        text = np.zeros((B, P, text_part.shape[1]), dtype=np.int64)
        kinds = np.zeros((B, P), dtype=np.int64)
        labels = np.full((B, P), -1, dtype=np.int64)
        text_lengths = np.zeros((B, P), dtype=np.int64)
        slots[rows, cols] = slot_part.reshape(len(src), SLOTS, slot_part.shape[1])
        text[rows, cols] = text_part
        kinds[rows, cols] = self.kinds[src]
        labels[rows, cols] = self.labels[src]
        text_lengths[rows, cols] = self.text_lengths[src]
        return PhraseBatch(*(torch.from_numpy(a) for a in (slots, kinds, labels, text, text_lengths)))

    def image_has_label(self, image_ids, labels) -> np.ndarray:
        """bool (len(image_ids), *labels.shape): ``labels[...]`` is in the label set ``L_i`` of image
        ``image_ids[i]`` (label -1, padding, is in none)."""
        img = np.asarray(image_ids, dtype=np.int64).reshape(-1)
        lab = np.asarray(labels, dtype=np.int64)
        if img.size and (img.min() < 0 or img.max() >= self.num_images):
            raise IndexError(f"image id out of range [0, {self.num_images})")
        if self._keys.size == 0:
            return np.zeros(img.shape + lab.shape, dtype=bool)
        q = img.reshape((-1,) + (1,) * lab.ndim) * max(1, len(self.label_names)) + lab
        pos = np.minimum(np.searchsorted(self._keys, q), self._keys.size - 1)
        return (self._keys[pos] == q) & (lab >= 0)


def vocab_ids(vocab: Vocabulary, text: str) -> List[int]:
    """Word ids of a phrase field (no ``<start>``/``<end>``); an empty field gives []."""
    return [vocab(w) for w in tokenize(text)]


def _writable(folder: str) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def phrase_cache_path(caps_path: str, fallback_dir: Optional[str] = None) -> Optional[str]:
    """Where the parse of ``{split}_caps.txt`` is cached: ``{split}_caps.phrases`` beside it when
    that folder is writable, else the same name in ``fallback_dir`` (created), else None (no cache)."""
    name = os.path.basename(caps_path)
    name = (name[:-4] if name.endswith(".txt") else name) + ".phrases"
    folder = os.path.dirname(os.path.abspath(caps_path))
    if _writable(folder):
        return os.path.join(folder, name)
    if fallback_dir is not None:
        os.makedirs(fallback_dir, exist_ok=True)
        if _writable(fallback_dir):
            return os.path.join(fallback_dir, name)
    return None


def parse_split(split, fallback_dir: Optional[str] = None) -> list:
    """:func:`vsl_ext.phrases.parse` of a :class:`PrecompSplit`'s captions, cached (see
    :func:`phrase_cache_path`)."""
    from ...phrases import parse
    return parse(split.captions, cache=phrase_cache_path(split.caps_path, fallback_dir))


def attach_phrases(split, vocab: Optional[Vocabulary] = None, fallback_dir: Optional[str] = None,
                   labels: Optional[Sequence] = None) -> CaptionPhrases:
    """Parse (or read the cached parse of) ``split``'s captions and store their phrase units as
    ``split.phrases``; returns them. ``vocab`` defaults to the split's own; ``labels`` (one
    PhraseLabels per caption) skips the parse. Raises ImportError without spaCy (the message says
    what to install)."""
    vocab = vocab if vocab is not None else split.vocab
    if vocab is None:
        raise ValueError("attach_phrases needs a vocabulary (the split was opened without one)")
    if labels is None:
        labels = parse_split(split, fallback_dir)
    split.phrases = CaptionPhrases(labels, vocab, split.captions_per_image)
    return split.phrases


def split_phrases(split, fallback_dir: Optional[str] = None) -> CaptionPhrases:
    """``split.phrases``, attaching them first if needed."""
    phrases = getattr(split, "phrases", None)
    return phrases if phrases is not None else attach_phrases(split, fallback_dir=fallback_dir)
