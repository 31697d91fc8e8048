"""The CUDA implementation of the sorted algorithm (vsl_ext.kernels.cuda: torch.sort, then one thread
per element, csrc/sigmoid_rank_sorted_cuda.cu) and CUDA's choice between dense and sorted, on a GPU
and on the emulator. (Its values on every input regime: test_sigmoid_rank.py and test_vsl_loss.py
on the cuda and cuda-emulated devices; the CPU implementation is checked there too.)"""
import math

import pytest
import torch

import vsl_ext
from helpers import (
    CUDA_DEVICES,
    DTYPE_IDS,
    DTYPES,
    KINDS,
    assert_close_grad,
    check_loss,
    check_rank,
    device_cases,
    make_input,
    make_pair,
)
from oracle import brute_rank
from vsl_ext.kernels import cpu as cpu_kernels
from vsl_ext.kernels import cuda as cuda_kernels
from vsl_ext.ops.sigmoid_rank import sigmoid_rank_backward_op, sigmoid_rank_op
from vsl_ext.ops.vsl_loss import vsl_loss_ratio_sum_op

DENSE, SORTED, AUTO = (vsl_ext._native._C.ALGORITHMS[k] for k in ("dense", "sorted", "auto"))
CUDA_ONLY = ("cuda", "cuda-emulated")
# The shapes and sizes of test_sigmoid_rank.py / test_vsl_loss.py, which run every algorithm; here the
# sorted algorithm alone, so the emulator affords more of them (all but the largest).
SHAPES = [(1, 1), (2, 2), (3, 3), (17, 17), (128, 128), (300, 300), (1, 5), (7, 3), (5, 300), (300, 2)]
SIZES = [1, 2, 3, 17, 128, 300]


@pytest.mark.parametrize("device, shape", device_cases(SHAPES, emulated=[s for s in SHAPES if s != (300, 300)],
                                                       devices=CUDA_ONLY), indirect=["device"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sigmoid_rank_matches_reference(device, shape, kind, dtype):
    m = make_input(kind, shape, dtype)
    for descending in (True, False):
        check_rank(m, 1e-3, descending, ("sorted",), device)


@pytest.mark.parametrize("device, n", device_cases(SIZES, emulated=SIZES[:-1], devices=CUDA_ONLY),
                         indirect=["device"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", ["row", "public-code"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_vsl_loss_matches_reference(device, n, kind, variant, dtype):
    """public-code ranks S against S^T: the forward against compared rows and both backward sides."""
    s, c = make_pair(kind, n, dtype)
    check_loss(s, c, variant, ("sorted",), device)


def _dense_cpu(x, y, grad, descending):
    """Ranks and gradients of the CPU dense kernels (float64 in, float64 out)."""
    ranks, gx = torch.empty_like(x), torch.empty_like(x)
    gy = None if y is None else torch.empty_like(x)
    cpu_kernels.sigmoid_rank_forward(x, y, ranks, 1e-3, descending, False, DENSE)
    cpu_kernels.sigmoid_rank_backward(x, y, grad, gx, gy, 1e-3, descending, False, DENSE)
    return ranks, gx, gy


@pytest.mark.parametrize("device", CUDA_DEVICES, indirect=True)
@pytest.mark.parametrize("kind", ["random", "wide", "tied", "adversarial"])
def test_long_rows_meet_the_error_bound(device, kind):
    """float32 sorted sums at 4096 columns vs the float64 dense CPU kernel: ranks within
    n * sigmoid(-30) (dropped tails) plus float32 rounding, gradients to 1e-5 of their scale."""
    m = make_input(kind, (2, 4096), torch.float64, seed=3).float().double()  # float32 inputs, float64 sums
    grad = torch.randn(m.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    dense, dense_grad, _ = _dense_cpu(m, None, grad, True)
    x = m.float().to(device)
    ranks, gx = torch.empty_like(x), torch.empty_like(x)
    cuda_kernels.sigmoid_rank_forward(x, None, ranks, 1e-3, True, False, SORTED, use_sorted=True)
    bound = 4096 / (1 + math.exp(30)) + 2e-6 * dense.abs()
    assert ((ranks.double().cpu() - dense).abs() <= bound).all()
    cuda_kernels.sigmoid_rank_backward(x, None, grad.float().to(device), gx, None, 1e-3, True, False, SORTED)
    assert_close_grad(gx.double().cpu(), dense_grad)


@pytest.mark.parametrize("device", CUDA_DEVICES, indirect=True)
def test_rank_against_compared_rows_matches_the_dense_cpu_kernel(device):
    """Ranks of x against an unrelated y (not only S against S^T), descending and ascending,
    forward and both backward sides, with exact ties between centres and values."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 257, generator=g, dtype=torch.float64) * 5e-3
    y = torch.randn(6, 257, generator=g, dtype=torch.float64) * 5e-3
    y[:, ::7] = x[:, ::7]
    grad = torch.randn(6, 257, generator=g, dtype=torch.float64)
    xd, yd, gd = x.to(device), y.to(device), grad.to(device)
    for descending in (True, False):
        expected, ex, ey = _dense_cpu(x, y, grad, descending)
        actual, ax, ay = (torch.empty_like(xd) for _ in range(3))
        cuda_kernels.sigmoid_rank_forward(xd, yd, actual, 1e-3, descending, False, SORTED)
        torch.testing.assert_close(actual.cpu(), expected, rtol=1e-12, atol=1e-9)
        cuda_kernels.sigmoid_rank_backward(xd, yd, gd, ax, ay, 1e-3, descending, False, SORTED)
        assert_close_grad(ax.cpu(), ex, rtol=1e-9)
        assert_close_grad(ay.cpu(), ey, rtol=1e-9)


def _count_sorted_calls(monkeypatch):
    calls = []
    real = cuda_kernels._sorted_sums
    monkeypatch.setattr(cuda_kernels, "_sorted_sums", lambda kind, *a: (calls.append(kind), real(kind, *a))[1])
    return calls


@pytest.mark.parametrize("device", CUDA_DEVICES, indirect=True)
def test_nan_rows_take_the_dense_algorithm(device, monkeypatch):
    """A matrix with NaN takes the dense algorithm (NaN propagates within its row); infinities stay on
    the sorted one (tests/test_infinities.py checks their values)."""
    calls = _count_sorted_calls(monkeypatch)
    m = torch.tensor([[0.1, float("nan"), 0.3], [0.1, 0.2, float("inf")]], device=device)
    expected = vsl_ext.sigmoid_rank(m, algorithm="dense")
    torch.testing.assert_close(vsl_ext.sigmoid_rank(m, algorithm="sorted"), expected, equal_nan=True)
    assert not calls and torch.isnan(expected[0]).all()
    torch.testing.assert_close(vsl_ext.sigmoid_rank(m[1:], algorithm="sorted").cpu(), torch.tensor([[3.0, 2.0, 1.0]]))
    assert calls


def test_which_calls_take_the_sorted_algorithm(monkeypatch):
    """CUDA's choice (torch code only, so CPU tensors show it)."""
    monkeypatch.setattr(cuda_kernels, "SORTED_FROM_COLS", 64)
    spread = torch.rand(4, 64)                        # [0, 1]: about 6 % of pairs inside +-30 tau
    close = torch.randn(4, 64) * 5e-3                 # a few tau: every pair inside
    takes = cuda_kernels.takes_sorted
    assert takes(SORTED, close, None, 1e-3)           # explicit: whatever the data
    assert takes(SORTED, close, close, 1e-3)
    assert not takes(DENSE, spread, None, 1e-3)
    assert takes(AUTO, spread, None, 1e-3)
    assert not takes(AUTO, close, None, 1e-3)         # the window would hold every pair
    assert not takes(AUTO, spread[:, :63].contiguous(), None, 1e-3)  # too few columns
    bad = spread.clone()
    bad[1, 5] = float("nan")
    assert not takes(SORTED, spread, bad, 1e-3)
    masked = spread.clone()
    masked[:, 40:] = -float("inf")
    masked[2, 3] = float("inf")
    assert takes(SORTED, masked, None, 1e-3) and takes(AUTO, masked, masked, 1e-3)


def test_window_fraction_counts_the_pairs_in_the_window():
    x = torch.tensor([[0.0, 0.01, 0.02, 1.0]])
    # windows of +-0.03: the first three see each other (3 each), 1.0 sees itself
    assert cuda_kernels.window_fraction(x, None, 1e-3).item() == pytest.approx((3 + 3 + 3 + 1) / 16)
    assert cuda_kernels.window_fraction(x.double(), None, 1e-3).item() == pytest.approx((3 + 3 + 3 + 1) / 16)
    y = torch.tensor([[5.0, 5.0, 0.005, 5.0]])
    assert cuda_kernels.window_fraction(x, y, 1e-3).item() == pytest.approx(3 / 16)


@pytest.mark.parametrize("device", CUDA_DEVICES, indirect=True)
def test_auto_ranks_each_matrix_by_the_algorithm_that_suits_it(device, monkeypatch):
    """vsl_loss with a spread-out S (sorted) and a tightly packed C (dense)."""
    monkeypatch.setattr(cuda_kernels, "SORTED_FROM_COLS", 64)
    taken = []
    real = cuda_kernels._sorted_forward
    monkeypatch.setattr(cuda_kernels, "_sorted_forward", lambda x, *a: (taken.append(x.shape), real(x, *a))[1])
    s = make_input("wide", (80, 80), torch.float64)
    c = make_input("tied", (80, 80), torch.float64)
    c = (c + c.t()) / 2
    check_loss(s, c, "row", ("auto",), device)
    assert taken == [(80, 80)]                        # S only: C's window holds nearly every pair


@pytest.mark.parametrize("device", CUDA_DEVICES, indirect=True)
def test_auto_takes_the_sorted_algorithm_on_long_sparse_rows(device, monkeypatch):
    """Sorted for rows of at least SORTED_FROM_COLS columns with few pairs inside the window, dense
    otherwise (and for rows with NaN); infinities stay on the sorted algorithm."""
    calls = _count_sorted_calls(monkeypatch)
    monkeypatch.setattr(cuda_kernels, "SORTED_FROM_COLS", 64)
    wide = make_input("wide", (4, 80), torch.float32)  # few pairs within 30 tau
    narrow = make_input("random", (4, 80), torch.float32) * 0.1  # every pair within it
    for m, sorted_path in ((wide, True), (narrow, False), (wide[:, :60], False)):
        calls.clear()
        check_rank(m, 1e-3, True, ("auto",), device)
        assert bool(calls) == sorted_path
    m = wide.clone()
    m[1, 3] = math.nan
    calls.clear()
    r = vsl_ext.sigmoid_rank(m.to(device)).cpu()
    assert not calls and torch.isnan(r[1]).all() and torch.isfinite(r[[0, 2, 3]]).all()
    m = wide.clone()
    m[1, 3] = m[2, :40] = -math.inf
    m[0, 7] = math.inf
    calls.clear()
    r = vsl_ext.sigmoid_rank(m.to(device)).cpu()
    assert calls
    want = torch.tensor(brute_rank(m.double().tolist(), 1e-3), dtype=torch.float64)
    torch.testing.assert_close(r.double(), want, rtol=1e-5, atol=0)


@pytest.mark.parametrize("device", CUDA_DEVICES, indirect=True)
def test_opcheck_and_gradcheck_on_the_sorted_algorithm(device):
    s = make_input("random", (9, 9), torch.float64).to(device).requires_grad_()
    c = make_input("tied", (9, 9), torch.float64).to(device).requires_grad_()
    g = torch.randn(9, 9, dtype=torch.float64).to(device)
    tau = torch.tensor(1e-3, dtype=torch.float64)  # the ops' tau: a 0-d float64 CPU tensor
    torch.library.opcheck(sigmoid_rank_op, (s, torch.tensor(0.01, dtype=torch.float64), False, SORTED))
    torch.library.opcheck(sigmoid_rank_backward_op, (s.detach(), g, tau, True, True, SORTED))
    torch.library.opcheck(vsl_loss_ratio_sum_op, (s, c, tau, True, True, SORTED))
    x = (torch.randn(5, 7, dtype=torch.float64) * 2.0).to(device).requires_grad_()  # pairs both sides of 50 tau
    assert torch.autograd.gradcheck(lambda m: vsl_ext.sigmoid_rank(m, 0.05, algorithm="sorted"), (x,))
    y = (torch.randn(7, 7, dtype=torch.float64) * 0.05).to(device).requires_grad_()
    sem = torch.rand(7, 7, dtype=torch.float64).to(device).requires_grad_()
    for variant in ("row", "public-code"):
        assert torch.autograd.gradcheck(
            lambda a, b: vsl_ext.vsl_loss(a, b, 0.05, variant, algorithm="sorted"), (y, sem))  # noqa: B023
