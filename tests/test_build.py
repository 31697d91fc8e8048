"""build_info reports what the native module was built with."""
import os
import shutil

import pytest

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
    else:
        assert info["cuda_arch"] == [] and info["cuda_devices"] == 0


def test_cuda_kernels_are_built_when_nvcc_is_present():
    """Installed from this checkout with nvcc on PATH, the CUDA kernels must be compiled in
    (the default VSL_EXT_CUDA=auto); VSL_EXT_CUDA=0 in the environment opts out."""
    if os.environ.get("VSL_EXT_CUDA") == "0" or not shutil.which("nvcc"):
        pytest.skip("no nvcc on PATH (or VSL_EXT_CUDA=0): a CPU-only build is expected")
    assert vsl_ext.build_info()["cuda"] is True
