"""How the lines of ``{split}_caps.txt`` pair with the rows of ``{split}_ims.npy``.

SCAN's ``PrecompDataset`` (kuanghuei/SCAN ``data.py``; SGRAF's is the same) pairs caption ``i`` with
feature row ``i // im_div``, where ``im_div = 1`` if the file has as many rows as captions and 5
otherwise, without checking either: 10 rows and 10 captions (one caption per image) read with 5
captions per image would pair 8 captions with another image's row. Its evaluation
(``evalrank``) then keeps every 5th row as the images, i.e. it takes equal counts to mean that every
image's row is repeated once per caption (the layout of some older releases).

Here nothing is guessed. With ``captions_per_image = k``, ``n`` caption lines and ``r`` rows:

* ``n == r * k``: one row per image; caption ``i`` -> row ``i // k`` (``k = 1``: caption ``i`` ->
  row ``i``, SCAN's equal-count rule);
* ``n == r`` and ``k > 1``: the file claims to repeat each image's row once per caption; that is
  verified (every group of ``k`` consecutive rows must be bitwise copies of its first row, all groups
  of a file up to :data:`VERIFY_ALL_BYTES`, else :data:`SAMPLED_GROUPS` groups spread evenly over the
  file, first and last included) and caption ``i`` -> row ``(i // k) * k``. If the rows are not
  copies the error says to pass ``captions_per_image=1``;
* anything else: an error naming both files, both counts and the ``captions_per_image`` that would
  fit, if any.

Either way image ``j`` owns captions ``j*k .. j*k + k - 1``, so the batches, the epoch sampler, the
caption index's image ids and the retrieval metrics all follow from ``k`` alone.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ...caption_files import count_hint

VERIFY_ALL_BYTES = 256 << 20
SAMPLED_GROUPS = 64
_CHUNK_BYTES = 32 << 20


def _option(k: int) -> str:
    return f"captions_per_image={k} (vsl-train / vsl-eval: --captions-per-image {k})"


def _first_non_copy(ims: np.ndarray, groups: np.ndarray, k: int):
    """(group, row) of the first row in ``groups`` that differs from its group's first row, or None."""
    row_bytes = max(1, int(np.prod(ims.shape[1:])) * ims.dtype.itemsize)
    per_chunk = max(1, _CHUNK_BYTES // (row_bytes * k))
    for a in range(0, len(groups), per_chunk):
        part = groups[a:a + per_chunk]
        rows = (part[:, None] * k + np.arange(k)).reshape(-1)
        block = np.ascontiguousarray(ims[rows]).reshape(len(part), k, -1).view(np.uint8)
        same = (block == block[:, :1]).all(axis=2)          # bitwise: NaN copies count as copies
        bad = np.argwhere(~same)
        if len(bad):
            g, j = bad[0]
            return int(part[g]), int(part[g] * k + j)
    return None


def rows_per_image(ims: np.ndarray, captions: Sequence[str], captions_per_image: int, ims_path: str,
                   caps_path: str) -> int:
    """1 (one feature row per image) or ``captions_per_image`` (each image's row repeated per caption).

    Args:
        ims: the (rows, ...) feature array (a memory map is fine: only sampled rows are read).
        captions: the caption lines (:func:`vsl_ext.caption_files.read_scan_captions`).
        captions_per_image: consecutive caption lines per image (k above).
        ims_path, caps_path: the files, for the error messages.

    Raises:
        ValueError: the counts fit neither layout, or rows said to be copies are not.
    """
    k, n, r = int(captions_per_image), len(captions), int(ims.shape[0])
    if n == 0:
        raise ValueError(f"{caps_path} holds no captions")
    if n == r * k:
        return 1
    if n == r and k > 1 and n % k == 0:
        n_groups = n // k
        if ims.nbytes <= VERIFY_ALL_BYTES or n_groups <= SAMPLED_GROUPS:
            groups = np.arange(n_groups)
        else:
            groups = np.unique(np.linspace(0, n_groups - 1, SAMPLED_GROUPS).round().astype(np.int64))
        bad = _first_non_copy(ims, groups, k)
        if bad is None:
            return k
        g, row = bad
        raise ValueError(
            f"{caps_path} has {n} captions and {ims_path} has {r} feature rows, as many as captions: with "
            f"captions_per_image={k} that means each image's row is repeated for each of its {k} captions, but row "
            f"{row} differs from row {g * k} (image {g}). If every caption has its own image (SCAN pairs caption i "
            f"with row i when the counts are equal), pass {_option(1)}")
    fits = []
    if r and n % r == 0:
        fits.append(n // r)
    hint = count_hint(captions)
    suggestion = (f"these counts fit {_option(fits[0])}" if fits and fits[0] != k and not hint
                  else "check that the two files belong together")
    raise ValueError(
        f"{caps_path} has {n} captions but {ims_path} has {r} feature rows: with captions_per_image={k} "
        f"they must hold {r * k} captions (one row per image) or {r} captions (one row per caption, each "
        f"image's row repeated {k} times){hint}; {suggestion}")
