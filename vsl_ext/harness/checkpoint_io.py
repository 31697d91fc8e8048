"""Checkpoint files that cannot run code: written in plain types and tensors, read with
``torch.load(weights_only=True)``.

A pickle may call any Python function while it is read (``torch.load(weights_only=False)`` runs a
crafted file's ``builtins.open`` or ``os.system``); PyTorch's weights-only unpickler accepts only
tensors, containers and plain values and refuses the rest before calling anything
(https://pytorch.org/docs/stable/notes/serialization.html#weights-only). Every ``vsl-train``
checkpoint since format version 2 holds nothing else: the random states are tensors, ints and
tuples, the config, history and metrics plain numbers and strings.

Format version 1 (earlier vsl_ext 0.1.0 builds: ``checkpoint.pth``/``model_best.pth`` whose numpy
random state was pickled as a numpy array) is refused with an error naming the conversion command::

    python -m vsl_ext.harness.convert_checkpoint OLD.pth [--output NEW.pth]

which reads the file with the same weights-only unpickler, allowing numpy's array reconstruction as
well (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``; PyTorch's documented
way to load numpy arrays without running code), and rewrites it in format version 2.
"""
from __future__ import annotations

import pickle
import random
from typing import Any, Iterable, List, Optional

import numpy as np
import torch

from .._atomic import atomic_open

CHECKPOINT_FORMAT = "vsl_ext.checkpoint"
CHECKPOINT_VERSION = 2          # 1: numpy random state as a pickled numpy array (not weights-only)
CONVERT_COMMAND = "python -m vsl_ext.harness.convert_checkpoint"

# The only globals a format-1 checkpoint's pickle names besides torch's own (numpy 1.x and 2.x names).
NUMPY_ARRAY_GLOBALS = frozenset({"numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
                                 "numpy.ndarray", "numpy.dtype"})


class UnsafeCheckpoint(ValueError):
    """A file whose pickle would call functions other than PyTorch's weights-only set."""


class EarlierCheckpointFormat(UnsafeCheckpoint):
    """A checkpoint of format version 1 (numpy objects in the pickle): convert it with CONVERT_COMMAND."""


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays made Python numbers and lists (dicts, lists and tuples
    are walked), so that ``torch.load(weights_only=True)`` reads it back."""
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def numpy_rng_state() -> dict:
    """numpy's legacy global random state (``np.random.get_state()``) as weights-only types."""
    name, key, pos, has_gauss, cached = np.random.get_state()
    return {"bit_generator": str(name), "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def set_numpy_rng_state(state: dict) -> None:
    key = state["key"].numpy().astype(np.uint32)
    np.random.set_state((state["bit_generator"], key, state["pos"], state["has_gauss"], state["cached_gaussian"]))


def rng_state() -> dict:
    """torch's, numpy's and Python's random states (and CUDA's when present), in weights-only types."""
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": numpy_rng_state(),
             "python": (version, tuple(internal), gauss)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    set_numpy_rng_state(state["numpy"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(obj: dict, path: str) -> None:
    """``torch.save(plain(obj))`` atomically (:func:`vsl_ext._atomic.atomic_open`: temp file, then
    rename; the umask's mode for a new file, the replaced file's mode otherwise)."""
    with atomic_open(path) as f:
        torch.save(plain(obj), f)


def pickle_globals(path: str) -> Optional[List[str]]:
    """The globals (``module.name``) the pickle in ``path`` would call, read without unpickling
    (``torch.serialization.get_unsafe_globals_in_checkpoint``, torch >= 2.5); None where torch
    cannot tell."""
    finder = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if finder is None:
        return None
    try:
        return sorted(finder(path))
    except Exception:   # not a zip checkpoint, truncated: torch.load's own error says what
        return None


def load_weights_only(path: str, allow: Iterable = ()) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; ``allow``: extra globals for
    ``torch.serialization.safe_globals``. A file whose pickle names other globals raises
    :class:`EarlierCheckpointFormat` (numpy's array globals only: a format-1 checkpoint) or
    :class:`UnsafeCheckpoint`, naming the file and the globals, having run none of them; other
    unreadable files raise what ``torch.load`` raises."""
    allow = list(allow)
    try:
        if allow:
            with torch.serialization.safe_globals(allow):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        names = pickle_globals(path)
        if names is None:
            raise UnsafeCheckpoint(f"{path} holds objects that torch.load(weights_only=True) refuses, because "
                                   f"reading them would run code from the file ({exc}); vsl_ext does not load "
                                   f"such files. A vsl-train checkpoint of the earlier format (version 1) is "
                                   f"converted by `{CONVERT_COMMAND} {path}` (torch >= 2.5)") from None
        if names and set(names) <= NUMPY_ARRAY_GLOBALS:
            raise EarlierCheckpointFormat(
                f"{path} is a checkpoint of vsl_ext's earlier format (version 1: its random state is a pickled "
                f"numpy array, {', '.join(names)}), which torch.load(weights_only=True) does not read. Convert it "
                f"once, without running code from it: `{CONVERT_COMMAND} {path}` (rewrites it in place; "
                f"--output NEW.pth writes a copy)") from None
        raise UnsafeCheckpoint(f"{path} is refused: its pickle calls {', '.join(names) or 'objects'} "
                               f"({exc.__class__.__name__}), which a vsl-train checkpoint never holds and which "
                               f"loading it would run; vsl_ext loads checkpoints with weights_only=True only") from None


def _numpy_array_globals() -> list:
    """(object, pickled name) pairs for numpy's array reconstruction under both numpy 1.x and 2.x names."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:   # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return [(_reconstruct, "numpy.core.multiarray._reconstruct"),
            (_reconstruct, "numpy._core.multiarray._reconstruct"), np.ndarray, np.dtype] + \
        [type(np.dtype(t)) for t in (np.uint32, np.int64, np.float64)]


def upgrade(ckpt: dict) -> dict:
    """A format-1 checkpoint dict (as read with numpy's array globals allowed) in format 2."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError("not a vsl-train checkpoint")
    out = dict(ckpt)
    rng = out.get("rng")
    if isinstance(rng, dict) and isinstance(rng.get("numpy"), tuple):
        name, key, pos, has_gauss, cached = rng["numpy"]
        rng = dict(rng)
        rng["numpy"] = {"bit_generator": str(name), "key": torch.from_numpy(np.asarray(key).astype(np.int64)),
                        "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
        out["rng"] = rng
    out["version"] = CHECKPOINT_VERSION
    return plain(out)


def convert(path: str, output: Optional[str] = None) -> str:
    """Rewrites the format-1 checkpoint ``path`` in format 2 (at ``output``, default in place);
    returns where. Nothing in the file runs: it is read by the weights-only unpickler with numpy's
    array globals allowed; a file naming any other global raises :class:`UnsafeCheckpoint`."""
    output = output or path
    names = pickle_globals(path)
    if names is not None and not set(names) <= NUMPY_ARRAY_GLOBALS:
        raise UnsafeCheckpoint(f"{path} is not converted: its pickle calls {', '.join(sorted(set(names)))}, "
                               f"beyond numpy's array globals that a format-1 vsl-train checkpoint holds")
    try:
        ckpt = load_weights_only(path, allow=_numpy_array_globals())
    except UnsafeCheckpoint:
        raise
    except Exception as exc:
        raise ValueError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    try:
        new = upgrade(ckpt)
    except ValueError:
        raise ValueError(f"{path} is not a vsl-train checkpoint") from None
    save_checkpoint(new, output)
    load_weights_only(output)          # the written file reads back without any allowance
    return output
