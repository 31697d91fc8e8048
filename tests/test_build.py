"""build_info reports what the native module was built with; a build leaves nothing that breaks the next."""
import copy
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch

import vsl_ext


def test_build_info_fields():
    info = vsl_ext.build_info()
    assert info["version"] == vsl_ext.__version__
    assert isinstance(info["cuda"], bool)
    assert isinstance(info["openmp"], bool)
    assert isinstance(info["sanitize"], bool)   # VSL_EXT_SANITIZE=1 (tests/run_sanitized.sh) builds are True
    assert isinstance(info["cuda_arch"], list)
    assert isinstance(info["cuda_devices"], int)
    if info["cuda"]:
        assert info["cuda_arch"], "a CUDA build lists its architectures"
        # sm_XX: machine code, compute_XX: PTX; CMake's own words (native, all, ...) pass as given
        archs = info["cuda_arch"]
        assert all(re.fullmatch(r"(sm|compute)_\d+[a-z]?|[a-z-]+", arch) for arch in archs), archs
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


# ----------------------------------------------------------------------------- what a build leaves behind
# CI (.ci/run) installs twice in one clone, as the README does (the train extra, then the test extra):
# that second build is the end-to-end check. These tests pin down the pieces without building.

ROOT = Path(__file__).resolve().parents[1]
ENVIRONMENT = {
    "toolchain": {"generator": "Ninja", "c++": ["/usr/bin/g++-12", "g++ 12.2.0"], "nvcc": []},
    "configure": {"cmake": ["/tmp/pip-build-env-a/overlay/bin/cmake", "cmake version 4.1.0"],
                  "args": ["-DCMAKE_MAKE_PROGRAM=/tmp/pip-build-env-a/overlay/bin/ninja"], "environment": {}},
}
CMAKE_GENERATED = ["CMakeCache.txt", "build.ninja", "cmake_install.cmake", "CMakeFiles/4.1.0/CMakeCXXCompiler.cmake",
                   "CMakeFiles/rules.ninja", "CMakeFiles/cmake.check_cache"]
BUILD_PRODUCTS = [".ninja_log", ".ninja_deps", "lib/_C.so", "CMakeFiles/_C.dir/csrc/bindings.cpp.o",
                  "CMakeFiles/vsl_cuda_kernels.dir/csrc/sigmoid_rank_cuda.cu.o"]


@pytest.fixture(scope="module")
def setup_py():
    """setup.py's helpers (setup() itself runs only when setup.py is run as __main__, as pip does)."""
    try:
        return runpy.run_path(str(ROOT / "setup.py"), run_name="vsl_ext_setup")
    except (ImportError, SystemExit) as exc:
        pytest.skip(f"setup.py needs setuptools >= 64 here: {exc}")


def _configured(folder: Path, environment, record_name: str) -> Path:
    for name in CMAKE_GENERATED + BUILD_PRODUCTS:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(name)
    if environment is not None:
        (folder / record_name).write_text(json.dumps(environment))
    return folder


def _left(folder: Path) -> set:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_a_folder_configured_as_now_is_kept(setup_py, tmp_path):
    folder = _configured(tmp_path / "cmake", ENVIRONMENT, setup_py["ENV_RECORD"])
    before = _left(folder)
    assert setup_py["prepare_build_folder"](folder, copy.deepcopy(ENVIRONMENT)) is False
    assert _left(folder) == before


def test_a_folder_configured_in_another_build_environment_drops_its_cmake_cache(setup_py, tmp_path):
    """pip deleted the build environment whose ninja and cmake the cache names: configure afresh,
    keep the objects (ninja rebuilds those whose compile lines changed)."""
    folder = _configured(tmp_path / "cmake", ENVIRONMENT, setup_py["ENV_RECORD"])
    now = copy.deepcopy(ENVIRONMENT)
    now["configure"]["args"] = ["-DCMAKE_MAKE_PROGRAM=/tmp/pip-build-env-b/overlay/bin/ninja"]
    assert setup_py["prepare_build_folder"](folder, now) is True
    assert _left(folder) == set(BUILD_PRODUCTS)


@pytest.mark.parametrize("change", ["another compiler", "another generator", "no record"])
def test_a_folder_from_another_toolchain_is_emptied(setup_py, tmp_path, change):
    recorded = copy.deepcopy(ENVIRONMENT)
    if change == "another compiler":
        recorded["toolchain"]["c++"] = ["/usr/bin/g++-12", "g++ 12.1.0"]
    elif change == "another generator":
        recorded["toolchain"]["generator"] = "Unix Makefiles"
    else:
        recorded = None  # e.g. left by an older setup.py
    folder = _configured(tmp_path / "cmake", recorded, setup_py["ENV_RECORD"])
    assert setup_py["prepare_build_folder"](folder, copy.deepcopy(ENVIRONMENT)) is True
    assert folder.is_dir() and _left(folder) == set()


def test_a_folder_whose_cmake_cache_is_gone_is_configured_again(setup_py, tmp_path):
    folder = _configured(tmp_path / "cmake", ENVIRONMENT, setup_py["ENV_RECORD"])
    (folder / "CMakeCache.txt").unlink()
    assert setup_py["prepare_build_folder"](folder, copy.deepcopy(ENVIRONMENT)) is True


def test_a_build_without_pybind11_uses_the_newest_copy_an_earlier_build_left(setup_py, tmp_path):
    """`pip install --no-build-isolation .` in an environment without pybind11, after an install with
    build isolation: the copy that build left in build/ is all CMake needs."""
    with pytest.raises(SystemExit, match="pip install .*pybind11"):
        setup_py["_earlier_pybind11_copy"](tmp_path)
    for version in ("2.13.6", "3.10.0", "3.9.1"):
        config = tmp_path / f"pybind11-{version}" / "share" / "cmake" / "pybind11" / "pybind11Config.cmake"
        config.parent.mkdir(parents=True)
        config.write_text("")
    assert setup_py["_earlier_pybind11_copy"](tmp_path) == str(tmp_path / "pybind11-3.10.0/share/cmake/pybind11")


def test_the_last_generator_argument_wins(setup_py):
    generator = setup_py["_generator"]
    assert generator(["-G", "Ninja", "-DX=1"]) == "Ninja"
    assert generator(["-G", "Ninja", "-GUnix Makefiles"]) == "Unix Makefiles"
    assert generator(["-DX=1"]) == ""


def _installed_from(root: Path) -> bool:
    try:
        text = metadata.distribution("vsl_ext").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return False
    url = json.loads(text or "{}").get("url", "")
    return url.startswith("file://") and Path(unquote(urlparse(url).path)).resolve() == root


def test_the_source_tree_imports_after_an_install_from_it():
    """`python -m ...` from the repository root imports the source tree: an install from this clone
    places the module there too, the same build as the installed one."""
    if not _installed_from(ROOT):
        pytest.skip("vsl_ext was not installed from this clone")
    code = "import json, vsl_ext; print(json.dumps([vsl_ext.__file__, vsl_ext.build_info()]))"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    where, info = json.loads(run.stdout.splitlines()[-1])
    assert Path(where).resolve() == ROOT / "vsl_ext" / "__init__.py"
    installed = vsl_ext.build_info()
    assert {k: info[k] for k in ("version", "cuda", "cuda_arch", "openmp")} == \
        {k: installed[k] for k in ("version", "cuda", "cuda_arch", "openmp")}


def test_a_source_tree_never_built_says_how_to_build_it(tmp_path):
    tree = (tmp_path / "clone").resolve()
    shutil.copytree(ROOT / "vsl_ext", tree / "vsl_ext", ignore=shutil.ignore_patterns("_C.*", "__pycache__"))
    (tree / "setup.py").write_text("")
    # An editable install's import hook would find vsl_ext._C in its own tree: not here.
    code = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in "
            "getattr(f, '__module__', '')]; import vsl_ext")
    run = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True)
    assert run.returncode != 0
    assert "native module _C is missing" in run.stderr
    assert f"`pip install .` in {tree} builds it" in run.stderr
