"""The peers vsl_ext is measured against (issue 13): what a user who knows PyTorch, numba or cupy would
write instead, each for ``sigmoid_rank`` (descending) and the row ``vsl_loss`` (the paper's Eq. 5),
and ``torch.compile`` also for the public-code variant.

* ``compile``: ``torch.compile`` of the published formula (``vsl_ext.reference``): inductor's C++/OpenMP
  on CPU, Triton on CUDA. Fuses the n^3 sigmoid sum into a reduction instead of materialising it.
* ``chunked``: the formula over blocks of rows, each block under activation checkpointing
  (``torch.utils.checkpoint``), so at most one block's n^3 / rows tensors are alive: O(n^2) memory
  (a block holds at most ``CHUNK_ELEMENTS`` pair terms).
* ``numba``: ``numba.njit(parallel=True, fastmath=...)`` loops of the formula (rows in parallel, the
  pair sum in float32 registers, reassociating fastmath without nnan/ninf), forward and a
  hand-written backward; numba's threads are set to torch's. On CUDA: ``numba.cuda`` kernels of the
  same loops, one thread per entry.
* ``cupy``: on CUDA, a cupy ``RawKernel`` of the dense fused formula (one thread per entry ranks it in S
  and C and writes the ratio and its gradient with respect to SR; a second kernel takes that gradient
  through the rank).

The numba and cupy peers take finite input (the benchmark's); they do not implement the infinity rule
of ``vsl_ext.reference``. The CUDA peers (numba.cuda, cupy) are written for a GPU machine and are
skipped where there is none; as of this writing they have not run on one.

Each peer is ``fn(tensor, ...) -> tensor`` with autograd, like the reference, so ``_cases.make_call``
times it the same way and checks it against the float64 formula (``check_reference``).
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Optional

import numpy as np
import torch

from vsl_ext import reference

TAU = 1e-3
CHUNK_ELEMENTS = 1 << 24  # pair terms per checkpointed block (64 MiB of float32 per n^3-shaped tensor)

try:
    import numba
    from numba import prange
except ImportError:  # the bench extra installs numba; without it the numba peers are skipped
    numba = None

try:
    import cupy
except ImportError:
    cupy = None

# peer -> (label, devices); the report's tables list them in this order after vsl_ext
PEERS = {
    "compile": ("torch.compile(formula)", ("cpu", "cuda")),
    "chunked": ("chunked+checkpoint", ("cpu", "cuda")),
    "numba": ("numba parallel", ("cpu",)),
    "numba-cuda": ("numba.cuda", ("cuda",)),
    "cupy": ("cupy RawKernel", ("cuda",)),
}
# which peers each (op, variant) has
PEERS_OF = {("sigmoid_rank", None): ("compile", "chunked", "numba", "numba-cuda", "cupy"),
            ("vsl_loss", "row"): ("compile", "chunked", "numba", "numba-cuda", "cupy"),
            ("vsl_loss", "public-code"): ("compile", "chunked")}
JIT_PEERS = ("compile", "numba", "numba-cuda", "cupy")  # their first call compiles


def unavailable(peer: str, device: str) -> Optional[str]:
    """Why ``peer`` cannot run on ``device`` here, or None."""
    if device not in PEERS[peer][1]:
        return f"{PEERS[peer][0]} is a peer on {' and '.join(PEERS[peer][1])} only"
    if peer in ("numba", "numba-cuda") and numba is None:
        return "numba is not installed (pip install numba, or the bench extra)"
    if peer == "numba-cuda" and not _numba_cuda_ok():
        return "numba.cuda finds no usable GPU"
    if peer == "cupy" and cupy is None:
        return "cupy is not installed"
    return None


def _numba_cuda_ok() -> bool:
    try:
        from numba import cuda
        return bool(cuda.is_available())
    except Exception:  # noqa: BLE001 (a broken CUDA install is "not available")
        return False


# ---------------------------------------------------------------------------------------------- torch.compile
@functools.lru_cache(maxsize=None)
def compiled(op: str, variant: Optional[str]) -> Callable:
    """torch.compile of the formula (static shapes: a new n compiles anew, in the warm-up call)."""
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    if op == "sigmoid_rank":
        fn = reference.sigmoid_rank
    elif variant == "public-code":
        fn = reference.public_code_vsl_loss
    else:
        fn = reference.vsl_loss
    return torch.compile(fn, dynamic=False)


# ---------------------------------------------------------------------------------------------- chunked
def _block_rows(n: int) -> int:
    return max(1, CHUNK_ELEMENTS // (n * n))


def _rows_ratio_sum(s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    sr, cr = reference.sigmoid_rank(s, TAU), reference.sigmoid_rank(c, TAU)
    return (torch.minimum(sr, cr) / torch.maximum(sr, cr)).sum()


def chunked_sigmoid_rank(m: torch.Tensor) -> torch.Tensor:
    """The formula's ranks, a block of rows at a time under checkpointing (rows are independent)."""
    from torch.utils.checkpoint import checkpoint

    b = _block_rows(m.shape[1])
    return torch.cat([checkpoint(reference.sigmoid_rank, m[r:r + b], TAU, use_reentrant=False)
                      for r in range(0, m.shape[0], b)])


def _public_code_rows(m: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
    """Rows [r0, r1) of the public-code rank: ``R[b, c] = 1 + sum_{a != c} sig((M[a, b] - M[b, c]) / tau)``
    with the published code's clamped sigmoid."""
    values, compared = m[r0:r1], m.t()[r0:r1]
    terms = reference.public_code_sigmoid(compared.unsqueeze(1) - values.unsqueeze(2), TAU)  # [b, c, a]
    n = m.shape[1]
    own = torch.eye(n, dtype=torch.bool, device=m.device)
    return terms.masked_fill(own, 0.0).sum(-1) + 1


def _public_code_rows_ratio_sum(s: torch.Tensor, c: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
    sr, cr = _public_code_rows(s, r0, r1), _public_code_rows(c, r0, r1)
    return (torch.minimum(sr, cr) / torch.maximum(sr, cr)).sum()


def chunked_public_code_vsl_loss(s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The public-code VSL, a block of rows of SR and CR at a time (each needs its rows of S and the
    same columns of S) under checkpointing."""
    from torch.utils.checkpoint import checkpoint

    n, b = s.shape[0], _block_rows(s.shape[1])
    total = sum(checkpoint(_public_code_rows_ratio_sum, s, c, r, min(n, r + b), use_reentrant=False)
                for r in range(0, n, b))
    return 1.0 - total / float(s.numel())


def chunked_vsl_loss(s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The row VSL, a block of rows at a time under checkpointing: each block's ratio sum is kept, its
    n^3 / rows pair terms are recomputed in the backward."""
    from torch.utils.checkpoint import checkpoint

    n, b = s.shape[0], _block_rows(s.shape[1])
    total = sum(checkpoint(_rows_ratio_sum, s[r:r + b], c[r:r + b], use_reentrant=False) for r in range(0, n, b))
    return 1.0 - total / float(s.numel())


# ---------------------------------------------------------------------------------------------- numba (CPU)
if numba is not None:
    # numba's own thread pool: its OpenMP layer refuses to run in a child forked from a process that
    # loaded GNU OpenMP (torch), which the CPU memory probe does (benchmarks/_rss_server.py).
    numba.config.THREADING_LAYER = "workqueue"
    # Signatures given: compiled when this module is imported (the memory probe imports it before it
    # forks, so no case pays the compilation), float32 and float64.
    _SIGS_RANK = ["void(float32[:, ::1], float32, float32[:, ::1])", "void(float64[:, ::1], float64, float64[:, ::1])"]
    _SIGS_BACK = ["void(float32[:, ::1], float32[:, ::1], float32, float32[:, ::1])",
                  "void(float64[:, ::1], float64[:, ::1], float64, float64[:, ::1])"]

    # float32 literals: float32 arithmetic in the float32 version (a Python float would make it double),
    # widened to float64 in the float64 one
    _ONE, _HALF, _ZERO = np.float32(1.0), np.float32(0.5), np.float32(0.0)
    # fastmath without nnan/ninf: exp overflows to inf where a pair is saturated (sigmoid 0), which
    # must stay exact
    _FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

    @numba.njit(_SIGS_RANK, parallel=True, fastmath=_FASTMATH, cache=True)
    def _nb_rank(m, k, out):
        """out[i, j] = 1 + sum_{a != j} sigmoid((m[i, a] - m[i, j]) k)."""
        rows, cols = m.shape
        for i in prange(rows):
            for j in range(cols):
                x = m[i, j]
                acc = _ZERO
                for a in range(cols):
                    acc += _ONE / (_ONE + math.exp((x - m[i, a]) * k))
                out[i, j] = acc + _HALF  # 1 + sum - sigmoid(0)

    @numba.njit(_SIGS_BACK, parallel=True, fastmath=_FASTMATH, cache=True)
    def _nb_rank_backward(m, g, k, out):
        """out[i, l] = k sum_j sigmoid'((m[i, l] - m[i, j]) k) (g[i, j] - g[i, l])."""
        rows, cols = m.shape
        for i in prange(rows):
            for l in range(cols):
                x = m[i, l]
                gl = g[i, l]
                acc = _ZERO
                for j in range(cols):
                    s = _ONE / (_ONE + math.exp((m[i, j] - x) * k))
                    acc += s * (_ONE - s) * (g[i, j] - gl)
                out[i, l] = acc * k


def _np(t: torch.Tensor):
    return t.detach().contiguous().numpy()


def _nb_threads() -> None:
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _numba_rank(m: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(m)
    _nb_threads()
    _nb_rank(_np(m), 1.0 / TAU, out.numpy())
    return out


def _numba_rank_backward(m: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(m)
    _nb_threads()
    _nb_rank_backward(_np(m), _np(g.to(m.dtype)), 1.0 / TAU, out.numpy())
    return out


def _ratio_grad(sr: torch.Tensor, cr: torch.Tensor) -> torch.Tensor:
    """d(min/max)/dSR (0 where SR = CR, as torch.minimum/maximum's split gradient gives)."""
    return torch.where(sr < cr, 1.0 / cr, torch.where(sr > cr, -cr / (sr * sr), torch.zeros_like(sr)))


class _RankFn(torch.autograd.Function):
    """sigmoid_rank by ``rank`` / ``backward`` kernels (numba on CPU, numba.cuda or cupy on CUDA)."""

    @staticmethod
    def forward(ctx, m, kernels):
        ctx.save_for_backward(m)
        ctx.kernels = kernels
        return kernels[0](m)

    @staticmethod
    def backward(ctx, g):
        (m,) = ctx.saved_tensors
        return ctx.kernels[1](m, g), None


class _RowLossFn(torch.autograd.Function):
    """Row VSL from rank kernels: 1 - mean(min(SR, CR) / max(SR, CR)); backward through SR (and CR)."""

    @staticmethod
    def forward(ctx, s, c, kernels):
        sr, cr = kernels[0](s), kernels[0](c)
        ctx.save_for_backward(s, c, sr, cr)
        ctx.kernels = kernels
        return 1.0 - (torch.minimum(sr, cr) / torch.maximum(sr, cr)).mean()

    @staticmethod
    def backward(ctx, grad):
        s, c, sr, cr = ctx.saved_tensors
        scale = -grad / sr.numel()
        ds = ctx.kernels[1](s, _ratio_grad(sr, cr) * scale) if ctx.needs_input_grad[0] else None
        dc = ctx.kernels[1](c, _ratio_grad(cr, sr) * scale) if ctx.needs_input_grad[1] else None
        return ds, dc, None


def numba_sigmoid_rank(m: torch.Tensor) -> torch.Tensor:
    return _RankFn.apply(m, (_numba_rank, _numba_rank_backward))


def numba_vsl_loss(s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return _RowLossFn.apply(s, c, (_numba_rank, _numba_rank_backward))


# ---------------------------------------------------------------------------------------------- numba.cuda
@functools.lru_cache(maxsize=1)
def _numba_cuda_kernels():
    from numba import cuda

    @cuda.jit
    def rank(m, k, out):
        i, j = cuda.grid(2)
        rows, cols = m.shape
        if i < rows and j < cols:
            x = m[i, j]
            acc = 0.0
            for a in range(cols):
                acc += 1.0 / (1.0 + math.exp((x - m[i, a]) * k))
            out[i, j] = acc + 0.5

    @cuda.jit
    def backward(m, g, k, out):
        i, l = cuda.grid(2)
        rows, cols = m.shape
        if i < rows and l < cols:
            x = m[i, l]
            gl = g[i, l]
            acc = 0.0
            for j in range(cols):
                s = 1.0 / (1.0 + math.exp((m[i, j] - x) * k))
                acc += s * (1.0 - s) * (g[i, j] - gl)
            out[i, l] = acc * k

    def launch(kernel, m, *args):
        block = (16, 16)
        grid = ((m.shape[0] + 15) // 16, (m.shape[1] + 15) // 16)
        kernel[grid, block](*[cuda.as_cuda_array(a) if isinstance(a, torch.Tensor) else a for a in (m,) + args])

    def fwd(m):
        m = m.detach().contiguous()
        out = torch.empty_like(m)
        launch(rank, m, 1.0 / TAU, out)
        return out

    def bwd(m, g):
        m, g = m.detach().contiguous(), g.detach().to(m.dtype).contiguous()
        out = torch.empty_like(m)
        launch(backward, m, g, 1.0 / TAU, out)
        return out
    return fwd, bwd


def numba_cuda_sigmoid_rank(m: torch.Tensor) -> torch.Tensor:
    return _RankFn.apply(m, _numba_cuda_kernels())


def numba_cuda_vsl_loss(s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return _RowLossFn.apply(s, c, _numba_cuda_kernels())


# ---------------------------------------------------------------------------------------------- cupy
_CUPY_SOURCE = r"""
extern "C" __global__ void rank(const float* m, float k, float* out, int rows, int cols) {
  int j = blockIdx.x * blockDim.x + threadIdx.x, i = blockIdx.y;
  if (i >= rows || j >= cols) return;
  const float* row = m + (long long)i * cols;
  float x = row[j], acc = 0.f;
  for (int a = 0; a < cols; ++a) acc += 1.f / (1.f + __expf((x - row[a]) * k));
  out[(long long)i * cols + j] = acc + 0.5f;
}
// The fused row VSL: SR_ij and CR_ij in one thread, then the ratio and d ratio / d SR (scaled).
extern "C" __global__ void vsl_row(const float* s, const float* c, float k, float scale, float* ratio,
                                   float* grad_sr, int rows, int cols) {
  int j = blockIdx.x * blockDim.x + threadIdx.x, i = blockIdx.y;
  if (i >= rows || j >= cols) return;
  const float* srow = s + (long long)i * cols;
  const float* crow = c + (long long)i * cols;
  float xs = srow[j], xc = crow[j], sr = 0.5f, cr = 0.5f;
  for (int a = 0; a < cols; ++a) {
    sr += 1.f / (1.f + __expf((xs - srow[a]) * k));
    cr += 1.f / (1.f + __expf((xc - crow[a]) * k));
  }
  long long o = (long long)i * cols + j;
  ratio[o] = fminf(sr, cr) / fmaxf(sr, cr);
  grad_sr[o] = scale * (sr < cr ? 1.f / cr : (sr > cr ? -cr / (sr * sr) : 0.f));
}
extern "C" __global__ void backward(const float* m, const float* g, float k, float* out, int rows, int cols) {
  int l = blockIdx.x * blockDim.x + threadIdx.x, i = blockIdx.y;
  if (i >= rows || l >= cols) return;
  const float* row = m + (long long)i * cols;
  const float* grow = g + (long long)i * cols;
  float x = row[l], gl = grow[l], acc = 0.f;
  for (int j = 0; j < cols; ++j) {
    float s = 1.f / (1.f + __expf((row[j] - x) * k));
    acc += s * (1.f - s) * (grow[j] - gl);
  }
  out[(long long)i * cols + l] = acc * k;
}
"""


@functools.lru_cache(maxsize=1)
def _cupy_module():
    return cupy.RawModule(code=_CUPY_SOURCE)


def _cupy_launch(name: str, rows: int, cols: int, *args) -> None:
    block = 128
    kernel = _cupy_module().get_function(name)
    conv = [cupy.from_dlpack(a.detach().contiguous()) if isinstance(a, torch.Tensor) else a for a in args]
    kernel(((cols + block - 1) // block, rows), (block,), (*conv, cupy.int32(rows), cupy.int32(cols)))


def _check_cupy_input(m: torch.Tensor) -> None:
    if m.dtype != torch.float32 or not m.is_cuda:
        raise ValueError("the cupy peer takes float32 CUDA tensors")


def _cupy_rank(m: torch.Tensor) -> torch.Tensor:
    _check_cupy_input(m)
    m = m.detach().contiguous()
    out = torch.empty_like(m)
    _cupy_launch("rank", m.shape[0], m.shape[1], m, cupy.float32(1.0 / TAU), out)
    return out


def _cupy_rank_backward(m: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    m, g = m.detach().contiguous(), g.detach().float().contiguous()
    out = torch.empty_like(m)
    _cupy_launch("backward", m.shape[0], m.shape[1], m, g, cupy.float32(1.0 / TAU), out)
    return out


class _CupyRowLoss(torch.autograd.Function):
    """The fused dense row VSL of ``_CUPY_SOURCE`` (forward writes d loss / dSR; backward only ranks' grad)."""

    @staticmethod
    def forward(ctx, s, c):
        _check_cupy_input(s)
        s, c = s.detach().contiguous(), c.detach().float().contiguous()
        ratio, grad_sr = torch.empty_like(s), torch.empty_like(s)
        _cupy_launch("vsl_row", s.shape[0], s.shape[1], s, c, cupy.float32(1.0 / TAU),
                     cupy.float32(-1.0 / s.numel()), ratio, grad_sr)
        ctx.save_for_backward(s, grad_sr)
        return 1.0 - ratio.mean()

    @staticmethod
    def backward(ctx, grad):
        s, grad_sr = ctx.saved_tensors
        return _cupy_rank_backward(s, grad_sr * grad), None


def cupy_sigmoid_rank(m: torch.Tensor) -> torch.Tensor:
    return _RankFn.apply(m, (_cupy_rank, _cupy_rank_backward))


def cupy_vsl_loss(s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return _CupyRowLoss.apply(s, c)


# ---------------------------------------------------------------------------------------------- lookup
def function(peer: str, op: str, variant: Optional[str]) -> Callable:
    """The peer's ``sigmoid_rank(m)`` or ``vsl_loss(s, c)`` (tau = 1e-3, descending)."""
    if peer == "compile":
        fn = compiled(op, variant)
        return (lambda m: fn(m, TAU)) if op == "sigmoid_rank" else (lambda s, c: fn(s, c, TAU))
    if peer == "chunked" and variant == "public-code":
        return chunked_public_code_vsl_loss
    table = {"chunked": (chunked_sigmoid_rank, chunked_vsl_loss),
             "numba": (numba_sigmoid_rank, numba_vsl_loss),
             "numba-cuda": (numba_cuda_sigmoid_rank, numba_cuda_vsl_loss),
             "cupy": (cupy_sigmoid_rank, cupy_vsl_loss)}
    return table[peer][0 if op == "sigmoid_rank" else 1]


# ---------------------------------------------------------------------------------------------- checks
# The float64 check reference costs O(n^3) time in eager PyTorch (CPU, 2 cores: ~35 s at n = 512, ~4 min
# at 1,024 per op); above this n cases are timed but not checked (tests/test_numba_oracle.py checks
# vsl_ext at n = 1,024).
CHECK_MAX_N = {"cpu": 512, "cuda": 2048}
# One tolerance for every implementation: max |x - x64| / max |x64| over the value (the ranks or the
# loss) and, for forward+backward, over the gradient.
CHECK_TOLERANCE = 1e-4


@functools.lru_cache(maxsize=4)
def check_reference(op: str, variant: Optional[str], n: int, device: str):
    """The formula in float64 on the case's inputs: (value, gradient with respect to S; for
    sigmoid_rank of sum(G * R)), by row blocks under checkpointing (O(n^2) memory)."""
    from benchmarks._cases import make_inputs

    inputs = {k: v.double().to(device) for k, v in make_inputs(n, device).items()}
    s = inputs["S"].requires_grad_(True)
    if op == "sigmoid_rank":
        out = chunked_sigmoid_rank(s)
    elif variant == "public-code":
        out = chunked_public_code_vsl_loss(s, inputs["C"])
    else:
        out = chunked_vsl_loss(s, inputs["C"])
    (grad,) = torch.autograd.grad(out, s, inputs["G"] if out.dim() else None)
    return out.detach(), grad


def check_error(case: dict, value: torch.Tensor, grad: Optional[torch.Tensor]) -> Optional[float]:
    """Largest relative error (see CHECK_TOLERANCE) of a case's outputs against the float64 formula,
    or None where the case is not checked (n > CHECK_MAX_N[device])."""
    if case["n"] > CHECK_MAX_N[case["device"]]:
        return None
    ref_value, ref_grad = check_reference(case["op"], case["variant"], case["n"], case["device"])

    def rel(x, ref):
        x = x.detach().double().to(ref.device)
        return float((x - ref).abs().max() / ref.abs().max().clamp_min(1e-300))
    err = rel(value, ref_value)
    if grad is not None:
        err = max(err, rel(grad, ref_grad))
    return err if math.isfinite(err) else math.inf
