"""Turn an image folder + captions CSV into a SCAN precomp folder: ``vsl-prepare-images``.

    vsl-prepare-images --images ../shared/data/flickr8k_mini/images \\
        --captions ../shared/data/flickr8k_mini/captions.txt --out data/f8k_mini_precomp

The CSV has a header with ``image`` and ``caption`` columns (Flickr8k's ``captions.txt`` layout), one
row per caption. Images are split by a seeded permutation of their sorted file names into
train/dev/test (default 800/100/100 - set ``--split``), features are the hand-crafted region
descriptors of :mod:`vsl_ext.harness.data.images` (4 x 4 grid + whole image, 114-d), standardised with the
training split's per-dimension mean and standard deviation. Written: ``{split}_ims.npy`` (float32,
images x 17 x 114), ``{split}_caps.txt`` (``--captions-per-image`` lines per image, CSV order),
``{split}_images.txt`` (file names) and ``prepare_config.json``.
"""
from __future__ import annotations

import argparse
import codecs
import csv
import io
import json
import os
import sys
import time
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np

from .._atomic import atomic_open, atomic_write
from .data.images import FEATURE_DIM, image_features

_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def read_caption_csv(path: str, encoding: str = "utf-8") -> "OrderedDict[str, List[str]]":
    """The captions of a CSV with a header naming ``image`` and ``caption`` columns, grouped by image
    name in file order (Flickr8k's ``captions.txt``; other columns are ignored).

    Reads what Python's ``csv`` module reads from the file opened with ``encoding="utf-8-sig"`` and
    ``newline=""`` (https://docs.python.org/3/library/csv.html), as spreadsheets and editors write it:
    a UTF-8 byte order mark, CRLF or LF line ends, quoted fields (commas, quotes and line breaks
    inside a caption), blank lines and lines of whitespace (skipped, as ``csv.DictReader`` skips
    empty rows), whitespace around header names and image names (stripped) and inside captions
    (runs collapsed to one space, so a caption is one line of a SCAN caption file).
    ``encoding``: another text encoding (``"cp1252"``, ``"utf-16"``, ...).

    Raises FileNotFoundError, or ValueError naming the file, the 1-based line and what was expected
    for: bytes that are not valid in ``encoding`` (a UTF-16 file read as UTF-8 is named as such), a
    header without ``image`` and ``caption``, a row with more or fewer fields than the header (where
    ``csv.DictReader`` would silently drop the text after an unquoted comma, or fill in None), an
    empty image name, or a file without captions. One deliberate difference from ``csv``: those
    field-count mismatches are errors, not silent truncations.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"captions file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    try:
        codec = codecs.lookup(encoding).name
    except (LookupError, TypeError):
        raise ValueError(f"encoding: unknown text encoding {encoding!r}") from None
    if codec == "utf-8":
        codec = "utf-8-sig"        # a byte order mark is dropped, as csv users open such files
    if data.startswith(_UTF16_BOMS) and not codec.startswith("utf-16"):
        raise ValueError(f"{path}, line 1: a UTF-16 file (byte order mark {data[:2].hex(' ').upper()}), expected "
                         f"{encoding}: save it as UTF-8 CSV, or pass encoding='utf-16'")
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1)
        raise ValueError(f"{path}, line {line}: not valid {encoding} at byte {column} of the line ({exc.reason}: "
                         f"{data[exc.start:exc.start + 4]!r}); expected a {encoding} CSV (or pass its "
                         f"encoding)") from None
    reader = csv.reader(io.StringIO(text, newline=""))

    def rows():
        for row in reader:
            if any(field.strip() for field in row):     # blank lines and lines of whitespace are not rows
                yield reader.line_num, row

    rows = rows()
    header_line, header = next(rows, (1, None))
    names = [h.strip() for h in header] if header is not None else None
    if names is None or "image" not in names or "caption" not in names:
        raise ValueError(f"{path}, line {header_line}: expected a CSV header holding 'image' and 'caption' columns, "
                         f"got {names}")
    image_col, caption_col = names.index("image"), names.index("caption")
    groups: "OrderedDict[str, List[str]]" = OrderedDict()
    for line, row in rows:
        if len(row) != len(names):
            raise ValueError(f"{path}, line {line}: {len(row)} fields, expected {len(names)} ({','.join(names)}); "
                             f"a caption that holds a comma must be quoted (\"a dog, running\")")
        image = row[image_col].strip()
        if not image:
            raise ValueError(f"{path}, line {line}: empty image name, expected a file name in column 'image'")
        groups.setdefault(image, []).append(" ".join(row[caption_col].split()))
    if not groups:
        raise ValueError(f"{path} holds no captions (expected rows image,caption after the header)")
    return groups


def _features(path: str, grid: int, size: int) -> np.ndarray:
    """:func:`image_features` of one file; a file that is no readable image raises ValueError naming it."""
    try:
        return image_features(path, grid, size)
    except ImportError:
        raise
    except Exception as exc:  # Pillow: UnidentifiedImageError, OSError (truncated), DecompressionBombError, ...
        raise ValueError(f"{path} is not a readable image ({type(exc).__name__}: {exc})") from None


def prepare(images: str, captions: str, out: str, split: Sequence[int] = (800, 100, 100), seed: int = 0,
            captions_per_image: int = 5, grid: int = 4, size: int = 192, log=print,
            encoding: str = "utf-8", overwrite: bool = False) -> Dict[str, int]:
    """Write the SCAN precomp folder ``out``; a folder that already holds one (``prepare_config.json``
    or a ``*_ims.npy``) raises FileExistsError unless ``overwrite``."""
    if os.path.isdir(out) and not overwrite:
        held = sorted(n for n in os.listdir(out) if n == "prepare_config.json" or n.endswith("_ims.npy"))
        if held:
            raise FileExistsError(f"{out} already holds a dataset ({', '.join(held[:3])}): pass --overwrite to "
                                  f"replace it, or pick another --out")
    groups = read_caption_csv(captions, encoding)
    names = sorted(groups)
    missing = [n for n in names if not os.path.isfile(os.path.join(images, n))]
    if missing:
        raise FileNotFoundError(f"{len(missing)} images named in {captions} are not in {images}, "
                                f"e.g. {missing[:3]}")
    short = [n for n in names if len(groups[n]) < captions_per_image]
    if short:
        raise ValueError(f"{len(short)} images have fewer than {captions_per_image} captions, e.g. {short[0]} "
                         f"({len(groups[short[0]])}); set --captions-per-image")
    if sum(split) > len(names):
        raise ValueError(f"--split {'/'.join(map(str, split))} needs {sum(split)} images, {captions} names "
                         f"{len(names)}")
    perm = np.random.default_rng(seed).permutation(len(names))
    bounds = np.cumsum([0] + list(split))
    parts = {s: [names[i] for i in perm[bounds[k]:bounds[k + 1]]] for k, s in enumerate(("train", "dev", "test"))}
    t0 = time.perf_counter()
    feats = {}   # every image is read before anything is written: an unreadable one leaves no output
    for s, files in parts.items():
        feats[s] = np.stack([_features(os.path.join(images, n), grid, size) for n in files]) \
            if files else np.zeros((0, grid * grid + 1, FEATURE_DIM), np.float32)
    mean = feats["train"].reshape(-1, FEATURE_DIM).mean(0)
    std = feats["train"].reshape(-1, FEATURE_DIM).std(0) + 1e-6
    os.makedirs(out, exist_ok=True)
    for s, files in parts.items():   # each file whole or not at all (a kill leaves no half-written file)
        with atomic_open(os.path.join(out, f"{s}_ims.npy")) as f:
            np.save(f, ((feats[s] - mean) / std).astype(np.float32))
        atomic_write(os.path.join(out, f"{s}_caps.txt"),
                     "".join(c + "\n" for n in files for c in groups[n][:captions_per_image]))
        atomic_write(os.path.join(out, f"{s}_images.txt"), "".join(n + "\n" for n in files))
    meta = {"images": os.path.abspath(images), "captions": os.path.abspath(captions), "split": list(split),
            "seed": seed, "captions_per_image": captions_per_image, "grid": grid, "size": size,
            "regions": grid * grid + 1, "feature_dim": FEATURE_DIM,
            "features": "HSV histogram 8x3x3 (sqrt) + HOG 9 orientations x 2x2 cells + RGB mean/std, "
                        "standardised with train statistics"}
    atomic_write(os.path.join(out, "prepare_config.json"), json.dumps(meta, indent=1))
    counts = {s: len(v) for s, v in parts.items()}
    log(f"wrote {out}: " + ", ".join(f"{s} {n} images" for s, n in counts.items()) +
        f", {grid * grid + 1} regions x {FEATURE_DIM} features, {time.perf_counter() - t0:.1f} s")
    return counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="vsl-prepare-images", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, help="folder with the image files")
    p.add_argument("--captions", required=True, help="CSV with header image,caption (one row per caption)")
    p.add_argument("--out", required=True, help="output SCAN precomp folder")
    p.add_argument("--split", default="800,100,100", help="train,dev,test image counts")
    p.add_argument("--seed", type=int, default=0, help="seed of the split permutation")
    p.add_argument("--captions-per-image", type=int, default=5)
    p.add_argument("--grid", type=int, default=4, help="grid x grid regions (+1 whole-image region)")
    p.add_argument("--size", type=int, default=192, help="images are resized to size x size")
    p.add_argument("--encoding", default="utf-8", help="text encoding of the captions CSV (default utf-8, with or "
                   "without a byte order mark; e.g. cp1252, utf-16)")
    p.add_argument("--overwrite", action="store_true", help="replace the dataset that --out already holds")
    args = p.parse_args(argv)
    try:
        split = [int(x) for x in args.split.split(",")]
        if len(split) != 3 or min(split) < 0:
            raise ValueError(f"--split must be three counts train,dev,test, got {args.split!r}")
        prepare(args.images, args.captions, args.out, split, args.seed, args.captions_per_image, args.grid, args.size,
                encoding=args.encoding, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as exc:
        print(f"vsl-prepare-images: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
