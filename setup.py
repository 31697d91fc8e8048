"""Builds the native module ``vsl_ext._C`` with CMake + Ninja (pattern of pybind11's cmake_example).

Build switches (environment variables, read at ``pip install .`` time):

* ``VSL_EXT_CUDA``        ``auto`` (default: build CUDA kernels when nvcc is found), ``1`` (require), ``0`` (CPU only)
* ``VSL_EXT_CUDA_ARCHS``  CUDA architectures in CMake's form, e.g. ``80-real;90`` (SASS for sm_80, SASS and PTX
                          for sm_90); default: SASS for every architecture from sm_75 up that the found nvcc
                          compiles for, plus PTX for the newest of them
* ``VSL_EXT_BUILD_TYPE``  CMake build type, default ``Release``
* ``VSL_EXT_SANITIZE``    ``0`` (default) or ``1``: build the CPU code with AddressSanitizer and
                          UndefinedBehaviorSanitizer (``-fsanitize=address,undefined``, any UB ends the
                          process), in a build folder of its own (``build/cmake.<platform>-<python>-sanitize/``)
                          so that switching back recompiles nothing; ``build_info()["sanitize"]`` says which
                          build is loaded. Python must then run with the compiler's ``libasan.so`` in
                          ``LD_PRELOAD`` (and ``ASAN_OPTIONS=detect_leaks=0``: CPython never frees some
                          memory by design); ``tests/run_sanitized.sh`` does all of it in a venv of its own
* ``CMAKE_ARGS``          extra arguments passed to CMake verbatim

What a build leaves behind, and why the next build can trust it (pip >= 21.3 builds in the source
tree, so every ``pip install .`` of one clone meets the previous one's ``build/``):

* CMake builds in ``build/cmake.<platform>-<python>/`` and caches there the paths of what it found:
  cmake, ninja, pybind11, Python, the compilers. pip puts cmake, ninja and pybind11 in a throwaway
  environment and deletes it after the build. ``vsl_ext-build-env.json`` in the build folder
  records everything the folder was configured with; when any of it differs, the CMake cache is
  dropped and the folder configured afresh, keeping the compiled objects (ninja recompiles those
  whose compile lines changed). Another generator or compiler (path or version: an upgraded
  compiler keeps its compile lines) empties the folder.
* pybind11's headers and CMake files are copied once per pybind11 version to ``build/pybind11-<version>/``,
  so compile lines name the same folder in every pip build environment and a second install
  recompiles nothing that did not change (the CUDA kernels never see pybind11 or Python). A
  ``--no-build-isolation`` build in an environment without pybind11 uses the newest such copy.
* The module is copied into the wheel and into the source tree's ``vsl_ext/`` (as
  ``build_ext --inplace`` does): ``python -m ...`` from the repository root imports the source
  tree, which then works too. A sanitized (``VSL_EXT_SANITIZE=1``) wheel is not copied there: that
  module loads only with libasan preloaded (an editable sanitized install lives there, as any
  editable install does; the next plain ``pip install`` puts the plain module back).
* ``build/lib.*/vsl_ext`` is emptied before each build, so a module deleted from the source tree
  does not linger in the next wheel.

``rm -rf build`` forces a build from nothing.
"""
import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Optional

import setuptools
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

# pyproject.toml's [build-system] asks for setuptools >= 64, but `pip install --no-build-isolation`
# builds with whatever is installed, and an older setuptools ignores the [project] table: it would
# install a package without its Python files and without saying so.
_SETUPTOOLS = tuple(int(part) for part in setuptools.__version__.split(".")[:2] if part.isdigit())
if _SETUPTOOLS < (64, 0):
    raise SystemExit(f"vsl_ext needs setuptools >= 64 to build; this environment has {setuptools.__version__}. "
                     "Run `pip install -U setuptools`, or install without --no-build-isolation.")

ROOT = Path(__file__).resolve().parent
PACKAGE = "vsl_ext"
BUILD_REQUIREMENTS = "'setuptools>=64' wheel 'pybind11>=2.12' 'cmake>=3.26' ninja"
ENV_RECORD = "vsl_ext-build-env.json"
# Environment variables CMake reads when it configures a build folder (and then keeps in its cache).
CMAKE_ENVIRONMENT = ("CC", "CXX", "CUDACXX", "CUDAHOSTCXX", "CUDAARCHS", "CUDA_PATH", "CUDA_HOME",
                     "CUDAToolkit_ROOT", "CXXFLAGS", "CUDAFLAGS", "LDFLAGS", "CMAKE_PREFIX_PATH")
# What survives a reconfiguration: build products, and ninja's record of how each was made.
BUILD_PRODUCTS = (".ninja_log", ".ninja_deps", "lib")


def _missing_build_requirement(what: str) -> SystemExit:
    return SystemExit(f"vsl_ext's build needs {what}, which this environment lacks. pip's default build isolation "
                      f"installs it; with --no-build-isolation install the build requirements first: "
                      f"pip install {BUILD_REQUIREMENTS}")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise _missing_build_requirement(f"{name} (on PATH)")
    return os.path.realpath(path)


def _version(program: Optional[str], line: int = 0) -> str:
    """One line of ``program --version`` ("" if there is no such program or it fails)."""
    if not program:
        return ""
    try:
        out = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = [text.strip() for text in out.splitlines() if text.strip()]
    return lines[line] if lines else ""


def _compiler(variable: str, names: tuple, version_line: int = 0) -> list:
    """[path, version] of the compiler CMake will find: $variable, else the first of names on PATH."""
    found = os.environ.get(variable) or next(filter(None, map(shutil.which, names)), None)
    path = os.path.realpath(found) if found else ""
    return [path, _version(path, version_line)]


def _generator(args: list) -> str:
    """The CMake generator the arguments choose (the last -G wins, as in CMake)."""
    chosen = ""
    for i, arg in enumerate(args):
        if arg == "-G" and i + 1 < len(args):
            chosen = args[i + 1]
        elif arg.startswith("-G") and len(arg) > 2:
            chosen = arg[2:]
    return chosen


def _pybind11_cmake_dir(cache: Path) -> str:
    """pybind11's CMake package, copied once per pybind11 version under ``cache``: the include path
    it puts on compile lines is then the same in every pip build environment."""
    try:
        import pybind11
    except ImportError:  # --no-build-isolation in an environment without pybind11
        return _earlier_pybind11_copy(cache)
    package = Path(pybind11.__file__).resolve().parent
    cmake_dir = Path(pybind11.get_cmake_dir()).resolve()
    try:
        inside = cmake_dir.relative_to(package)
    except ValueError:  # a pybind11 laid out otherwise (e.g. a system package): used where it is
        return str(cmake_dir)
    if not (package / "include").is_dir():
        return str(cmake_dir)
    copy = cache / f"pybind11-{pybind11.__version__}"
    if not (copy / inside).is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".pybind11-", dir=cache))
        for part in ("include", inside.parts[0]):
            shutil.copytree(package / part, staging / part)
        try:
            os.replace(staging, copy)  # whole or not at all; another build may have placed it first
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not (copy / inside).is_dir():
                raise
    return str(copy / inside)


def _earlier_pybind11_copy(cache: Path) -> str:
    """The newest pybind11 an earlier build of this clone copied under ``cache`` (a complete CMake
    package with its headers: all the build needs of pybind11)."""
    def version(config: Path) -> tuple:
        name = config.parents[3].name[len("pybind11-"):]
        return tuple(int(part) if part.isdigit() else -1 for part in name.split("."))

    copies = sorted(cache.glob("pybind11-*/share/cmake/pybind11/pybind11Config.cmake"), key=version)
    if not copies:
        raise _missing_build_requirement("pybind11")
    print(f"vsl_ext: pybind11 is not installed here; using {copies[-1].parents[3]}, left by an earlier build",
          file=sys.stderr)
    return str(copies[-1].parent)


def prepare_build_folder(folder: Path, environment: dict) -> bool:
    """Makes ``folder`` safe to configure for ``environment`` ({"toolchain": ..., "configure": ...}).

    The same environment as recorded: nothing changes. Another "configure" part: the CMake cache
    and generated files go; build products and ninja's logs stay (ninja rebuilds what the new
    compile lines change). Another "toolchain" part, or no record: the folder is emptied. Returns
    whether the folder must be configured; the caller records the environment once it is.
    """
    record = folder / ENV_RECORD
    try:
        previous = json.loads(record.read_text())
    except (OSError, ValueError):
        previous = None
    if previous == environment and (folder / "CMakeCache.txt").is_file():
        return False
    if previous is None or previous.get("toolchain") != environment["toolchain"]:
        shutil.rmtree(folder, ignore_errors=True)
    elif folder.is_dir():
        for entry in folder.iterdir():
            if entry.name in BUILD_PRODUCTS:
                continue
            if entry.name == "CMakeFiles" and entry.is_dir():
                for generated in entry.iterdir():
                    if not generated.name.endswith(".dir"):  # <target>.dir holds the target's objects
                        _remove(generated)
                continue
            _remove(entry)
    folder.mkdir(parents=True, exist_ok=True)
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _place(source: Path, target: Path) -> None:
    """Copies source to target atomically: a process that has the old module loaded keeps it intact."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copy2(source, staging)
    os.replace(staging, target)


class CMakeExtension(Extension):
    def __init__(self, name: str, sourcedir: Path) -> None:
        super().__init__(name, sources=[])
        self.sourcedir = os.fspath(sourcedir)


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        cache = Path(ext.sourcedir) / "build"
        folder = cache / f"cmake.{sysconfig.get_platform()}-{sys.implementation.cache_tag}"
        cmake = _tool("cmake")
        cuda = os.environ.get("VSL_EXT_CUDA", "auto").lower()
        if cuda not in ("auto", "0", "1"):
            raise SystemExit(f"VSL_EXT_CUDA must be auto, 0 or 1, got {cuda!r}")
        sanitize = os.environ.get("VSL_EXT_SANITIZE", "0")
        if sanitize not in ("0", "1"):
            raise SystemExit(f"VSL_EXT_SANITIZE must be 0 or 1, got {sanitize!r}")
        if sanitize == "1":  # its own folder: switching between the two builds recompiles nothing
            folder = folder.with_name(folder.name + "-sanitize")
        args = [
            "-G", "Ninja",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={folder / 'lib'}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={_pybind11_cmake_dir(cache)}",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('VSL_EXT_BUILD_TYPE', 'Release')}",
            f"-DVSL_EXT_CUDA={'AUTO' if cuda == 'auto' else ('ON' if cuda == '1' else 'OFF')}",
            f"-DVSL_EXT_CUDA_ARCHS={os.environ.get('VSL_EXT_CUDA_ARCHS', '')}",
            f"-DVSL_EXT_SANITIZE={'ON' if sanitize == '1' else 'OFF'}",
            *shlex.split(os.environ.get("CMAKE_ARGS", "")),
        ]
        generator = _generator(args)
        ninja = _tool("ninja") if generator == "Ninja" else ""
        if ninja:  # the one on PATH now, not the one a cache may name
            args.append(f"-DCMAKE_MAKE_PROGRAM={ninja}")
        environment = {
            "toolchain": {
                "generator": generator,
                "c++": _compiler("CXX", ("c++", "g++", "clang++")),
                "nvcc": _compiler("CUDACXX", ("nvcc", "/usr/local/cuda/bin/nvcc"), -1) if cuda != "0" else [],
            },
            "configure": {
                "cmake": [cmake, _version(cmake)],
                "ninja": _version(ninja),
                "python": sys.executable,
                "args": args,
                "environment": {name: os.environ[name] for name in CMAKE_ENVIRONMENT if name in os.environ},
            },
        }
        if prepare_build_folder(folder, environment):
            (folder / ENV_RECORD).unlink(missing_ok=True)
            subprocess.run([cmake, "-S", ext.sourcedir, "-B", str(folder), *args], check=True)
            (folder / ENV_RECORD).write_text(json.dumps(environment, indent=1))
        subprocess.run([cmake, "--build", str(folder)], check=True)

        built = folder / "lib" / Path(self.get_ext_filename(ext.name)).name
        if not built.is_file():
            raise SystemExit(f"CMake built no {built.name} in {built.parent}")
        _place(built, Path(self.get_ext_fullpath(ext.name)))
        in_tree = Path(ext.sourcedir) / PACKAGE
        # A sanitized module loads only with libasan preloaded: it stays out of the source tree
        # unless this is an editable install, whose module is the one there.
        if (in_tree / "__init__.py").is_file() and (sanitize == "0" or getattr(self, "editable_mode", False)):
            try:
                _place(built, in_tree / built.name)
            except OSError as exc:
                print(f"vsl_ext: could not place {built.name} in {in_tree} ({exc}); the installed package "
                      "is complete, but the source tree will not import", file=sys.stderr)


class BuildPy(build_py):
    def run(self) -> None:
        shutil.rmtree(Path(self.build_lib) / PACKAGE, ignore_errors=True)
        super().run()


if __name__ == "__main__":  # pip and `python setup.py` run it so; tests import its helpers
    setup(ext_modules=[CMakeExtension("vsl_ext._C", ROOT)], cmdclass={"build_ext": CMakeBuild, "build_py": BuildPy})
