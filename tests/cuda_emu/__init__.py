"""The CUDA kernels of csrc/*.cu, compiled for the CPU against the emulated CUDA runtime of this
package (cuda_runtime.h, emulator.cpp; entry_points.cpp gives every kernel family a C entry point), so
that machines without a GPU (CI among them) run the kernels' own code: their
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
``__shared__`` declarations, see cuda_runtime.h) and compiles with g++ (``$CXX``);
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

EMU = Path(__file__).resolve().parent
CSRC = EMU.parents[1] / "csrc"

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
    """A CUDA source as the emulator compiles it (see cuda_runtime.h)."""
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
    "vsl_emu_sigmoid_rank_forward": [_INT, _P, _P, _P, _I64, _I64, _F64, _INT, _INT],
    "vsl_emu_sigmoid_rank_backward": [_INT, _P, _P, _P, _P, _P, _I64, _I64, _F64, _INT, _INT],
    "vsl_emu_sigmoid_rank_sorted_sums": [_INT, _INT, _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _F64, _INT],
    "vsl_emu_vsl_loss_ratio_sum": [_INT, _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _F64, _INT],
    "vsl_emu_vsl_loss_ratio_sum_from_ranks": [_INT, _P, _P, _P, _P, _P, _I64, _I64],
    "vsl_emu_smooth_ap_loss": [_INT, _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _F64],
    "vsl_emu_caption_index_gram_cuda": [_P, _P, _P, _P, _I64, _INT, _P],
    "vsl_emu_caption_index_cider_matrix_cuda": [_P, _P, _P, _P, _P, ctypes.POINTER(_I64), _I64, _P, _I64, _P, _I64,
                                                _INT, _F64, _INT, _P, _P],
    "vsl_emu_faulty": [_INT, _P, _P, _INT],
    "vsl_emu_set_schedule": [_INT, ctypes.c_uint64],
}


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

    def sigmoid_rank_forward_cuda(self, float64, ranked, compared, ranks, rows, cols, tau, descending,
                                  public_code_clamp, device=0, stream=0):
        self._call("vsl_emu_sigmoid_rank_forward", float64, ranked, compared, ranks, rows, cols, tau, descending,
                   public_code_clamp)

    def sigmoid_rank_backward_cuda(self, float64, ranked, compared, grad_ranks, grad_ranked, grad_compared, rows,
                                   cols, tau, descending, public_code_clamp, device=0, stream=0):
        self._call("vsl_emu_sigmoid_rank_backward", float64, ranked, compared, grad_ranks, grad_ranked,
                   grad_compared, rows, cols, tau, descending, public_code_clamp)

    def sigmoid_rank_sorted_sums_cuda(self, float64, kind, sorted_values, value_weights, sorted_centres,
                                      centre_weights, centre_columns, skip_positions, out, rows, cols, tau,
                                      descending, device=0, stream=0):
        self._call("vsl_emu_sigmoid_rank_sorted_sums", float64, kind, sorted_values, value_weights, sorted_centres,
                   centre_weights, centre_columns, skip_positions, out, rows, cols, tau, descending)

    def vsl_loss_ratio_sum_cuda(self, float64, sims, sims_compared, semantic, semantic_compared, grad_sr, grad_cr,
                                row_sums, rows, cols, tau, public_code_clamp, device=0, stream=0):
        self._call("vsl_emu_vsl_loss_ratio_sum", float64, sims, sims_compared, semantic, semantic_compared, grad_sr,
                   grad_cr, row_sums, rows, cols, tau, public_code_clamp)

    def vsl_loss_ratio_sum_from_ranks_cuda(self, float64, sr, cr, grad_sr, grad_cr, row_sums, rows, cols, device=0,
                                           stream=0):
        self._call("vsl_emu_vsl_loss_ratio_sum_from_ranks", float64, sr, cr, grad_sr, grad_cr, row_sums, rows, cols)

    def smooth_ap_loss_cuda(self, float64, sims, relevant, weights, row_sums, coef_pos, coef_neg, grad_sims, rows,
                            cols, tau, device=0, stream=0):
        self._call("vsl_emu_smooth_ap_loss", float64, sims, relevant, weights, row_sums, coef_pos, coef_neg,
                   grad_sims, rows, cols, tau)

    def caption_index_gram_cuda(self, indptr, indices, data, rows, B, smem_cap, out, device=0, stream=0):
        self._call("vsl_emu_caption_index_gram_cuda", indptr, indices, data, rows, B, smem_cap, out)

    def caption_index_cider_matrix_cuda(self, indptr, indices, data, inv_norm, lens, bounds, caps, Pb, gptr, G,
                                        singleton, sigma, smem_cap, scratch, out, device=0, stream=0):
        b = (_I64 * len(bounds))(*bounds)
        self._call("vsl_emu_caption_index_cider_matrix_cuda", indptr, indices, data, inv_norm, lens, b, len(bounds),
                   caps, Pb, gptr, G, int(singleton), sigma, smem_cap, scratch, out)

    def faulty(self, which: str, inp: int, out: int, blocks: int) -> None:
        """Launches one of faulty_kernels.cu (64 threads a block)."""
        kernels = {"racy_shift": 0, "shift": 1, "early_return": 2, "split_barrier": 3, "shared_overflow": 4,
                   "shared_too_large": 5, "read_past_end": 6}
        self._call("vsl_emu_faulty", kernels[which], inp, out, blocks)


def memcheck(lib: Path, faulty: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs every kernel family of ``lib`` (built with ``sanitize=True``) on exactly sized buffers in
    a fresh Python process with AddressSanitizer preloaded: an access outside any buffer, however
    far, ends it with a report on stderr and a nonzero exit status. ``faulty`` adds a kernel that
    reads one element past its input, to show that the check can fail."""
    env = dict(os.environ, LD_PRELOAD=asan_runtime() or "",
               PYTHONPATH=os.pathsep.join([str(EMU.parent)] + sys.path),
               ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:exitcode=86")
    cmd = [sys.executable, "-m", "cuda_emu.memcheck", str(lib)] + (["--faulty"] if faulty else [])
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
