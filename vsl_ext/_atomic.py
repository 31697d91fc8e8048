"""Atomic file writes, the one writer of every file vsl_ext and its harness produce.

A kill at any moment leaves either the old or the new complete file (temporary file beside the
target, flushed, fsynced, then ``os.replace``). Permissions are what a plain ``open(path, "w")``
would leave: a new file gets ``0o666 & ~umask`` (``tempfile.mkstemp`` alone would give 0600), and a
file that is replaced keeps its own mode (permission bits, setgid/sticky excepted).
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (``/proc/self/status``,
    Linux >= 4.7), else by setting and restoring it under a lock."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def new_file_mode(path: str) -> int:
    """The permission bits the file written to ``path`` gets: those of the file it replaces (a
    symlink's target), else ``0o666 & ~umask``."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode) & 0o777
    except FileNotFoundError:
        return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", encoding=None, newline=None):
    """A file object on a temporary file beside ``path`` (folders are created, with the umask's
    mode); on success it is given :func:`new_file_mode`, flushed, fsynced and renamed over ``path``,
    on any error removed. ``mode``: "wb" or "w" (text, with ``encoding`` and ``newline``)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as f:
            yield f
            f.flush()
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), new_file_mode(path))
            os.fsync(f.fileno())
        if not hasattr(os, "fchmod"):   # Windows before Python 3.13
            os.chmod(tmp, new_file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path, data) -> None:
    """Writes text (UTF-8) or bytes to ``path`` atomically (:func:`atomic_open`)."""
    binary = isinstance(data, (bytes, bytearray, memoryview))
    with atomic_open(path, "wb" if binary else "w", None if binary else "utf-8") as f:
        f.write(data)
