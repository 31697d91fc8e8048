"""Atomic file writes: a kill at any moment leaves either the old or the new complete file."""
from __future__ import annotations

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", encoding=None):
    """A file object on a temporary file beside ``path`` (folders are created); on success it is
    flushed, fsynced and renamed over ``path``, on any error removed."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path, data) -> None:
    """Writes text (UTF-8) or bytes to ``path`` atomically."""
    binary = isinstance(data, (bytes, bytearray, memoryview))
    with atomic_open(path, "wb" if binary else "w", None if binary else "utf-8") as f:
        f.write(data)
