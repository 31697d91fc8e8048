"""Loads the compiled module ``vsl_ext._C``, says what it was built with (:func:`build_info`) and
whether its CUDA kernels can launch (:func:`cuda_usable`, :func:`cuda_launch_args`).

``_C``'s kernel functions are private and unchecked (raw data pointers): only
:mod:`vsl_ext.kernels` calls them, after the registered ops of :mod:`vsl_ext.ops` have checked
their inputs. Its constants (``_C.ALGORITHMS``, ``_C.SATURATION``, ...) are defined once, in
``csrc/vsl_constants.h``.
"""
from __future__ import annotations

import functools

import torch

from ._version import __version__

try:
    from . import _C
except ImportError as exc:  # pragma: no cover - only when the package was not built
    from pathlib import Path

    here = Path(__file__).resolve().parent
    # Run from a clone, `python -m ...` imports the source tree; every build places _C there too.
    hint = (f" Python imported the source tree {here}, which has no _C built for this Python: `pip install .` "
            f"in {here.parent} builds it and places it there as well." if (here.parent / "setup.py").exists() else "")
    raise ImportError(f"vsl_ext's native module _C is missing or broken: install with `pip install .`.{hint}") from exc


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}" if v else ""


def build_info() -> dict:
    """What the native module was built with and what its CUDA runtime sees now.

    Returns ``{"version", "cuda", "cuda_arch", "openmp", "cpu_isa", "compiler", "sanitize",
    "cuda_devices", "cuda_runtime", "cuda_driver", "cuda_error"}``: ``sanitize`` whether this is a
    ``VSL_EXT_SANITIZE=1`` build (AddressSanitizer + UndefinedBehaviorSanitizer), ``openmp`` always
    False (every native parallel loop runs on the package's own fork-safe pool), ``cuda`` whether
    CUDA kernels were compiled in, ``cuda_arch`` the GPU code built (``"sm_90"``: machine code for that architecture,
    ``"compute_90"``: PTX, which the driver compiles for newer GPUs), ``cuda_devices`` how many GPUs the
    kernels can see, ``cuda_runtime`` / ``cuda_driver`` the CUDA versions of the kernels' runtime
    and of the installed driver ("" if none), ``cuda_error`` why no GPU is visible ("" otherwise).
    """
    info = dict(_C.build_info())
    info["version"] = __version__
    status = _C.cuda_status()
    info["cuda_devices"] = status["devices"]
    info["cuda_runtime"] = _cuda_version(status["runtime_version"])
    info["cuda_driver"] = _cuda_version(status["driver_version"])
    info["cuda_error"] = _cuda_error(status)
    return info


def _cuda_error(status: dict) -> str:
    """Why the kernels see no GPU. With no driver at all the CUDA runtime reports
    cudaErrorInsufficientDriver, which reads as if a driver were too old: say what it means."""
    if status["error"] and not status["driver_version"]:
        return "no CUDA driver on this machine (no NVIDIA GPU, or its driver is not installed)"
    return status["error"]


@functools.lru_cache(maxsize=1)
def cuda_usable() -> None:
    """Raises, saying why, if the kernels cannot launch on a GPU that torch can use (a passing
    check is remembered for the process; a failing one is made again on the next call)."""
    info = build_info()
    if not info["cuda"]:
        raise RuntimeError("vsl_ext was built without CUDA kernels, so it cannot run on a CUDA tensor; "
                           "reinstall with nvcc on PATH (VSL_EXT_CUDA=1 pip install .)")
    if info["cuda_devices"] == 0 and not info["cuda_driver"]:
        raise RuntimeError(f"vsl_ext's CUDA kernels see no GPU: {info['cuda_error']}")
    if info["cuda_devices"] == 0:
        raise RuntimeError(
            f"vsl_ext's CUDA kernels (CUDA runtime {info['cuda_runtime']}) see no GPU: {info['cuda_error']}. "
            f"The driver supports CUDA {info['cuda_driver'] or 'none'} and torch uses CUDA {torch.version.cuda}; "
            "reinstall vsl_ext with a CUDA toolkit no newer than the driver supports (nvcc on PATH).")


def cuda_launch_args(device: torch.device) -> tuple:
    """(device index, current stream handle) for a kernel launch on ``device``."""
    cuda_usable()
    index = device.index if device.index is not None else torch.cuda.current_device()
    return index, torch.cuda.current_stream(torch.device("cuda", index)).cuda_stream
