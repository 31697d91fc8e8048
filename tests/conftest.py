"""Fixtures: the CUDA emulator (built once per session) and the ``device`` every op test runs on
(see tests/helpers.py)."""
import pytest

import numpy as np

import cuda_emu
import helpers
from vsl_ext import caption_index, kernels


@pytest.fixture(scope="session")
def emulator_build_dir(request, tmp_path_factory):
    """Where the emulator is built once: .pytest_cache (a temporary directory where that is off or
    not writable)."""
    try:
        where = request.config.cache.mkdir("cuda_emulator")
        probe = where / ".writable"
        probe.touch()
        probe.unlink()
    except (AttributeError, OSError):
        where = tmp_path_factory.mktemp("cuda_emulator")
    return where


@pytest.fixture(scope="session")
def emulator(emulator_build_dir):
    """The CUDA kernels of csrc/*.cu compiled for the CPU (tests/cuda_emu)."""
    if cuda_emu.compiler() is None:
        pytest.skip("the CUDA emulator needs Linux and a C++ compiler (g++ or $CXX)")
    return cuda_emu.Emulator(cuda_emu.build(emulator_build_dir))


@pytest.fixture(scope="session")
def sanitized(emulator_build_dir):
    """The emulator built with AddressSanitizer."""
    if cuda_emu.asan_runtime() is None:
        pytest.skip("the compiler has no AddressSanitizer runtime")
    return cuda_emu.build(emulator_build_dir, sanitize=True)


def _ptr(a) -> int:
    return 0 if a is None else a.ctypes.data


class CaptionKernelsOnEmulatedCuda:
    """Stands in for ``vsl_ext._C`` in :mod:`vsl_ext.caption_index`: CaptionIndex's CPU kernel calls
    run the emulated CUDA kernels instead, with the arguments its CUDA branch passes (rows staged in
    shared memory when they fit, a scratch matrix for grouped CIDEr-D); everything else is the real
    module's."""

    def __init__(self, real, emulator: cuda_emu.Emulator):
        self._real = real
        self._emu = emulator

    def caption_index_gram_cpu(self, indptr, indices, data, num_features, rows, out, threads):
        self._emu.caption_index_gram_cuda(_ptr(indptr), _ptr(indices), _ptr(data), _ptr(rows), len(rows),
                                          caption_index._smem_cap(indptr, rows), out)

    def caption_index_cider_matrix_cpu(self, indptr, indices, data, inv_norm, lens, bounds, caps, gptr, sigma, out,
                                       threads):
        G, Pb = len(gptr) - 1, len(caps)
        singleton = Pb == G
        scratch = None if singleton else np.empty(Pb * Pb, dtype=np.float32)
        self._emu.caption_index_cider_matrix_cuda(
            _ptr(indptr), _ptr(indices), _ptr(data), _ptr(inv_norm), _ptr(lens), [int(b) for b in bounds], _ptr(caps),
            Pb, _ptr(gptr), G, singleton, sigma, caption_index._smem_cap(indptr, caps),
            out if singleton else _ptr(scratch), out)

    def __getattr__(self, name):
        return getattr(self._real, name)


def route_to_emulator(monkeypatch, emulator) -> None:
    """Kernel calls on CPU tensors and arrays go to the emulated CUDA kernels: the ops' through the
    CUDA kernel module (vsl_ext.kernels.cuda: CUDA's choice of algorithm, its sorting, its native
    calls), CaptionIndex's batch queries through :class:`CaptionKernelsOnEmulatedCuda`."""
    monkeypatch.setattr(kernels, "for_tensor", lambda t: kernels.cuda)
    monkeypatch.setattr(kernels.cuda, "_C", emulator)
    monkeypatch.setattr(kernels.cuda, "launch_args", lambda device: (0, 0))
    monkeypatch.setattr(caption_index, "_C", CaptionKernelsOnEmulatedCuda(caption_index._C, emulator))


@pytest.fixture(params=helpers.DEVICES)
def device(request):
    """The torch device of the test's tensors: "cpu", "cuda", or "cpu" with the kernel calls routed
    to the emulated CUDA kernels ("cuda-emulated")."""
    if request.param == "cuda-emulated":
        route_to_emulator(request.getfixturevalue("monkeypatch"), request.getfixturevalue("emulator"))
        return "cpu"
    return request.param
