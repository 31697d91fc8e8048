"""The one reader of SCAN "precomp" caption files (``{split}_caps.txt``), with SCAN's line semantics.

SCAN (Lee et al., ECCV 2018; ``kuanghuei/SCAN`` ``data.py``, ``PrecompDataset``) and SGRAF (Diao et
al., AAAI 2021; ``Paranioar/SGRAF`` ``data.py``) read a caption file as::

    for line in open(path, 'rb'):
        captions.append(line.strip())

and decode each caption as UTF-8 when they tokenize it. That is:

* the file is split at ``\\n`` (byte 0x0A) only. A CR, form feed, vertical tab, NEL, U+2028 LINE
  SEPARATOR or U+2029 PARAGRAPH SEPARATOR inside a line does not end it (``str.splitlines()``
  splits at all of them and would shift every later caption to another image);
* an empty piece after the last ``\\n`` is not a line; a last line without ``\\n`` is one;
* every line is stripped of ASCII whitespace (``bytes.strip()``: space, ``\\t``, ``\\n``, ``\\r``,
  ``\\x0b``, ``\\x0c``) at both ends, so CRLF files read like LF files; whitespace inside a caption
  (U+2028 included) is kept;
* blank lines are captions (empty ones), wherever they are, trailing blank lines included: they
  count, so a file with blank lines at its end has more captions than images x captions-per-image
  and is rejected by the count checks of its users (:func:`trailing_blank_lines` helps them say why).

One deliberate difference: a UTF-8 byte order mark at the start of the file is dropped (SCAN keeps
it glued to the first word of the first caption, making it an unknown word). It changes no count.
"""
import codecs
import os
from typing import List, Sequence, Union

_ASCII_WHITESPACE = b" \t\n\r\x0b\x0c"   # what bytes.strip() removes
_BOM = b"\xef\xbb\xbf"


def read_scan_captions(path: Union[str, "os.PathLike[str]"], encoding: str = "utf-8") -> List[str]:
    """The captions of a SCAN caption file, one per line, in file order (SCAN/SGRAF semantics above).

    Args:
        path: the ``{split}_caps.txt`` file (CRLF line ends are fine).
        encoding: the file's text encoding: UTF-8 (SCAN's) or another ASCII-compatible one
            (latin-1, cp1252, ...), since lines are split and stripped as bytes.

    Returns:
        list of str, one per line; blank lines give ``""``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line does not decode (the message names the file, the 1-based line and the
            byte offset in that line), or ``encoding`` is unknown or not ASCII-compatible.
    """
    path = os.fspath(path)
    try:
        codec = codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise ValueError(f"encoding: unknown text encoding {encoding!r}") from None
    if (_ASCII_WHITESPACE + b"a").decode(codec.name, "replace") != _ASCII_WHITESPACE.decode("ascii") + "a":
        raise ValueError(f"encoding must be ASCII-compatible (caption files are split at byte 0x0A), got {encoding!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"caption file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    name = "utf-8" if codec.name == "utf-8-sig" else codec.name
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValueError(f"{path}, line 1: a UTF-16 file (byte order mark {data[:2].hex(' ').upper()}), expected "
                         f"{encoding}, one caption per line; SCAN caption files are UTF-8: save it as UTF-8")
    if name == "utf-8" and data.startswith(_BOM):
        data = data[len(_BOM):]
    pieces = data.split(b"\n")
    if pieces[-1] == b"":          # the file ends with "\n" (or is empty): no line after it
        pieces.pop()
    captions = []
    for number, raw in enumerate(pieces, start=1):
        try:
            captions.append(raw.strip(_ASCII_WHITESPACE).decode(name))
        except UnicodeDecodeError as exc:
            offset = exc.start + (len(raw) - len(raw.lstrip(_ASCII_WHITESPACE)))
            raise ValueError(f"{path}, line {number}: not valid {encoding} at byte {offset} of the line "
                             f"({exc.reason}: {raw[offset:offset + 4]!r}); SCAN caption files are UTF-8") from None
    return captions


def trailing_blank_lines(captions: Sequence[str]) -> int:
    """How many of ``captions`` at the end are blank (SCAN counts them as captions)."""
    n = 0
    while n < len(captions) and captions[len(captions) - 1 - n] == "":
        n += 1
    return n


def count_hint(captions: Sequence[str]) -> str:
    """A sentence for count-mismatch errors when the file ends in blank lines, else ``""``."""
    blank = trailing_blank_lines(captions)
    if not blank:
        return ""
    return (f" (the last {blank} line{'s' if blank > 1 else ''} {'are' if blank > 1 else 'is'} blank; SCAN's "
            "readers count a blank line as a caption: remove trailing blank lines)")
