"""Builds the native module ``vsl_ext._C`` with CMake + Ninja (pattern of pybind11's cmake_example).

Build switches (environment variables, read at ``pip install .`` time):

* ``VSL_EXT_CUDA``        ``auto`` (default: build CUDA kernels when nvcc is found), ``1`` (require), ``0`` (CPU only)
* ``VSL_EXT_CUDA_ARCHS``  CMake CUDA architectures, default ``80-real;86-real;89-real;90`` (SASS for
                          sm_80/86/89/90 plus PTX for compute_90)
* ``VSL_EXT_OPENMP``      ``1`` (default) or ``0``
* ``VSL_EXT_BUILD_TYPE``  CMake build type, default ``Release``
* ``CMAKE_ARGS``          extra arguments passed to CMake verbatim
"""
import os
import shlex
import subprocess
import sys
from pathlib import Path

import setuptools
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# pyproject.toml's [build-system] asks for setuptools >= 64, but `pip install --no-build-isolation`
# builds with whatever is installed, and an older setuptools ignores the [project] table: it would
# install a package without its Python files and without saying so.
_SETUPTOOLS = tuple(int(part) for part in setuptools.__version__.split(".")[:2] if part.isdigit())
if _SETUPTOOLS < (64, 0):
    raise SystemExit(f"vsl_ext needs setuptools >= 64 to build; this environment has {setuptools.__version__}. "
                     "Run `pip install -U setuptools`, or install without --no-build-isolation.")


class CMakeExtension(Extension):
    def __init__(self, name: str, sourcedir: str = "") -> None:
        super().__init__(name, sources=[])
        self.sourcedir = os.fspath(Path(sourcedir).resolve())


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        import pybind11

        outdir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        build_temp = Path(self.build_temp) / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        cuda = os.environ.get("VSL_EXT_CUDA", "auto").lower()
        if cuda not in ("auto", "0", "1"):
            raise SystemExit(f"VSL_EXT_CUDA must be auto, 0 or 1, got {cuda!r}")
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={outdir}{os.sep}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('VSL_EXT_BUILD_TYPE', 'Release')}",
            f"-DVSL_EXT_CUDA={cuda.upper()}",
            f"-DVSL_EXT_OPENMP={'ON' if os.environ.get('VSL_EXT_OPENMP', '1') != '0' else 'OFF'}",
            "-GNinja",
        ]
        archs = os.environ.get("VSL_EXT_CUDA_ARCHS")
        if archs:
            args.append(f"-DCMAKE_CUDA_ARCHITECTURES={archs}")
        args += shlex.split(os.environ.get("CMAKE_ARGS", ""))
        subprocess.run(["cmake", ext.sourcedir, *args], cwd=build_temp, check=True)
        subprocess.run(["cmake", "--build", "."], cwd=build_temp, check=True)


setup(ext_modules=[CMakeExtension("vsl_ext._C")], cmdclass={"build_ext": CMakeBuild})
