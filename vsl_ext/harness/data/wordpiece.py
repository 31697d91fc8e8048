"""BERT's WordPiece tokenisation for the ``bert`` text encoder, from a checkpoint's ``vocab.txt``.

:class:`WordPieceVocabulary` has the interface of :class:`~.vocab.Vocabulary` that the harness uses
(``encode``, ``len``, ``idx2word``, ``save``), so a :class:`~.precomp.PrecompSplit` encodes its
captions with it unchanged. ``encode`` gives ``[CLS] pieces [SEP]`` ids as BERT's tokenizer does
(Devlin et al. 2019; the rules of ``BertTokenizer`` in Hugging Face transformers):

* basic tokenisation: control characters removed, whitespace normalised, CJK ideographs split into
  single characters, lower-casing and accent stripping (NFD, combining marks dropped) when
  ``do_lower_case``, then splits at whitespace and around every punctuation character (ASCII
  symbols and Unicode category P*);
* WordPiece: each word is split greedily into the longest vocabulary entries from the left,
  continuation pieces prefixed ``##``; a word with no such split, or longer than 100 characters,
  becomes ``[UNK]``.

It needs no package besides the standard library: the word list and the lower-casing flag are all
there is, and checkpoints store both.
"""
from __future__ import annotations

import io
import json
import os
import unicodedata
from typing import Dict, List, Sequence

from ..._atomic import atomic_write

CLS, SEP, UNK, PAD = "[CLS]", "[SEP]", "[UNK]", "[PAD]"
MAX_WORD_CHARS = 100
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
               (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(a <= cp <= b for a, b in _CJK_RANGES)


def basic_tokenize(text: str, do_lower_case: bool = True) -> List[str]:
    """BERT's basic tokenisation (see the module doc): words and single punctuation characters."""
    chars = []
    for ch in text:
        if ch in ("\x00", "\ufffd") or _is_control(ch):
            continue
        if _is_cjk(ch):
            chars += [" ", ch, " "]
        else:
            chars.append(" " if _is_whitespace(ch) else ch)
    words = []
    for word in "".join(chars).split():
        if do_lower_case:
            word = "".join(c for c in unicodedata.normalize("NFD", word.lower()) if unicodedata.category(c) != "Mn")
        current = ""
        for ch in word:
            if _is_punctuation(ch):
                if current:
                    words.append(current)
                words.append(ch)
                current = ""
            else:
                current += ch
        if current:
            words.append(current)
    return words


def _read_utf8(path: str) -> str:
    """A UTF-8 text file (a byte order mark dropped); a byte that is not UTF-8 raises ValueError
    naming the file and line."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not valid UTF-8 ({exc.reason}); expected a UTF-8 text file") from None


class WordPieceVocabulary:
    """A BERT WordPiece vocabulary (ids = positions in ``vocab.txt``).

    Args:
        words: the tokens in id order (must include ``[CLS]``, ``[SEP]`` and ``[UNK]``).
        do_lower_case: lower-case and strip accents before splitting (True for ``bert-base-uncased``,
            the model 3SHNet uses).

    Raises:
        ValueError: a special token is missing or a token occurs twice.
    """

    kind = "wordpiece"

    def __init__(self, words: Sequence[str], do_lower_case: bool = True):
        self.idx2word: List[str] = list(words)
        self.word2idx: Dict[str, int] = {w: i for i, w in enumerate(self.idx2word)}
        if len(self.word2idx) != len(self.idx2word):
            raise ValueError("the WordPiece vocabulary lists a token twice")
        missing = [w for w in (CLS, SEP, UNK) if w not in self.word2idx]
        if missing:
            raise ValueError(f"the WordPiece vocabulary lacks the special tokens {missing}")
        self.do_lower_case = bool(do_lower_case)

    @classmethod
    def from_pretrained_dir(cls, path: str) -> "WordPieceVocabulary":
        """The vocabulary of a local BERT checkpoint folder: ``vocab.txt`` and, when present,
        ``do_lower_case`` from ``tokenizer_config.json`` (default True)."""
        vocab_file = os.path.join(path, "vocab.txt")
        if not os.path.isfile(vocab_file):
            raise FileNotFoundError(f"--bert-path {path}: no vocab.txt (the WordPiece vocabulary of the checkpoint)")
        # one token per line as transformers' load_vocab reads it (text mode: lines end at LF, CRLF or
        # CR), with a UTF-8 byte order mark dropped
        words = [line.rstrip("\n") for line in io.StringIO(_read_utf8(vocab_file), newline=None)]
        while words and not words[-1]:
            words.pop()
        lower = True
        config_file = os.path.join(path, "tokenizer_config.json")
        if os.path.isfile(config_file):
            try:
                config = json.loads(_read_utf8(config_file))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{config_file} is not valid JSON: {exc}") from None
            if not isinstance(config, dict):
                raise ValueError(f"{config_file}: expected a JSON object, got {type(config).__name__}")
            lower = bool(config.get("do_lower_case", True))
        return cls(words, lower)

    def __len__(self) -> int:
        return len(self.idx2word)

    def __contains__(self, word: str) -> bool:
        return word in self.word2idx

    def wordpieces(self, word: str) -> List[str]:
        """Greedy longest-match-first split of one basic token (``[UNK]`` when impossible)."""
        if len(word) > MAX_WORD_CHARS:
            return [UNK]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.word2idx:
                    break
                end -= 1
            if end == start:
                return [UNK]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, caption: str) -> List[str]:
        return [p for w in basic_tokenize(caption, self.do_lower_case) for p in self.wordpieces(w)]

    def encode(self, caption: str) -> List[int]:
        """``[CLS] pieces [SEP]`` ids."""
        return [self.word2idx[t] for t in [CLS] + self.tokenize(caption) + [SEP]]

    def spec(self) -> dict:
        """What a checkpoint stores besides the word list to rebuild this tokeniser."""
        return {"kind": self.kind, "do_lower_case": self.do_lower_case}

    def save(self, path: str) -> None:
        """JSON with the word list (SCAN's vocab layout plus ``kind`` and ``do_lower_case``), atomically."""
        atomic_write(path, json.dumps({**self.spec(), "word2idx": dict(self.word2idx),
                                       "idx2word": {str(i): w for i, w in enumerate(self.idx2word)},
                                       "idx": len(self.idx2word)}))


def tokenizer_spec(vocab) -> dict:
    """``{"kind": "wordpiece", "do_lower_case": ..}`` for a WordPiece vocabulary, ``{"kind": "words"}``
    for the harness's word vocabulary."""
    return vocab.spec() if isinstance(vocab, WordPieceVocabulary) else {"kind": "words"}


def vocabulary_from_checkpoint(ckpt: dict):
    """The caption vocabulary a ``vsl-train`` checkpoint was trained with."""
    from .vocab import Vocabulary

    spec = ckpt.get("tokenizer") or {"kind": "words"}
    if spec.get("kind") == WordPieceVocabulary.kind:
        return WordPieceVocabulary(ckpt["vocab"], spec.get("do_lower_case", True))
    return Vocabulary.from_words(ckpt["vocab"])
