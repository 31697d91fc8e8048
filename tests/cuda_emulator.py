"""The CUDA kernels of csrc/*.cu, compiled for the CPU against the emulated CUDA runtime in
tests/cuda_emu/, so that machines without a GPU (CI among them) run the kernels' own code: their
indexing, tiling, grid-stride loops, shared-memory staging and barriers.

What it checks and what it cannot: a launch runs every block and every thread (fibers that switch at
``__syncthreads()``), shared memory starts out as 0xff bytes, threads that fall out of step at a
barrier, a write past the end of a shared array and more than 48 KiB of shared memory fail the
launch, and the order in which a block's threads run between barriers can be reversed or shuffled
(:meth:`Emulator.schedule`): a result that changes with it means threads race. Global-memory
bounds are checked by guard values around the tests' buffers and, for any distance, by
AddressSanitizer: ``build(..., sanitize=True)`` and :func:`memcheck`, which runs every kernel family
in a Python process with the sanitizer preloaded (the emulator's stand-in for compute-sanitizer's
memcheck). It does not run warps in lockstep or model device floating point (no FMA contraction;
expf is glibc's), and its speed says nothing about a GPU's.

``build(cache_dir)`` rewrites the two CUDA-only constructs the kernels use (``<<<...>>>`` launches and
``__shared__`` declarations, see tests/cuda_emu/cuda_runtime.h) and compiles with g++ (``$CXX``);
the library is cached under a hash of its sources and flags.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
EMU = Path(__file__).resolve().parent / "cuda_emu"

FLAGS = ["-std=c++17", "-O2", "-fPIC", "-shared", "-D__CUDA_ARCH__=900", "-DVSL_WITH_CUDA=1"]
SANITIZE = ["-fsanitize=address", "-fno-omit-frame-pointer"]
SCHEDULES = {"forward": 0, "reverse": 1, "shuffled": 2}


def compiler() -> Optional[str]:
    """The C++ compiler the emulator is built with, or None if there is none (tests skip)."""
    if not sys.platform.startswith("linux"):  # the fibers are glibc's ucontext
        return None
    return shutil.which(os.environ.get("CXX", "g++"))


_DYNAMIC_SHARED = re.compile(r"extern\s+__shared__\s+([\w:<>\s]+?)\s+(\w+)\s*\[\s*\]\s*;")
_STATIC_SHARED = re.compile(r"__shared__\s+([\w:<>\s]+?)\s+(\w+)\s*\[([^\]]+)\]\s*;")


def rewrite(source: str) -> str:
    """A CUDA source as the emulator compiles it (see tests/cuda_emu/cuda_runtime.h)."""
    source = source.replace("<<<", " >> ::vsl_emu::LaunchConfig(").replace(">>>", ")")
    source = _DYNAMIC_SHARED.sub(
        r"\1* const \2 = reinterpret_cast<\1*>(::vsl_emu::dynamic_shared_memory());", source)
    source = _STATIC_SHARED.sub(
        r'auto& \2 = ::vsl_emu::block_shared<\1[\3]>([] { static const char site = 0; return &site; }(), "\2");',
        source)
    if "__shared__" in source or "<<<" in source:
        raise ValueError("a __shared__ declaration or launch the emulator's rewrite does not handle")
    return source


def _inputs() -> Tuple[List[Path], List[Path], List[Path]]:
    """(CUDA sources to rewrite, C++ sources, headers): everything the library is built from."""
    cuda = sorted(CSRC.glob("*.cu")) + sorted(CSRC.glob("*.cuh")) + sorted(EMU.glob("*.cu"))
    plain = sorted(EMU.glob("*.cpp"))
    headers = sorted(CSRC.glob("*.h")) + sorted(EMU.glob("*.h"))
    return cuda, plain, headers


def asan_runtime() -> Optional[str]:
    """The AddressSanitizer runtime of the emulator's compiler (for LD_PRELOAD), or None."""
    cxx = compiler()
    if cxx is None:
        return None
    done = subprocess.run([cxx, "-print-file-name=libasan.so"], capture_output=True, text=True)
    path = done.stdout.strip()
    return path if done.returncode == 0 and os.path.isabs(path) and os.path.exists(path) else None


def build(cache_dir: Path, sanitize: bool = False) -> Path:
    """Compiles the emulated kernels into ``cache_dir`` (once per version of the sources);
    ``sanitize``: with AddressSanitizer (load it with :func:`memcheck`)."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("the CUDA emulator needs Linux and a C++ compiler (g++ or $CXX)")
    flags = FLAGS + (SANITIZE if sanitize else [])
    cuda, plain, headers = _inputs()
    digest = hashlib.sha256(" ".join([cxx, *flags]).encode())
    for path in cuda + plain + headers:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    lib = Path(cache_dir) / f"libvsl_cuda_emu-{digest.hexdigest()[:16]}.so"
    if lib.exists():
        return lib
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        src = Path(tmp)
        units = []
        for path in cuda:
            out = src / (path.name + (".cpp" if path.suffix == ".cu" else ""))
            out.write_text(rewrite(path.read_text()))
            if path.suffix == ".cu":
                units.append(out)
        target = src / lib.name
        cmd = [cxx, *flags, f"-I{src}", f"-I{EMU}", f"-I{CSRC}", *map(str, units + plain), "-o", str(target)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building the CUDA emulator failed:\n{' '.join(cmd)}\n{done.stderr[-8000:]}")
        os.replace(target, lib)
    return lib


_P, _I64, _F64, _INT = ctypes.c_uint64, ctypes.c_int64, ctypes.c_double, ctypes.c_int

_SIGNATURES = {
    "vsl_emu_rank_forward": [_INT, _P, _P, _P, _I64, _I64, _F64, _INT, _F64, _INT],
    "vsl_emu_rank_backward": [_INT, _P, _P, _P, _P, _P, _I64, _I64, _F64, _INT, _F64, _INT],
    "vsl_emu_vsl_forward": [_INT, _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _F64, _F64, _F64, _INT],
    "vsl_emu_window_sums": [_INT, _INT, _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _F64, _INT],
    "vsl_emu_rank_ratio_rows": [_INT, _P, _P, _P, _P, _P, _I64, _I64, _F64],
    "vsl_emu_caption_index_gram_cuda": [_P, _P, _P, _P, _I64, _INT, _P],
    "vsl_emu_caption_index_cider_matrix_cuda": [_P, _P, _P, _P, _P, ctypes.POINTER(_I64), _I64, _P, _I64, _P, _I64,
                                                _INT, _F64, _INT, _P, _P],
    "vsl_emu_faulty": [_INT, _P, _P, _INT],
    "vsl_emu_set_schedule": [_INT, ctypes.c_uint64],
}


def _f64(dtype_name: str) -> int:
    if dtype_name not in ("float32", "float64"):
        raise ValueError(f"vsl_ext native kernels take float32 or float64, got {dtype_name}")
    return int(dtype_name == "float64")


class Emulator:
    """The emulated kernels under the names and signatures of their bindings in ``vsl_ext._C``
    (``rank_forward_cuda`` and so on; device and stream are ignored), for CPU tensors' pointers."""

    def __init__(self, lib: Path):
        self._lib = ctypes.CDLL(str(lib))
        for name, argtypes in _SIGNATURES.items():
            fn = getattr(self._lib, name)
            fn.argtypes = argtypes
            fn.restype = None if name == "vsl_emu_set_schedule" else _INT
        self._lib.vsl_emu_error.restype = ctypes.c_char_p

    def _call(self, name: str, *args) -> None:
        if getattr(self._lib, name)(*args) != 0:
            raise RuntimeError(self._lib.vsl_emu_error().decode())

    @contextlib.contextmanager
    def schedule(self, name: str, seed: int = 0) -> Iterator[None]:
        """Runs each block's threads between barriers in this order ("forward", "reverse" or
        "shuffled", from ``seed``) inside the ``with`` block."""
        self._lib.vsl_emu_set_schedule(SCHEDULES[name], seed)
        try:
            yield
        finally:
            self._lib.vsl_emu_set_schedule(0, 0)

    def rank_forward_cuda(self, dt, x, y, out, rows, cols, tau, desc, clamp_at, algo, device=0, stream=0):
        self._call("vsl_emu_rank_forward", _f64(dt), x, y, out, rows, cols, tau, desc, clamp_at, algo)

    def rank_backward_cuda(self, dt, x, y, g, gx, gy, rows, cols, tau, desc, clamp_at, algo, device=0, stream=0):
        self._call("vsl_emu_rank_backward", _f64(dt), x, y, g, gx, gy, rows, cols, tau, desc, clamp_at, algo)

    def vsl_forward_cuda(self, dt, sx, sy, cx, cy, gs, gc, partials, rows, cols, grad_scale, tau, clamp_at, algo,
                         device=0, stream=0):
        self._call("vsl_emu_vsl_forward", _f64(dt), sx, sy, cx, cy, gs, gc, partials, rows, cols, grad_scale, tau,
                   clamp_at, algo)

    def window_sums_cuda(self, dt, kind, v, w, u, wu, uperm, skip, out, rows, cols, tau, desc, device=0, stream=0):
        if not 0 <= kind <= 3:
            raise ValueError("window kind must be 0..3")
        self._call("vsl_emu_window_sums", _f64(dt), kind, v, w, u, wu, uperm, skip, out, rows, cols, tau, desc)

    def rank_ratio_rows_cuda(self, dt, sr, cr, gs, gc, partials, rows, cols, grad_scale, device=0, stream=0):
        self._call("vsl_emu_rank_ratio_rows", _f64(dt), sr, cr, gs, gc, partials, rows, cols, grad_scale)

    def caption_index_gram_cuda(self, indptr, indices, data, rows, B, smem_cap, out, device=0, stream=0):
        self._call("vsl_emu_caption_index_gram_cuda", indptr, indices, data, rows, B, smem_cap, out)

    def caption_index_cider_matrix_cuda(self, indptr, indices, data, inv_norm, lens, bounds, caps, Pb, gptr, G,
                                        singleton, sigma, smem_cap, scratch, out, device=0, stream=0):
        b = (_I64 * len(bounds))(*bounds)
        self._call("vsl_emu_caption_index_cider_matrix_cuda", indptr, indices, data, inv_norm, lens, b, len(bounds),
                   caps, Pb, gptr, G, int(singleton), sigma, smem_cap, scratch, out)

    def faulty(self, which: str, inp: int, out: int, blocks: int) -> None:
        """Launches one of tests/cuda_emu/faulty_kernels.cu (64 threads a block)."""
        kernels = {"racy_shift": 0, "shift": 1, "early_return": 2, "split_barrier": 3, "shared_overflow": 4,
                   "shared_too_large": 5, "read_past_end": 6}
        self._call("vsl_emu_faulty", kernels[which], inp, out, blocks)


class CpuEntryPointsOnEmulatedCuda:
    """Stands in for ``vsl_ext._C`` so that the package's CPU calls of the rank kernels run the
    emulated CUDA kernels instead (with ``_native.SORTED_WINDOW_ON_CPU`` set, the dispatch between
    the dense and sorted-window paths is CUDA's too); everything else is the real module's."""

    def __init__(self, real, emulator: Emulator):
        self._real = real
        self._emu = emulator

    def __getattr__(self, name):
        emu = self._emu
        if name == "rank_ratio_rows_cpu":  # takes no thread count
            return emu.rank_ratio_rows_cuda
        if name in ("rank_forward_cpu", "rank_backward_cpu", "vsl_forward_cpu", "window_sums_cpu"):
            cuda = getattr(emu, name[:-len("cpu")] + "cuda")
            return lambda *args: cuda(*args[:-1])  # drops the thread count
        return getattr(self._real, name)


def memcheck(lib: Path, faulty: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs every kernel family of ``lib`` (built with ``sanitize=True``) on exactly sized buffers in
    a fresh Python process with AddressSanitizer preloaded: an access outside any buffer, however
    far, ends it with a report on stderr and a nonzero exit status. ``faulty`` adds a kernel that
    reads one element past its input, to show that the check can fail."""
    env = dict(os.environ, LD_PRELOAD=asan_runtime() or "", PYTHONPATH=os.pathsep.join(sys.path),
               ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:exitcode=86")
    cmd = [sys.executable, __file__, str(lib)] + (["--faulty"] if faulty else [])
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _memcheck_workload(emu: Emulator, faulty: bool) -> None:
    import numpy as np
    import torch

    from vsl_ext import CaptionIndex

    def t(*shape, dtype=torch.float32, seed=0):
        return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 3e-3

    if faulty:
        inp, out = t(64), t(64)
        emu.faulty("read_past_end", inp.data_ptr(), out.data_ptr(), 1)
    for rows, cols in [(1, 1), (3, 2), (2, 257), (1, 1025), (2, 2100)]:
        for dtype in (torch.float32, torch.float64):
            dt = "float64" if dtype == torch.float64 else "float32"
            x, y, g = (t(rows, cols, dtype=dtype, seed=k) for k in range(3))
            out, gx, gy = (torch.empty(rows, cols, dtype=dtype) for _ in range(3))
            partials = torch.empty(rows, dtype=torch.float64)
            for yp in (0, y.data_ptr()):
                emu.rank_forward_cuda(dt, x.data_ptr(), yp, out.data_ptr(), rows, cols, 1e-3, True, 0.0, 1)
                emu.rank_backward_cuda(dt, x.data_ptr(), yp, g.data_ptr(), gx.data_ptr(), yp and gy.data_ptr(), rows,
                                       cols, 1e-3, True, 0.0, 1)
                emu.vsl_forward_cuda(dt, x.data_ptr(), yp, g.data_ptr(), yp, gx.data_ptr(), gy.data_ptr(),
                                     partials.data_ptr(), rows, cols, 1.0, 1e-3, 0.0, 1)
            v = torch.sort(x, dim=1).values
            perm = torch.argsort(y, dim=1)
            skip = torch.randint(-1, cols, (rows, cols), generator=torch.Generator().manual_seed(4))
            for kind in range(4):
                for sk in (0, skip.data_ptr()):
                    emu.window_sums_cuda(dt, kind, v.data_ptr(), g.data_ptr(), y.data_ptr(), g.data_ptr(),
                                         perm.data_ptr(), sk, out.data_ptr(), rows, cols, 1e-3, True)
            sr, cr = 1 + x.abs() * 1e3, 1 + y.abs() * 1e3
            emu.rank_ratio_rows_cuda(dt, sr.data_ptr(), cr.data_ptr(), gx.data_ptr(), 0, partials.data_ptr(), rows,
                                     cols, 1.0)
    groups = [["a man riding a horse", "a horse on a beach at dusk"], ["two dogs", "dogs in snow snow"], ["a cat"]]
    for mode in ("tfidf", "cider-d"):
        index = CaptionIndex.from_captions(groups * 20, mode=mode)
        a = index._a
        arr = {k: torch.from_numpy(np.array(a[k])) for k in ("cap_indptr", "cap_indices", "cap_data")}
        caps = torch.arange(index.num_captions, dtype=torch.int64)
        n = len(caps)
        longest = int((arr["cap_indptr"][1:] - arr["cap_indptr"][:-1]).max())
        for cap in (longest, 0):
            if mode == "tfidf":
                out = torch.empty(n, n)
                emu.caption_index_gram_cuda(*(arr[k].data_ptr() for k in ("cap_indptr", "cap_indices", "cap_data")),
                                            caps.data_ptr(), n, cap, out.data_ptr())
                continue
            inv = torch.from_numpy(np.array(index._inv_norm()))
            lens = torch.from_numpy(np.array(a["cap_len"]))
            ptr = torch.from_numpy(np.array(a["img_ptr"], dtype=np.int64))
            G = len(ptr) - 1
            out, scratch = torch.empty(G, G), torch.empty(n * n)
            emu.caption_index_cider_matrix_cuda(
                *(arr[k].data_ptr() for k in ("cap_indptr", "cap_indices", "cap_data")), inv.data_ptr(),
                lens.data_ptr(), [int(b) for b in index._bounds()], caps.data_ptr(), n, ptr.data_ptr(), G, False,
                float(index.sigma), cap, scratch.data_ptr(), out.data_ptr())


if __name__ == "__main__":  # the process memcheck() starts
    _memcheck_workload(Emulator(Path(sys.argv[1])), "--faulty" in sys.argv[2:])
    print("memcheck workload done")
