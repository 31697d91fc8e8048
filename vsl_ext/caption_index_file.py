"""The file format of :meth:`vsl_ext.CaptionIndex.save` / :meth:`~vsl_ext.CaptionIndex.load`.

One file: a preamble (magic ``VSLCAPIX``, format version uint32, header length uint64, header crc32
uint32, little-endian), a JSON header (format name, version, the index's meta, and per array its
name, dtype, shape, offset and byte count in the payload, the payload's length and crc32), padded
with spaces to 64 bytes, then the payload: the arrays of :data:`PERSISTENT` for the index's mode,
each at a 64-byte aligned offset. The hash table and trie of an index are rebuilt after loading,
never read from a file. Reading checks everything a kernel relies on (:func:`check_structure`).
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from typing import Dict, Tuple, Union

import numpy as np

from ._atomic import atomic_open
from .caption_index_inputs import check_ngram_range

FORMAT_VERSION = 2  # the newest version written and read
# Version 1 (tfidf, cider-d) is still written for those modes, whose layout did not change, so that
# older vsl_ext releases keep reading them; version 2 added mode "phrases" (older releases reject it
# by its version number).
READABLE = {1: ("tfidf", "cider-d"), 2: ("tfidf", "cider-d", "phrases")}
MODE_VERSION = {"tfidf": 1, "cider-d": 1, "phrases": 2}
_MAGIC = b"VSLCAPIX"
_FORMAT_NAME = "vsl_ext.CaptionIndex"
_PREAMBLE = struct.Struct("<8sIQI")  # magic, format version, header length, header crc32
_ALIGN = 64

# Arrays written per mode; the lookups (tok_slots, child) and derived arrays are rebuilt after loading.
_COMMON = ("img_ptr", "tok_blob", "tok_off", "feat_prefix", "feat_last", "order_ptr", "cap_indptr", "cap_indices",
           "cap_tf", "cap_data", "df", "idf")
PERSISTENT = {
    "tfidf": _COMMON + ("img_indptr", "img_indices", "img_data"),
    "cider-d": _COMMON + ("cap_norm", "cap_len"),
    "phrases": ("img_ptr", "tok_blob", "tok_off", "df", "idf", "img_indptr", "img_indices", "img_data"),
}
DTYPES = {
    "img_ptr": np.int64, "tok_blob": np.uint8, "tok_off": np.int64, "feat_prefix": np.int32, "feat_last": np.int32,
    "order_ptr": np.int64, "cap_indptr": np.int64, "cap_indices": np.int32, "cap_tf": np.int32,
    "cap_data": np.float32, "df": np.int32, "idf": np.float64, "img_indptr": np.int64, "img_indices": np.int32,
    "img_data": np.float32, "cap_norm": np.float64, "cap_len": np.int32,
}


def write(path: Union[str, os.PathLike], arrays: Dict[str, np.ndarray], meta: dict) -> None:
    """Writes the arrays of ``meta["mode"]`` and ``meta`` to ``path`` atomically (temp file +
    ``os.replace``), as format version ``MODE_VERSION[mode]``."""
    path = os.fspath(path)
    mode = meta["mode"]
    names = PERSISTENT[mode]
    entries, offset = [], 0
    for name in names:
        arr = np.ascontiguousarray(arrays[name])
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
        data = memoryview(np.ascontiguousarray(arrays[name])).cast("B")
        crc = zlib.crc32(data, zlib.crc32(pad, crc))
        chunks += [pad, data]
        pos = e["offset"] + e["nbytes"]
    version = MODE_VERSION[mode]
    header = {"format": _FORMAT_NAME, "version": version, "meta": meta,
              "arrays": entries, "payload_nbytes": payload_len, "payload_crc32": crc}
    hbytes = json.dumps(header, sort_keys=True).encode("utf-8")
    hbytes += b" " * ((-(_PREAMBLE.size + len(hbytes))) % _ALIGN)
    with atomic_open(path) as f:
        f.write(_PREAMBLE.pack(_MAGIC, version, len(hbytes), zlib.crc32(hbytes)))
        f.write(hbytes)
        for c in chunks:
            f.write(c)


def read(path: Union[str, os.PathLike]) -> Tuple[Dict[str, np.ndarray], dict]:
    """(arrays, meta) of a file written by :func:`write`; the arrays are views of one buffer.

    Raises:
        ValueError: not a CaptionIndex file, another format version, a mode the version does not
            have, truncated or corrupt (checksums, array bounds, :func:`check_structure`).
    """
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
    if version not in READABLE:
        raise ValueError(f"{path!r} is a CaptionIndex file of format version {version}; this vsl_ext reads "
                         f"versions {sorted(READABLE)} (rebuild the index)")
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
        names = PERSISTENT[mode]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{what}: bad header ({exc})") from exc
    if header.get("version") != version or header.get("format") != _FORMAT_NAME:
        raise ValueError(f"{what}: header names format {header.get('format')!r} version "
                         f"{header.get('version')!r}")
    if mode not in READABLE[version]:
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
            if dtype != np.dtype(DTYPES[name]):
                raise ValueError(f"array {name} has dtype {dtype}")
            shape = tuple(int(s) for s in e["shape"])
            if any(s < 0 for s in shape):
                raise ValueError(f"array {name} has a negative dimension")
            count = int(np.prod(shape, dtype=np.int64))
            off, nb = int(e["offset"]), int(e["nbytes"])
            if off < 0 or nb != count * dtype.itemsize or off + nb > payload_len:
                raise ValueError(f"array {name} lies outside the payload")
            arrays[name] = np.frombuffer(buf, dtype=dtype, count=count, offset=start + off).reshape(shape)
        check_structure(arrays, meta)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{what}: {exc}") from exc
    return arrays, meta


def check_structure(a: Dict[str, np.ndarray], meta: dict) -> None:
    """Consistency checks of loaded arrays, so that the kernels never read out of bounds (ValueError)."""
    mode = meta["mode"]
    if mode == "phrases":
        _check_phrase_structure(a)
        return
    nmin, nmax = check_ngram_range(tuple(meta["ngram_range"]), mode)
    if mode == "cider-d" and not (isinstance(meta.get("sigma"), (int, float)) and meta["sigma"] > 0):
        raise ValueError("bad sigma")
    for name in PERSISTENT[mode]:
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
        if P and a["cap_len"].min() < 0:
            raise ValueError("array cap_len holds negative caption lengths")


def _check_phrase_structure(a: Dict[str, np.ndarray]) -> None:
    for name in PERSISTENT["phrases"]:
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
