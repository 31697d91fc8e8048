"""Helpers of the caption index tests: the ``device`` fixture that runs a test on each device the
machine offers (cpu, cuda when present, cuda-emulated) and the routing of CaptionIndex's kernel
calls to the emulated CUDA kernels (tests/cuda_emulator.py) for cuda-emulated.

Import the fixtures into a test module (``from caption_helpers import caption_emulator, device``).
"""
import numpy as np
import pytest
import torch

import cuda_emulator
import vsl_ext
from vsl_ext import caption_index as caption_index_module

CUDA = torch.cuda.is_available() and vsl_ext.build_info()["cuda"]
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU and a CUDA build")),
    pytest.param("cuda-emulated", marks=pytest.mark.skipif(
        cuda_emulator.compiler() is None, reason="the CUDA emulator needs Linux and a C++ compiler (g++ or $CXX)")),
]


def _ptr(a) -> int:
    return 0 if a is None else a.ctypes.data


class CaptionKernelsOnEmulatedCuda:
    """Stands in for ``vsl_ext._C`` in :mod:`vsl_ext.caption_index`: CaptionIndex's CPU kernel calls
    run the emulated CUDA kernels instead, with the arguments its CUDA branch passes (rows staged in
    shared memory when they fit, a scratch matrix for grouped CIDEr-D); everything else is the real
    module's."""

    def __init__(self, real, emulator: cuda_emulator.Emulator):
        self._real = real
        self._emu = emulator

    def caption_index_gram_cpu(self, indptr, indices, data, num_features, rows, out, threads):
        self._emu.caption_index_gram_cuda(_ptr(indptr), _ptr(indices), _ptr(data), _ptr(rows), len(rows),
                                          caption_index_module._smem_cap(indptr, rows), out)

    def caption_index_cider_matrix_cpu(self, indptr, indices, data, inv_norm, lens, bounds, caps, gptr, sigma, out,
                                       threads):
        G, Pb = len(gptr) - 1, len(caps)
        singleton = Pb == G
        scratch = None if singleton else np.empty(Pb * Pb, dtype=np.float32)
        self._emu.caption_index_cider_matrix_cuda(
            _ptr(indptr), _ptr(indices), _ptr(data), _ptr(inv_norm), _ptr(lens), [int(b) for b in bounds], _ptr(caps),
            Pb, _ptr(gptr), G, singleton, sigma, caption_index_module._smem_cap(indptr, caps),
            out if singleton else _ptr(scratch), out)

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.fixture(scope="session")
def caption_emulator(request, tmp_path_factory):
    """The emulated CUDA kernels, built once into .pytest_cache (a temporary directory where that is
    off or not writable)."""
    try:
        where = request.config.cache.mkdir("cuda_emulator")
        probe = where / ".writable"
        probe.touch()
        probe.unlink()
    except (AttributeError, OSError):
        where = tmp_path_factory.mktemp("cuda_emulator")
    return cuda_emulator.Emulator(cuda_emulator.build(where))


@pytest.fixture(params=DEVICES)
def device(request, monkeypatch):
    """The device argument of CaptionIndex queries for this run: "cpu", "cuda", or "cpu" with the
    kernel calls routed to the emulated CUDA kernels (cuda-emulated)."""
    if request.param == "cuda-emulated":
        emu = request.getfixturevalue("caption_emulator")
        monkeypatch.setattr(caption_index_module, "_C", CaptionKernelsOnEmulatedCuda(caption_index_module._C, emu))
        return "cpu"
    return request.param
