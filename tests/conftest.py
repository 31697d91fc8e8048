"""Fixtures: the CUDA emulator (built once per session) and the ``device`` every op test runs on
(see tests/helpers.py)."""
import pytest

import cuda_emu
import helpers
from vsl_ext import kernels


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


def route_to_emulator(monkeypatch, emulator) -> None:
    """The ops' kernel calls on CPU tensors go to the emulated CUDA kernels, through the CUDA kernel
    module (vsl_ext.kernels.cuda: CUDA's choice of algorithm, its sorting, its native calls)."""
    monkeypatch.setattr(kernels, "for_tensor", lambda t: kernels.cuda)
    monkeypatch.setattr(kernels.cuda, "_C", emulator)
    monkeypatch.setattr(kernels.cuda, "launch_args", lambda device: (0, 0))


@pytest.fixture(params=helpers.DEVICES)
def device(request):
    """The torch device of the test's tensors: "cpu", "cuda", or "cpu" with the kernel calls routed
    to the emulated CUDA kernels ("cuda-emulated")."""
    if request.param == "cuda-emulated":
        route_to_emulator(request.getfixturevalue("monkeypatch"), request.getfixturevalue("emulator"))
        return "cpu"
    return request.param
