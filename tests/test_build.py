"""build_info reports what the native module was built with."""
import os
import shutil

import pytest
import torch

import vsl_ext


def test_build_info_fields():
    info = vsl_ext.build_info()
    assert info["version"] == vsl_ext.__version__
    assert isinstance(info["cuda"], bool)
    assert isinstance(info["openmp"], bool)
    assert isinstance(info["cuda_arch"], list)
    assert isinstance(info["cuda_devices"], int)
    if info["cuda"]:
        assert info["cuda_arch"], "a CUDA build lists its architectures"
        assert info["cuda_runtime"], "a CUDA build knows its runtime version"
        assert (info["cuda_devices"] > 0) == (info["cuda_error"] == ""), "no GPU visible comes with the reason"
    else:
        assert info["cuda_arch"] == [] and info["cuda_devices"] == 0 and info["cuda_error"] == ""


def test_cuda_launch_without_a_visible_gpu_says_why(monkeypatch):
    from vsl_ext import _native

    monkeypatch.setattr(_native, "build_info", lambda: {
        "cuda": True, "cuda_devices": 0, "cuda_runtime": "13.0", "cuda_driver": "12.4",
        "cuda_error": "cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version"})
    _native.cuda_usable.cache_clear()
    with pytest.raises(RuntimeError, match=r"runtime 13\.0.*InsufficientDriver.*supports CUDA 12\.4"):
        _native.cuda_launch_args(torch.device("cuda", 0))
    monkeypatch.setattr(_native, "build_info", lambda: {"cuda": False})
    with pytest.raises(RuntimeError, match="built without CUDA kernels"):
        _native.cuda_usable()
    _native.cuda_usable.cache_clear()


def test_cuda_kernels_are_built_when_nvcc_is_present():
    """Installed from this checkout with nvcc on PATH, the CUDA kernels must be compiled in
    (the default VSL_EXT_CUDA=auto); VSL_EXT_CUDA=0 in the environment opts out."""
    if os.environ.get("VSL_EXT_CUDA") == "0" or not shutil.which("nvcc"):
        pytest.skip("no nvcc on PATH (or VSL_EXT_CUDA=0): a CPU-only build is expected")
    assert vsl_ext.build_info()["cuda"] is True
