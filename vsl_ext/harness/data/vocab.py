"""Word vocabulary for caption encoders, compatible with SCAN's ``{name}_vocab.json`` files."""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from typing import Dict, Iterable, List, Sequence

from ..._atomic import atomic_write

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def tokenize(caption: str) -> List[str]:
    """Lower-cased word and punctuation tokens (close to SCAN's ``nltk.word_tokenize(caption.lower())``)."""
    return _TOKEN.findall(caption.lower())


class Vocabulary:
    """word <-> id map; ids 0..3 are ``<pad>``, ``<start>``, ``<end>``, ``<unk>`` as in SCAN."""

    def __init__(self, words: Sequence[str] = ()):
        self.idx2word: List[str] = []
        self.word2idx: Dict[str, int] = {}
        for w in SPECIALS:
            self.add(w)
        for w in words:
            self.add(w)

    def add(self, word: str) -> int:
        if word not in self.word2idx:
            self.word2idx[word] = len(self.idx2word)
            self.idx2word.append(word)
        return self.word2idx[word]

    def __len__(self) -> int:
        return len(self.idx2word)

    def __contains__(self, word: str) -> bool:
        return word in self.word2idx

    def __call__(self, word: str) -> int:
        return self.word2idx.get(word, self.word2idx[UNK])

    def encode(self, caption: str) -> List[int]:
        """``<start> w1 .. wn <end>`` ids (unknown words -> ``<unk>``)."""
        return [self.word2idx[START]] + [self(w) for w in tokenize(caption)] + [self.word2idx[END]]

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> "Vocabulary":
        """Words occurring at least ``min_count`` times in ``captions`` (SCAN uses 4 for COCO), sorted by
        decreasing frequency then alphabetically, so the ids are deterministic."""
        counts = Counter(w for c in captions for w in tokenize(c))
        words = sorted((w for w, n in counts.items() if n >= min_count and w not in SPECIALS),
                       key=lambda w: (-counts[w], w))
        return cls(words)

    def to_json_dict(self) -> dict:
        return {"word2idx": dict(self.word2idx), "idx2word": {str(i): w for i, w in enumerate(self.idx2word)},
                "idx": len(self.idx2word)}

    def save(self, path: str) -> None:
        """SCAN's vocab json layout (``word2idx``, ``idx2word``, ``idx``), written atomically with the
        umask's mode (a replaced file keeps its own): :func:`vsl_ext._atomic.atomic_write`."""
        atomic_write(path, json.dumps(self.to_json_dict()))

    @classmethod
    def from_words(cls, idx2word: Sequence[str]) -> "Vocabulary":
        """Exactly the given id order (used when restoring from a checkpoint)."""
        v = cls.__new__(cls)
        v.idx2word = list(idx2word)
        v.word2idx = {w: i for i, w in enumerate(v.idx2word)}
        missing = [w for w in SPECIALS if w not in v.word2idx]
        if missing:
            raise ValueError(f"vocabulary lacks the special tokens {missing}")
        return v

    @classmethod
    def load(cls, path: str) -> "Vocabulary":
        """A SCAN vocab json (``{"word2idx": .., "idx2word": {"0": "<pad>", ..}, "idx": n}``)."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"vocabulary file not found: {path}")
        with open(path, "rb") as f:
            data = f.read()
        try:      # JSON is UTF-8 (RFC 8259); a byte order mark, as some editors write, is dropped
            d = json.loads(data.decode("utf-8-sig"))
        except UnicodeDecodeError as exc:
            line = data[:exc.start].count(b"\n") + 1
            raise ValueError(f"{path}, line {line}: not valid UTF-8 ({exc.reason}); expected a UTF-8 JSON "
                             f"file") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(d, dict) or "idx2word" not in d:
            raise ValueError(f"{path} is not a SCAN vocab json (expected keys word2idx, idx2word, idx)")
        i2w = d["idx2word"]
        if isinstance(i2w, dict):
            words = [i2w[str(i)] for i in range(len(i2w))]
        else:
            words = list(i2w)
        return cls.from_words(words)
