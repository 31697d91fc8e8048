"""The CUDA kernels (csrc/*.cu) run on the CPU under tests/cuda_emulator.py, on machines without a GPU.

Kernel level: each CUDA kernel family against its CPU kernel on shapes around the CUDA block (256
threads) and tile (1,024 columns) sizes, every block schedule giving bitwise the same result (no
race between threads), nothing written outside the outputs and nothing read outside the inputs
(guard values around every buffer, and every family once more under AddressSanitizer). Package
level: sigmoid_rank and vsl_loss against the reference with the package's CPU kernel calls routed
to the emulated CUDA kernels and CUDA's dense / sorted-window dispatch. And the emulator itself
finds the faults it is there to find.

These do not replace the GPU tests (test_cuda_* in the other modules, benchmarks/gpu_session.sh):
warps, device arithmetic, memory limits and speed are a GPU's.
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings

import vsl_ext
from vsl_ext import _native, sorted_window
from vsl_ext._native import _C
from vsl_ext import CaptionIndex

import cuda_emulator
import test_sigmoid_rank
from conftest import assert_close_grad, make_input
from test_caption_index import GROUPS
from test_infinities import ROWS as INFINITE_ROWS
from test_infinities import _check_loss as check_loss_against_oracle
from test_infinities import _masked_batch, _masked_pair, brute_rank, check_rank_paths, rows_with_infinities
from test_sigmoid_rank import KINDS, tied_grids
from test_sigmoid_rank import _check as check_rank
from test_vsl_loss import _pair
from test_vsl_loss import _check as check_loss

pytestmark = pytest.mark.skipif(cuda_emulator.compiler() is None,
                                reason="the CUDA emulator needs Linux and a C++ compiler (g++ or $CXX)")

# Around the kernels' 256-thread blocks and 1,024-column shared-memory tiles.
EDGE_SHAPES = [(1, 1), (3, 2), (2, 255), (2, 256), (1, 257), (1, 1023), (2, 1024), (1, 1025), (1, 2300)]
DTYPES = [torch.float32, torch.float64]
DTYPE_IDS = ["f32", "f64"]


@pytest.fixture(scope="session")
def build_dir(request, tmp_path_factory):
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
def emulator(build_dir):
    return cuda_emulator.Emulator(cuda_emulator.build(build_dir))


@pytest.fixture(scope="session")
def sanitized(build_dir):
    """The emulator built with AddressSanitizer."""
    if cuda_emulator.asan_runtime() is None:
        pytest.skip("the compiler has no AddressSanitizer runtime")
    return cuda_emulator.build(build_dir, sanitize=True)


def _route_to_emulator(monkeypatch, emulator):
    """The package's rank-kernel calls run the emulated CUDA kernels, dispatched as on CUDA."""
    monkeypatch.setattr(_native, "_C", cuda_emulator.CpuEntryPointsOnEmulatedCuda(_C, emulator))
    monkeypatch.setattr(_native, "SORTED_WINDOW_ON_CPU", True)


@pytest.fixture
def on_emulated_cuda(emulator, monkeypatch):
    _route_to_emulator(monkeypatch, emulator)


# ------------------------------------------------------------------------------------ kernel level
GUARD = 41  # elements on each side of every buffer
OUT_FILL = -7.25


class Out:
    """An output argument: a fresh (shape) buffer of dtype."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype = tuple(shape), dtype


def _guarded(values: torch.Tensor, fill):
    """values inside a buffer whose GUARD elements before and after hold fill (returns the view
    and the whole buffer)."""
    buf = torch.full((values.numel() + 2 * GUARD,), fill, dtype=values.dtype)
    view = buf[GUARD:GUARD + values.numel()].view(values.shape)
    view.copy_(values)
    return view, buf


def _in_fill(dtype):
    return float("nan") if dtype.is_floating_point else torch.iinfo(dtype).min  # a stray index read faults


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal element for element, NaN equal to NaN."""
    if not a.is_floating_point():
        return torch.equal(a, b)
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())


def run(emulator, name, args, schedules=("forward", "reverse", "shuffled")):
    """Calls ``emulator.<name>(*args)`` once per block schedule, inputs (tensors) and outputs (Out)
    in guarded buffers, None as a null pointer. Returns the outputs after checking that every
    schedule gave bitwise the same ones and that the inputs and every guard are unchanged."""
    results = []
    for i, schedule in enumerate(schedules):
        ptrs, outs, ins = [], [], []
        for a in args:
            if a is None:
                ptrs.append(0)
            elif isinstance(a, Out):
                view, buf = _guarded(torch.full(a.shape, OUT_FILL, dtype=a.dtype), OUT_FILL)
                ptrs.append(view.data_ptr())
                outs.append((view, buf))
            elif isinstance(a, torch.Tensor):
                view, buf = _guarded(a.contiguous(), _in_fill(a.dtype))
                ptrs.append(view.data_ptr())
                ins.append((a, view, buf))
            else:
                ptrs.append(a)
        with emulator.schedule(schedule, seed=i):
            getattr(emulator, name)(*ptrs)
        for view, buf in outs:
            assert (buf[:GUARD] == OUT_FILL).all() and (buf[-GUARD:] == OUT_FILL).all(), \
                f"{name} wrote outside an output ({schedule} schedule)"
        for a, view, buf in ins:
            guard = torch.full((GUARD,), _in_fill(a.dtype), dtype=a.dtype)
            assert _same(view, a), f"{name} changed an input"
            assert _same(buf[:GUARD], guard) and _same(buf[-GUARD:], guard), f"{name} wrote outside an input"
        results.append([view.clone() for view, _ in outs])
    for schedule, other in zip(schedules[1:], results[1:]):
        for a, b in zip(results[0], other):
            assert _same(a, b), \
                f"{name}: the {schedule} block schedule changed the result (threads race for shared or global memory)"
    return results[0]


def _dt(dtype):
    return "float64" if dtype == torch.float64 else "float32"


def _cpu(name, args):
    """The CPU kernel ``_C.<name>`` in float64 (float32 arguments are converted; an oracle for
    both precisions), on plain buffers; returns its Out arguments."""
    def in_float64(a):
        if isinstance(a, str):
            return a.replace("float32", "float64")
        if isinstance(a, torch.Tensor) and a.dtype == torch.float32:
            return a.double()
        return Out(a.shape, torch.float64) if isinstance(a, Out) else a

    args = [in_float64(a) for a in args]
    outs = [torch.full(a.shape, OUT_FILL, dtype=a.dtype) if isinstance(a, Out) else None for a in args]
    ptrs = [0 if a is None else o.data_ptr() if o is not None else a.data_ptr() if isinstance(a, torch.Tensor) else a
            for a, o in zip(args, outs)]
    getattr(_C, name)(*ptrs)
    return [o for o in outs if o is not None]


@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_dense_rank_kernels_match_cpu_kernels(emulator, shape, dtype, cross):
    rows, cols = shape
    x = make_input("random", shape, dtype, seed=1)
    y = make_input("tied", shape, dtype, seed=2) if cross else None
    g = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    for descending, clamp in ((True, 0.0), (False, 50.0)):
        common = (rows, cols, 1e-3, descending, clamp, 1)  # 1: dense
        (out,) = run(emulator, "rank_forward_cuda", (_dt(dtype), x, y, Out(shape, dtype), *common))
        (expected,) = _cpu("rank_forward_cpu", (_dt(dtype), x, y, Out(shape, dtype), *common, 1))
        torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=0)
        grads = (Out(shape, dtype), Out(shape, dtype) if cross else None)
        got = run(emulator, "rank_backward_cuda", (_dt(dtype), x, y, g, *grads, *common))
        want = _cpu("rank_backward_cpu", (_dt(dtype), x, y, g, *grads, *common, 1))
        for a, b in zip(got, want):
            assert_close_grad(a.double(), b.double())


@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("variant", ["row", "public-code"])
def test_fused_vsl_kernel_matches_cpu_kernel(emulator, shape, dtype, variant):
    """The fused SR/CR ratio kernel (partials, dL/dSR, dL/dCR); public-code ranks against given
    second matrices (the transposes, for a square batch)."""
    rows, cols = shape
    sx = make_input("random", shape, dtype, seed=4)
    cx = make_input("tied", shape, dtype, seed=5)
    sy, cy = (make_input("random", shape, dtype, seed=6), make_input("tied", shape, dtype, seed=7)) \
        if variant == "public-code" else (None, None)
    for gc in (Out(shape, dtype), None):
        args = [_dt(dtype), sx, sy, cx, cy, Out(shape, dtype), gc, Out((rows,), torch.float64), rows, cols,
                1.0 / (rows * cols), 1e-3, 0.0, 1]
        got = run(emulator, "vsl_forward_cuda", args)
        want = _cpu("vsl_forward_cpu", args + [1])
        for a, b in zip(got, want):
            assert_close_grad(a.double(), b.double())


@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind", [sorted_window.RANK, sorted_window.GRAD_SELF, sorted_window.GRAD_CENTRE,
                                  sorted_window.GRAD_WEIGHTED], ids=["rank", "self", "centre", "weighted"])
def test_window_kernel_matches_cpu_loop(emulator, shape, dtype, kind):
    """One thread per element running the element code the CPU loop runs."""
    rows, cols = shape
    gen = torch.Generator().manual_seed(kind)
    v = torch.sort(make_input("random", shape, dtype, seed=8), dim=1).values
    w = torch.randn(shape, generator=gen, dtype=dtype)
    u = make_input("random", shape, dtype, seed=9)
    wu = torch.randn(shape, generator=gen, dtype=dtype)
    uperm = torch.argsort(torch.rand(shape, generator=gen), dim=1)
    skip = torch.randint(-1, cols, shape, generator=gen)
    for descending in (True, False):
        for sk in (skip, None):
            args = [_dt(dtype), kind, v, w, u, wu, uperm, sk, Out(shape, dtype), rows, cols, 1e-3, descending]
            (got,) = run(emulator, "window_sums_cuda", args, schedules=("forward", "reverse"))
            (want,) = _cpu("window_sums_cpu", args + [1])
            assert not (got == OUT_FILL).any(), "an element was not written"
            assert_close_grad(got.double(), want.double())


def _with_infinities(x: torch.Tensor, seed: int) -> torch.Tensor:
    """x with -inf masks and +inf overflows (runs of both) at positions that differ between rows."""
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed))
    x = x.clone()
    x[u < 0.2] = -math.inf
    x[u > 0.88] = math.inf
    return x


@pytest.mark.parametrize("shape", [(3, 2), (2, 257), (1, 1025), (1, 2300)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_kernels_with_infinities_match_cpu_kernels(emulator, shape, dtype):
    """Dense rank (row and cross forms), fused VSL and sorted-window kernels on rows holding +-inf:
    no NaN, and the values of the CPU kernels (tests/test_infinities.py holds those to the oracle)."""
    rows, cols = shape
    x = _with_infinities(make_input("random", shape, dtype, seed=1), 11)
    y = _with_infinities(make_input("tied", shape, dtype, seed=2), 12)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    for yy in (None, y):
        for descending, clamp in ((True, 0.0), (False, 50.0)):
            common = (rows, cols, 1e-3, descending, clamp, 1)
            (out,) = run(emulator, "rank_forward_cuda", (_dt(dtype), x, yy, Out(shape, dtype), *common))
            (expected,) = _cpu("rank_forward_cpu", (_dt(dtype), x, yy, Out(shape, dtype), *common, 1))
            assert torch.isfinite(out).all()
            torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=0)
            grads = (Out(shape, dtype), Out(shape, dtype) if yy is not None else None)
            got = run(emulator, "rank_backward_cuda", (_dt(dtype), x, yy, g, *grads, *common))
            want = _cpu("rank_backward_cpu", (_dt(dtype), x, yy, g, *grads, *common, 1))
            for a, b, inp in zip(got, want, (x, yy)):
                assert torch.isfinite(a).all() and (a[torch.isinf(inp)] == 0).all()
                assert_close_grad(a.double(), b.double())
        args = [_dt(dtype), x, yy, y, yy, Out(shape, dtype), Out(shape, dtype), Out((rows,), torch.float64), rows,
                cols, 1.0 / (rows * cols), 1e-3, 0.0, 1]
        got = run(emulator, "vsl_forward_cuda", args)
        for a, b in zip(got, _cpu("vsl_forward_cpu", args + [1])):
            assert torch.isfinite(a).all()
            assert_close_grad(a.double(), b.double())
    v = torch.sort(x, dim=1).values
    uperm = torch.argsort(torch.rand(shape, generator=torch.Generator().manual_seed(4)), dim=1)
    skip = torch.randint(-1, cols, shape, generator=torch.Generator().manual_seed(5))
    for kind in range(4):
        for descending in (True, False):
            args = [_dt(dtype), kind, v, g, y, g, uperm, skip, Out(shape, dtype), rows, cols, 1e-3, descending]
            (got,) = run(emulator, "window_sums_cuda", args, schedules=("forward", "reverse"))
            (want,) = _cpu("window_sums_cpu", args + [1])
            assert torch.isfinite(got).all()
            assert_close_grad(got.double(), want.double())


@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_rank_ratio_kernel_matches_cpu_kernel(emulator, shape, dtype):
    rows, cols = shape
    gen = torch.Generator().manual_seed(10)
    sr = 1 + torch.rand(shape, generator=gen, dtype=dtype) * cols
    cr = torch.where(torch.rand(shape, generator=gen) < 0.2, sr, 1 + torch.rand(shape, generator=gen, dtype=dtype))
    for gc in (Out(shape, dtype), None):
        args = [_dt(dtype), sr, cr, Out(shape, dtype), gc, Out((rows,), torch.float64), rows, cols, 0.5]
        for a, b in zip(run(emulator, "rank_ratio_rows_cuda", args), _cpu("rank_ratio_rows_cpu", args)):
            torch.testing.assert_close(a.double(), b, rtol=1e-6, atol=0)


def test_empty_batches_launch_nothing(emulator):
    """0 rows: no launch (a GPU rejects a grid of 0 blocks; so does the emulator)."""
    x = torch.zeros((0, 4))
    emulator.rank_forward_cuda("float32", x.data_ptr(), 0, x.data_ptr(), 0, 4, 1e-3, True, 0.0, 1)
    emulator.rank_backward_cuda("float32", x.data_ptr(), 0, x.data_ptr(), x.data_ptr(), 0, 0, 4, 1e-3, True, 0.0, 1)
    emulator.vsl_forward_cuda("float32", *[x.data_ptr()] * 7, 0, 4, 1.0, 1e-3, 0.0, 1)
    emulator.window_sums_cuda("float32", 0, *[x.data_ptr()] * 7, 0, 4, 1e-3, True)
    emulator.rank_ratio_rows_cuda("float32", *[x.data_ptr()] * 5, 0, 4, 1.0)


def _caption_args(index, which):
    a = index._a
    return [torch.from_numpy(np.array(a[f"{which}_{k}"])) for k in ("indptr", "indices", "data")]


@pytest.mark.parametrize("which", ["img", "cap"])
def test_caption_index_gram_kernel_matches_cpu(emulator, which):
    """TF-IDF Gram rows staged in shared memory (cap >= the row length) and read from global memory (0)."""
    index = CaptionIndex.from_captions(GROUPS * 3, mode="tfidf", ngram_range=(1, 2))
    indptr, indices, data = _caption_args(index, which)
    n = len(indptr) - 1
    rows = torch.from_numpy(np.random.default_rng(1).integers(0, n, 150))
    B = len(rows)
    want = torch.empty((B, B))
    _C.caption_index_gram_cpu(*(t.numpy() for t in (indptr, indices, data)), index.vocab_size, rows.numpy(),
                              want.data_ptr(), 1)
    longest = int((indptr[1:] - indptr[:-1]).max())
    for cap in (longest, 0):
        (got,) = run(emulator, "caption_index_gram_cuda",
                     [indptr, indices, data, rows, B, cap, Out((B, B), torch.float32)])
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("grouped", [True, False], ids=["images", "captions"])
def test_caption_index_cider_matrix_kernels_match_cpu(emulator, grouped):
    """CIDEr-D between captions, pooled over images (grouped) or not; rows in and out of shared memory."""
    index = CaptionIndex.from_captions(GROUPS * 3, mode="cider-d")
    indptr, indices, data = _caption_args(index, "cap")
    inv_norm = torch.from_numpy(np.array(index._inv_norm()))
    lens = torch.from_numpy(np.array(index._a["cap_len"]))
    bounds = [int(b) for b in index._bounds()]
    rng = np.random.default_rng(2)
    if grouped:
        ptr = index._a["img_ptr"]
        ids = rng.integers(0, index.num_images, 40)
        counts = ptr[ids + 1] - ptr[ids]
        gptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        caps = np.concatenate([np.arange(ptr[i], ptr[i + 1]) for i in ids]).astype(np.int64)
    else:
        caps = rng.integers(0, index.num_captions, 60).astype(np.int64)
        gptr = np.arange(len(caps) + 1, dtype=np.int64)
    G, Pb = len(gptr) - 1, len(caps)
    want = torch.empty((G, G))
    _C.caption_index_cider_matrix_cpu(*(t.numpy() for t in (indptr, indices, data, inv_norm, lens)), np.array(bounds),
                                      caps, gptr, float(index.sigma), want.data_ptr(), 1)
    longest = int((indptr[1:] - indptr[:-1]).max())
    scratch = Out((Pb * Pb,), torch.float32) if grouped else None
    for cap in (longest, 0):
        args = [indptr, indices, data, inv_norm, lens, bounds, torch.from_numpy(caps), Pb, torch.from_numpy(gptr), G,
                not grouped, float(index.sigma), cap, scratch, Out((G, G), torch.float32)]
        got = run(emulator, "caption_index_cider_matrix_cuda", args)[-1]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_caption_index_shared_memory_cap_fits_a_launch(emulator):
    """CAPTION_INDEX_SMEM_ROW_CAP entries (8 bytes each, csrc/caption_index.h) are the most dynamic
    shared memory a launch gets without opting in (48 KiB): one more entry is a launch error."""
    cap = _C.CAPTION_INDEX_SMEM_ROW_CAP
    long = " ".join(f"w{i}" for i in range(cap + 10))
    index = CaptionIndex.from_captions([[long], ["w1 w2"]], mode="tfidf")
    indptr, indices, data = _caption_args(index, "img")
    rows = torch.tensor([0, 1, 0])
    out = torch.empty((3, 3))
    args = [t.data_ptr() for t in (indptr, indices, data, rows)] + [3]
    emulator.caption_index_gram_cuda(*args, cap, out.data_ptr())
    with pytest.raises(RuntimeError, match="shared memory"):
        emulator.caption_index_gram_cuda(*args, cap + 1, out.data_ptr())


# ----------------------------------------------------------------------------------- the emulator
def test_emulator_finds_a_missing_barrier(emulator):
    x = torch.randn(3, 64)
    assert len({tuple(run(emulator, "faulty", ["shift", x, Out((3, 64), torch.float32), 3], (s,))[0].flatten().tolist())
                for s in ("forward", "reverse")}) == 1
    with pytest.raises(AssertionError, match="threads race"):
        run(emulator, "faulty", ["racy_shift", x, Out((3, 64), torch.float32), 3])


@pytest.mark.parametrize("kernel, message", [
    ("early_return", "returned while 63 wait"),
    ("split_barrier", "different __syncthreads"),
    ("shared_overflow", r"wrote past the end of __shared__ s \(256 bytes\)"),
    ("shared_too_large", "57344 bytes of shared memory"),
])
def test_emulator_finds_faulty_launches(emulator, kernel, message):
    x, out = torch.zeros(64), torch.zeros(64)
    with pytest.raises(RuntimeError, match=message):
        emulator.faulty(kernel, x.data_ptr(), out.data_ptr(), 1)
    emulator.faulty("shift", x.data_ptr(), out.data_ptr(), 1)  # the error does not stick


def test_kernels_pass_address_sanitizer(sanitized):
    """Every kernel family on exactly sized buffers, AddressSanitizer watching every access."""
    done = cuda_emulator.memcheck(sanitized)
    assert done.returncode == 0 and "memcheck workload done" in done.stdout, done.stderr[-6000:]


def test_address_sanitizer_finds_a_read_past_the_end(sanitized):
    done = cuda_emulator.memcheck(sanitized, faulty=True)
    assert done.returncode == 86, done.stderr[-6000:]
    assert "heap-buffer-overflow" in done.stderr and "read_past_end_kernel" in done.stderr


def test_rewrite_rejects_what_it_does_not_handle():
    assert "LaunchConfig(g, b)(x)" in cuda_emulator.rewrite("k<<<g, b>>>(x);")
    with pytest.raises(ValueError, match="__shared__"):
        cuda_emulator.rewrite("__shared__ float s;")


# ---------------------------------------------------------------------------------- package level
@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (17, 17), (7, 3), (5, 300), (2, 1100)], ids=str)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sigmoid_rank_matches_reference(on_emulated_cuda, shape, kind, dtype):
    m = make_input(kind, shape, dtype)
    for descending in (True, False):
        check_rank(m, 1e-3, descending, ("dense", "sorted", "auto"))


@pytest.mark.parametrize("kind", ["random", "adversarial"])
def test_sorted_window_on_long_rows_meets_its_error_bound(on_emulated_cuda, kind):
    """The sorted-window path's float32 bound (README) at 4,096 columns, against the float64 dense kernel."""
    test_sigmoid_rank.test_sorted_window_on_long_rows_meets_its_error_bound(kind)


@pytest.mark.parametrize("n", [1, 2, 3, 17, 64])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", ["row", "public-code"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_vsl_loss_matches_reference(on_emulated_cuda, n, kind, variant, dtype):
    s, c = _pair(kind, n, dtype)
    check_loss(s, c, variant, ("dense", "sorted"))


# The emulated-CUDA paths: dense, sorted-window and CUDA's automatic choice (routing left to the fixture).
EMULATED_PATHS = [("dense", None), ("sorted", None), ("auto", None)]


@pytest.mark.parametrize("case", sorted(INFINITE_ROWS) + ["masked batch"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_rows_with_infinities_match_the_oracle(on_emulated_cuda, case, dtype):
    """+-inf rows (the issue's, several infinities, all-infinite and one-column rows, masked batches
    across the 1,024-column tile) on CUDA's dense and sorted-window paths, against the float64 oracle
    of tests/test_infinities.py; gradients 0 at infinite entries."""
    m = _masked_batch(2, 1030, dtype) if case == "masked batch" else \
        torch.tensor(INFINITE_ROWS[case], dtype=torch.float64).to(dtype)
    for descending in (True, False):
        check_rank_paths(m, 1e-3, descending, EMULATED_PATHS)


@pytest.mark.parametrize("variant", ["row", "public-code"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_vsl_loss_with_masked_captions(on_emulated_cuda, variant, dtype):
    """Fused VSL kernel (dense) and the sorted-window ranks with -inf-masked captions, against the oracle."""
    s, c = _masked_pair(20, dtype, pad=5)
    check_loss_against_oracle(s, c, variant, paths=[("dense", None), ("sorted", None)])


@settings(max_examples=25, deadline=None)
@given(case=rows_with_infinities(max_rows=3, max_cols=40))
def test_hypothesis_rows_with_infinities(emulator, case):
    m, descending = case
    with pytest.MonkeyPatch.context() as mp:  # not the fixture: hypothesis reuses function-scoped fixtures
        _route_to_emulator(mp, emulator)
        for dtype in DTYPES:
            check_rank_paths(m.to(dtype), 1e-3, descending, EMULATED_PATHS)


@settings(max_examples=30, deadline=None)
@given(case=tied_grids(max_rows=4))
def test_hypothesis_tied_grids(emulator, case):
    m, descending = case
    with pytest.MonkeyPatch.context() as mp:  # not the fixture: hypothesis reuses function-scoped fixtures
        _route_to_emulator(mp, emulator)
        check_rank(m, 1e-3, descending, ("dense", "sorted"))


def test_large_temperature_gradcheck(on_emulated_cuda):
    for descending in (True, False):
        for algorithm in ("dense", "sorted"):
            m = make_input("random", (6, 7), torch.float64, seed=3) * 10
            assert torch.autograd.gradcheck(
                lambda x: vsl_ext.sigmoid_rank(x, 0.05, descending, algorithm=algorithm), (m.requires_grad_(),))
            s, c = _pair("random", 5, torch.float64)
            assert torch.autograd.gradcheck(
                lambda a, b: vsl_ext.vsl_loss(a, b, 0.05, algorithm=algorithm),
                (s.requires_grad_(), c.requires_grad_()))


def test_auto_takes_the_sorted_window_path_on_long_sparse_rows(on_emulated_cuda, monkeypatch):
    """CUDA's automatic choice: sorted-window for rows of at least CUDA_SORTED_FROM_COLS columns with
    few pairs inside the window, dense otherwise (and for rows with NaN)."""
    calls = []
    real = _native.window_sums
    monkeypatch.setattr(_native, "window_sums", lambda *a: (calls.append(a[0]), real(*a))[1])
    monkeypatch.setattr(_native, "CUDA_SORTED_FROM_COLS", 64)
    wide = make_input("wide", (4, 80), torch.float32)  # few pairs within 30 tau
    narrow = make_input("random", (4, 80), torch.float32) * 0.1  # every pair within it
    for m, sorted_path in ((wide, True), (narrow, False), (wide[:, :60], False)):
        calls.clear()
        check_rank(m, 1e-3, True, ("auto",))
        assert bool(calls) == sorted_path
    m = wide.clone()
    m[1, 3] = math.nan
    calls.clear()
    r = vsl_ext.sigmoid_rank(m)
    assert not calls and torch.isnan(r[1]).all() and torch.isfinite(r[[0, 2, 3]]).all()
    m = wide.clone()  # infinities stay on the window path
    m[1, 3] = m[2, :40] = -math.inf
    m[0, 7] = math.inf
    calls.clear()
    r = vsl_ext.sigmoid_rank(m)
    assert calls
    want = torch.tensor(brute_rank(m.double().tolist(), 1e-3), dtype=torch.float64)
    torch.testing.assert_close(r.double(), want, rtol=1e-5, atol=0)
