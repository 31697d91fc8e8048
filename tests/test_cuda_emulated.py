"""The CUDA kernels (csrc/*.cu) at kernel level, on the CPU under the emulator of tests/cuda_emu.

Each CUDA kernel family against an oracle (the CPU kernels, or a float64 formula where the CPU has no
counterpart) on shapes around the CUDA block (256 threads) and tile (1,024 columns) sizes, every
block schedule giving bitwise the same result (no race between threads), nothing written outside the
outputs and nothing read outside the inputs (guard values around every buffer, and every family once
more under AddressSanitizer). And the emulator itself finds the faults it is there to find.

The ops on emulated CUDA (values, gradients, the choice of algorithm) are tested with the other
devices, by the ``cuda-emulated`` device of test_sigmoid_rank.py, test_vsl_loss.py,
test_sigmoid_rank_sorted.py, test_infinities.py and test_op_checks.py. None of this replaces the GPU
tests (the ``cuda`` device, benchmarks/gpu_session.sh): warps, device arithmetic, memory limits and
speed are a GPU's.
"""
import math

import numpy as np
import pytest
import torch

import cuda_emu
from helpers import CAPTION_GROUPS as GROUPS
from helpers import assert_close_grad, make_input, requires_emulator
from vsl_ext import CaptionIndex
from vsl_ext._native import _C

pytestmark = requires_emulator

# Around the kernels' 256-thread blocks and 1,024-column shared-memory tiles.
EDGE_SHAPES = [(1, 1), (3, 2), (2, 255), (2, 256), (1, 257), (1, 1023), (2, 1024), (1, 1025), (1, 2300)]
DTYPES = [torch.float32, torch.float64]
DTYPE_IDS = ["f32", "f64"]
SUMS = _C.SORTED_SUMS


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
        for _view, buf in outs:
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


def _f64(dtype) -> bool:
    return dtype == torch.float64


def _cpu(name, args):
    """The CPU kernel ``_C.<name>`` in float64 (float32 arguments are converted; an oracle for
    both precisions), on plain buffers; returns its Out arguments."""
    def in_float64(a):
        if isinstance(a, torch.Tensor) and a.dtype == torch.float32:
            return a.double()
        return Out(a.shape, torch.float64) if isinstance(a, Out) else a

    args = [True] + [in_float64(a) for a in args[1:]]  # the first argument: float64
    outs = [torch.full(a.shape, OUT_FILL, dtype=a.dtype) if isinstance(a, Out) else None for a in args]
    ptrs = [0 if a is None else o.data_ptr() if o is not None else a.data_ptr() if isinstance(a, torch.Tensor) else a
            for a, o in zip(args, outs)]
    getattr(_C, name)(*ptrs)
    return [o for o in outs if o is not None]


@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("compared", [False, True], ids=["row", "compared"])
def test_dense_rank_kernels_match_cpu_kernels(emulator, shape, dtype, compared):
    rows, cols = shape
    x = make_input("random", shape, dtype, seed=1)
    y = make_input("tied", shape, dtype, seed=2) if compared else None
    g = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    for descending, clamp in ((True, False), (False, True)):
        common = (rows, cols, 1e-3, descending, clamp)
        (out,) = run(emulator, "sigmoid_rank_forward_cuda", (_f64(dtype), x, y, Out(shape, dtype), *common))
        (expected,) = _cpu("sigmoid_rank_forward_cpu", (_f64(dtype), x, y, Out(shape, dtype), *common, 1, 1))
        torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=0)
        grads = (Out(shape, dtype), Out(shape, dtype) if compared else None)
        got = run(emulator, "sigmoid_rank_backward_cuda", (_f64(dtype), x, y, g, *grads, *common))
        want = _cpu("sigmoid_rank_backward_cpu", (_f64(dtype), x, y, g, *grads, *common, 1, 1))
        for a, b in zip(got, want):
            assert_close_grad(a.double(), b.double())


@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("variant", ["row", "public-code"])
def test_fused_vsl_kernel_matches_cpu_kernel(emulator, shape, dtype, variant):
    """The fused SR/CR ratio kernel (row sums, d/dSR, d/dCR); public-code ranks against given
    compared matrices (the transposes, for a square batch) with the clamp."""
    rows, cols = shape
    sx = make_input("random", shape, dtype, seed=4)
    cx = make_input("tied", shape, dtype, seed=5)
    public_code = variant == "public-code"
    sy, cy = (make_input("random", shape, dtype, seed=6), make_input("tied", shape, dtype, seed=7)) \
        if public_code else (None, None)
    for gc in (Out(shape, dtype), None):
        args = [_f64(dtype), sx, sy, cx, cy, Out(shape, dtype), gc, Out((rows,), torch.float64), rows, cols, 1e-3,
                public_code]
        got = run(emulator, "vsl_loss_ratio_sum_cuda", args)
        want = _cpu("vsl_loss_ratio_sum_cpu", args + [1, 1])
        for a, b in zip(got, want):
            assert_close_grad(a.double(), b.double())


def _sorted_sums_float64(kind, v, w, u, wu, columns, skip, tau, descending):
    """What the sorted-sums kernel computes, from its definition (csrc/vsl_constants.h: SortedSum), in
    float64 over the whole row (the kernel leaves out the terms beyond the saturation window, each
    below sigmoid(-30)): for every centre u[r, i], d_a = (v[r, a] - u[r, i]) k over the positions
    a != skip (skip None: the centre's own position i for the rank, none for the gradients), with
    the tie rule of csrc/sigmoid_math.h for equal values (infinities included)."""
    v, u = v.double(), u.double()
    rows, cols = u.shape
    k = (1.0 if descending else -1.0) / tau
    if skip is None:
        skip = torch.arange(cols).expand(rows, cols) if kind == "rank" else torch.full((rows, cols), -1)
    values, centres = v.unsqueeze(1), u.unsqueeze(2)  # [r, i, a]
    equal = values == centres
    zero, inf = torch.zeros((), dtype=torch.float64), torch.tensor(math.inf, dtype=torch.float64)
    rank_d = torch.where(equal, zero, values - centres) * k
    grad_d = torch.where(equal, torch.where(torch.isinf(centres), inf, zero), values - centres) * k
    keep = torch.arange(cols).view(1, 1, cols) != skip.unsqueeze(2)
    sig = torch.sigmoid(rank_d)
    dsig = torch.where(torch.isinf(grad_d), zero, torch.sigmoid(grad_d) * torch.sigmoid(-grad_d))
    if kind == "rank":
        sums = 1 + torch.where(keep, sig, zero).sum(-1)
    elif kind == "row_rank_grad":
        sums = k * torch.where(keep, dsig * (w.double().unsqueeze(1) - wu.double().unsqueeze(2)), zero).sum(-1)
    elif kind == "ranked_grad":
        sums = -k * wu.double() * torch.where(keep, dsig, zero).sum(-1)
    else:
        sums = k * torch.where(keep, dsig * w.double().unsqueeze(1), zero).sum(-1)
    out = torch.empty_like(sums)
    out.scatter_(1, columns, sums)
    return out


@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind", list(SUMS))
def test_sorted_sums_kernel_matches_its_definition(emulator, shape, dtype, kind):
    """One thread per element, against the float64 sums over whole rows."""
    rows, cols = shape
    gen = torch.Generator().manual_seed(SUMS[kind])
    v = torch.sort(make_input("random", shape, dtype, seed=8), dim=1).values
    w = torch.randn(shape, generator=gen, dtype=dtype)
    u = make_input("random", shape, dtype, seed=9)
    wu = torch.randn(shape, generator=gen, dtype=dtype)
    columns = torch.argsort(torch.rand(shape, generator=gen), dim=1)
    skip = torch.randint(-1, cols, shape, generator=gen)
    for descending in (True, False):
        for sk in (skip, None):
            args = [_f64(dtype), SUMS[kind], v, w, u, wu, columns, sk, Out(shape, dtype), rows, cols, 1e-3, descending]
            (got,) = run(emulator, "sigmoid_rank_sorted_sums_cuda", args, schedules=("forward", "reverse"))
            assert not (got == OUT_FILL).any(), "an element was not written"
            assert_close_grad(got.double(), _sorted_sums_float64(kind, v, w, u, wu, columns, sk, 1e-3, descending))


def _with_infinities(x: torch.Tensor, seed: int) -> torch.Tensor:
    """x with -inf masks and +inf overflows (runs of both) at positions that differ between rows."""
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed))
    x = x.clone()
    x[u < 0.2] = -math.inf
    x[u > 0.88] = math.inf
    return x


@pytest.mark.parametrize("shape", [(3, 2), (2, 257), (1, 1025), (1, 2300)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_kernels_with_infinities_match_their_oracles(emulator, shape, dtype):
    """Dense rank (row and compared forms), fused VSL and sorted-sums kernels on rows holding +-inf:
    no NaN, and the values of the CPU kernels (tests/test_infinities.py holds those to the float64
    brute force) or of the sorted sums' definition."""
    rows, cols = shape
    x = _with_infinities(make_input("random", shape, dtype, seed=1), 11)
    y = _with_infinities(make_input("tied", shape, dtype, seed=2), 12)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    for yy in (None, y):
        for descending, clamp in ((True, False), (False, True)):
            common = (rows, cols, 1e-3, descending, clamp)
            (out,) = run(emulator, "sigmoid_rank_forward_cuda", (_f64(dtype), x, yy, Out(shape, dtype), *common))
            (expected,) = _cpu("sigmoid_rank_forward_cpu", (_f64(dtype), x, yy, Out(shape, dtype), *common, 1, 1))
            assert torch.isfinite(out).all()
            torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=0)
            grads = (Out(shape, dtype), Out(shape, dtype) if yy is not None else None)
            got = run(emulator, "sigmoid_rank_backward_cuda", (_f64(dtype), x, yy, g, *grads, *common))
            want = _cpu("sigmoid_rank_backward_cpu", (_f64(dtype), x, yy, g, *grads, *common, 1, 1))
            for a, b, inp in zip(got, want, (x, yy)):
                assert torch.isfinite(a).all() and (a[torch.isinf(inp)] == 0).all()
                assert_close_grad(a.double(), b.double())
        args = [_f64(dtype), x, yy, y, yy, Out(shape, dtype), Out(shape, dtype), Out((rows,), torch.float64), rows,
                cols, 1e-3, False]
        got = run(emulator, "vsl_loss_ratio_sum_cuda", args)
        for a, b in zip(got, _cpu("vsl_loss_ratio_sum_cpu", args + [1, 1])):
            assert torch.isfinite(a).all()
            assert_close_grad(a.double(), b.double())
    v = torch.sort(x, dim=1).values
    columns = torch.argsort(torch.rand(shape, generator=torch.Generator().manual_seed(4)), dim=1)
    skip = torch.randint(-1, cols, shape, generator=torch.Generator().manual_seed(5))
    for kind, code in SUMS.items():
        for descending in (True, False):
            args = [_f64(dtype), code, v, g, y, g, columns, skip, Out(shape, dtype), rows, cols, 1e-3, descending]
            (got,) = run(emulator, "sigmoid_rank_sorted_sums_cuda", args, schedules=("forward", "reverse"))
            assert torch.isfinite(got).all()
            assert_close_grad(got.double(), _sorted_sums_float64(kind, v, g, y, g, columns, skip, 1e-3, descending))


@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_ratio_sum_from_ranks_kernel_matches_the_formula(emulator, shape, dtype):
    """Row sums of min(SR, CR) / max(SR, CR) and the ratio's derivatives (0 at ties), in float64."""
    rows, cols = shape
    gen = torch.Generator().manual_seed(10)
    sr = 1 + torch.rand(shape, generator=gen, dtype=dtype) * cols
    cr = torch.where(torch.rand(shape, generator=gen) < 0.2, sr, 1 + torch.rand(shape, generator=gen, dtype=dtype))
    a, b = sr.double(), cr.double()
    want_sums = (torch.minimum(a, b) / torch.maximum(a, b)).sum(1)
    want_ga = torch.where(a < b, 1 / b, torch.where(a > b, -b / a ** 2, torch.zeros_like(a)))
    want_gb = torch.where(a < b, -a / b ** 2, torch.where(a > b, 1 / a, torch.zeros_like(a)))
    for with_gc in (True, False):
        args = [_f64(dtype), sr, cr, Out(shape, dtype), Out(shape, dtype) if with_gc else None,
                Out((rows,), torch.float64), rows, cols]
        got = run(emulator, "vsl_loss_ratio_sum_from_ranks_cuda", args)
        want = [want_ga, want_gb, want_sums] if with_gc else [want_ga, want_sums]
        for x, w in zip(got, want):
            torch.testing.assert_close(x.double(), w, rtol=1e-6, atol=0)


def _relevance_and_weights(shape, seed):
    """A relevance with a row without relevant references (weight 0) and an all-relevant row, and
    Smooth-AP's row weights 1 / (|P_q| * rows with one)."""
    rows, cols = shape
    rel = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < 0.3
    rel[0, 0] = True
    if rows > 1:
        rel[1] = False
    if rows > 2:
        rel[2] = True
    positives = rel.sum(1)
    weights = torch.where(positives > 0, 1.0 / (positives.clamp(min=1) * (positives > 0).sum()).double(), 0.0)
    return rel.to(torch.uint8), weights


@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_fused_smooth_ap_kernels_match_cpu_kernel(emulator, shape, dtype):
    """Row sums and d loss / d sims of the two Smooth-AP kernels against the CPU kernel in float64."""
    rows, cols = shape
    x = make_input("tied", shape, dtype, seed=8, tau=0.01)
    rel, weights = _relevance_and_weights(shape, 9)
    for grad in (Out(shape, dtype), None):
        coef = [Out(shape, dtype), Out(shape, dtype)] if grad is not None else [None, None]
        got = run(emulator, "smooth_ap_loss_cuda",
                  [_f64(dtype), x, rel, weights, Out((rows,), torch.float64), *coef, grad, rows, cols, 0.01])
        want = _cpu("smooth_ap_loss_cpu",
                    [_f64(dtype), x, rel, weights, Out((rows,), torch.float64), grad, rows, cols, 0.01, 1])
        torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=1e-9)
        if grad is not None:
            assert_close_grad(got[-1].double(), want[-1])


def test_empty_batches_launch_nothing(emulator):
    """0 rows: no launch (a GPU rejects a grid of 0 blocks; so does the emulator)."""
    x = torch.zeros((0, 4))
    p = x.data_ptr()
    emulator.sigmoid_rank_forward_cuda(False, p, 0, p, 0, 4, 1e-3, True, False)
    emulator.sigmoid_rank_backward_cuda(False, p, 0, p, p, 0, 0, 4, 1e-3, True, False)
    emulator.vsl_loss_ratio_sum_cuda(False, *[p] * 7, 0, 4, 1e-3, False)
    emulator.sigmoid_rank_sorted_sums_cuda(False, 0, *[p] * 7, 0, 4, 1e-3, True)
    emulator.vsl_loss_ratio_sum_from_ranks_cuda(False, *[p] * 5, 0, 4)
    emulator.smooth_ap_loss_cuda(False, *[p] * 7, 0, 4, 1e-2)


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
    done = cuda_emu.memcheck(sanitized)
    assert done.returncode == 0 and "memcheck workload done" in done.stdout, done.stderr[-6000:]


def test_address_sanitizer_finds_a_read_past_the_end(sanitized):
    done = cuda_emu.memcheck(sanitized, faulty=True)
    assert done.returncode == 86, done.stderr[-6000:]
    assert "heap-buffer-overflow" in done.stderr and "read_past_end_kernel" in done.stderr


def test_rewrite_rejects_what_it_does_not_handle():
    assert "LaunchConfig(g, b)(x)" in cuda_emu.rewrite("k<<<g, b>>>(x);")
    with pytest.raises(ValueError, match="__shared__"):
        cuda_emu.rewrite("__shared__ float s;")
