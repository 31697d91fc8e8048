"""build_info() and cuda_usable() say why no GPU is visible in words that fit the machine."""
import types

import pytest

import vsl_ext._native as native

BUILT_WITH_CUDA = {"cuda": True, "cuda_arch": ["sm_90"], "openmp": True, "cpu_isa": "avx2", "sanitize": False,
                   "compiler": "12"}
INSUFFICIENT = "cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version"


def _fake_module(monkeypatch, driver_version):
    status = {"devices": 0, "runtime_version": 12080, "driver_version": driver_version, "error": INSUFFICIENT}
    monkeypatch.setattr(native, "_C", types.SimpleNamespace(build_info=lambda: dict(BUILT_WITH_CUDA),
                                                            cuda_status=lambda: dict(status)))
    native.cuda_usable.cache_clear()


def test_no_driver_at_all_is_not_reported_as_an_insufficient_driver(monkeypatch):
    _fake_module(monkeypatch, driver_version=0)      # cudaDriverGetVersion: 0 when no driver is installed
    info = native.build_info()
    assert info["cuda_driver"] == "" and "insufficient" not in info["cuda_error"]
    assert "no CUDA driver" in info["cuda_error"]
    with pytest.raises(RuntimeError, match="no CUDA driver") as err:
        native.cuda_usable()
    assert "toolkit" not in str(err.value)
    native.cuda_usable.cache_clear()


def test_an_old_driver_is_reported_as_such(monkeypatch):
    _fake_module(monkeypatch, driver_version=11040)  # a driver for CUDA 11.4 under a 12.8 runtime
    info = native.build_info()
    assert info["cuda_driver"] == "11.4" and info["cuda_error"] == INSUFFICIENT
    with pytest.raises(RuntimeError, match="no newer than the driver supports"):
        native.cuda_usable()
    native.cuda_usable.cache_clear()
