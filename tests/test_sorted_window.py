"""The sorted-window algorithm of vsl_ext.sorted_window (CUDA's algorithm="sorted"), run on CPU.

The element code is the same C++ the CUDA kernel runs per thread (csrc/sorted_window.h); the
sorting and permutation plumbing is the same torch code. _native.SORTED_WINDOW_ON_CPU routes the
public ops through it, so every check of the dense path applies here unchanged.
"""
import math

import pytest
import torch
from hypothesis import given, settings

import vsl_ext
from vsl_ext import _native, sorted_window
from vsl_ext.loss import _vsl_ratio_sum
from vsl_ext.rank import _sigmoid_rank, _sigmoid_rank_backward

from conftest import assert_close_grad, make_input, requires_cuda
from test_sigmoid_rank import KINDS, SHAPES, tied_grids
from test_sigmoid_rank import _check as check_rank
from test_vsl_loss import SIZES, _pair
from test_vsl_loss import _check as check_loss


@pytest.fixture
def window_on_cpu(monkeypatch):
    monkeypatch.setattr(_native, "SORTED_WINDOW_ON_CPU", True)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_sigmoid_rank_matches_reference(window_on_cpu, shape, kind, dtype):
    m = make_input(kind, shape, dtype)
    for descending in (True, False):
        check_rank(m, 1e-3, descending, ("sorted",))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", ["row", "public-code"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_vsl_loss_matches_reference(window_on_cpu, n, kind, variant, dtype):
    """public-code ranks S against S^T: the cross-rank forward and both cross backward kinds."""
    s, c = _pair(kind, n, dtype)
    check_loss(s, c, variant, ("sorted",))


@settings(max_examples=40, deadline=None)
@given(case=tied_grids(max_rows=4))
def test_hypothesis_tied_grids(case):
    """Ties and values on the window's edges (+-30 tau): window bounds and the skipped centre."""
    m, descending = case
    _native.SORTED_WINDOW_ON_CPU = True  # not the fixture: hypothesis reuses function-scoped fixtures
    try:
        check_rank(m, 1e-3, descending, ("sorted",))
    finally:
        _native.SORTED_WINDOW_ON_CPU = False


@pytest.mark.parametrize("kind", ["random", "wide", "tied", "adversarial"])
def test_long_rows_meet_the_error_bound(kind):
    """float32 window sums at 4096 columns vs the float64 dense kernel: ranks within
    n * sigmoid(-30) (dropped tails) plus float32 rounding, gradients to 1e-5 of their scale."""
    m = make_input(kind, (2, 4096), torch.float64, seed=3).float().double()  # float32 inputs, float64 sums
    grad = torch.randn(m.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    dense = torch.empty_like(m)
    _native.rank_forward(m, None, dense, 1e-3, True, 0.0, _native.ALGORITHMS["dense"])
    dense_grad = torch.empty_like(m)
    _native.rank_backward(m, None, grad, dense_grad, None, 1e-3, True, 0.0, _native.ALGORITHMS["dense"])
    x = m.float()
    ranks = torch.empty_like(x)
    sorted_window.rank_forward(x, None, ranks, 1e-3, True)
    bound = 4096 / (1 + math.exp(30)) + 2e-6 * dense.abs()
    assert ((ranks.double() - dense).abs() <= bound).all()
    gx = torch.empty_like(x)
    sorted_window.rank_backward(x, None, grad.float(), gx, None, 1e-3, True)
    assert_close_grad(gx.double(), dense_grad)


def test_cross_rank_matches_the_dense_kernel():
    """Cross ranks of x against an unrelated y (not only S against S^T), both descending and
    ascending, forward and both backward sides."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 257, generator=g, dtype=torch.float64) * 5e-3
    y = torch.randn(6, 257, generator=g, dtype=torch.float64) * 5e-3
    y[:, ::7] = x[:, ::7]  # exact ties between a centre and values
    grad = torch.randn(6, 257, generator=g, dtype=torch.float64)
    for descending in (True, False):
        expected, actual = torch.empty_like(x), torch.empty_like(x)
        _native.rank_forward(x, y, expected, 1e-3, descending, 0.0, _native.ALGORITHMS["dense"])
        sorted_window.rank_forward(x, y, actual, 1e-3, descending)
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-9)
        ex, ey, ax, ay = (torch.empty_like(x) for _ in range(4))
        _native.rank_backward(x, y, grad, ex, ey, 1e-3, descending, 0.0, _native.ALGORITHMS["dense"])
        sorted_window.rank_backward(x, y, grad, ax, ay, 1e-3, descending)
        assert_close_grad(ax, ex, rtol=1e-9)
        assert_close_grad(ay, ey, rtol=1e-9)


def test_nan_rows_take_the_dense_path(window_on_cpu, monkeypatch):
    """A matrix with NaN takes the dense path (NaN propagates within its row); infinities stay on
    the window path (tests/test_infinities.py checks their values)."""
    calls = []
    real = _native.window_sums
    monkeypatch.setattr(_native, "window_sums", lambda *a: (calls.append(a[0]), real(*a))[1])
    m = torch.tensor([[0.1, float("nan"), 0.3], [0.1, 0.2, float("inf")]])
    expected = vsl_ext.sigmoid_rank(m, algorithm="dense")
    torch.testing.assert_close(vsl_ext.sigmoid_rank(m, algorithm="sorted"), expected, equal_nan=True)
    assert not calls and torch.isnan(expected[0]).all()
    torch.testing.assert_close(vsl_ext.sigmoid_rank(m[1:], algorithm="sorted"), torch.tensor([[3.0, 2.0, 1.0]]))
    assert calls


def test_which_calls_take_the_window_path(window_on_cpu, monkeypatch):
    monkeypatch.setattr(_native, "CUDA_SORTED_FROM_COLS", 64)
    spread = torch.rand(4, 64)                        # [0, 1]: about 6 % of pairs inside +-30 tau
    close = torch.randn(4, 64) * 5e-3                 # a few tau: every pair inside
    auto, dense, srt = (_native.ALGORITHMS[k] for k in ("auto", "dense", "sorted"))
    takes = _native._takes_sorted_window
    assert takes(srt, 64, 0.0, 1e-3, close, None)     # explicit: whatever the data
    assert takes(srt, 64, _native.PUBLIC_CODE_CLAMP, 1e-3, close, close)  # the clamp lies beyond the window
    assert not takes(srt, 64, 10.0, 1e-3, close, None)  # a clamp inside the window
    assert not takes(dense, 64, 0.0, 1e-3, spread, None)
    assert takes(auto, 64, 0.0, 1e-3, spread, None)
    assert not takes(auto, 64, 0.0, 1e-3, close, None)  # the window would hold every pair
    assert not takes(auto, 63, 0.0, 1e-3, spread[:, :63].contiguous(), None)  # too few columns
    bad = spread.clone()
    bad[1, 5] = float("nan")
    assert not takes(srt, 64, 0.0, 1e-3, spread, bad)
    masked = spread.clone()
    masked[:, 40:] = -float("inf")
    masked[2, 3] = float("inf")
    assert takes(srt, 64, 0.0, 1e-3, masked, None) and takes(auto, 64, 0.0, 1e-3, masked, masked)


def test_window_fraction_counts_the_pairs_in_the_window():
    x = torch.tensor([[0.0, 0.01, 0.02, 1.0]])
    # windows of +-0.03: the first three see each other (3 each), 1.0 sees itself
    assert sorted_window.window_fraction(x, None, 1e-3).item() == pytest.approx((3 + 3 + 3 + 1) / 16)
    assert sorted_window.window_fraction(x.double(), None, 1e-3).item() == pytest.approx((3 + 3 + 3 + 1) / 16)
    y = torch.tensor([[5.0, 5.0, 0.005, 5.0]])
    assert sorted_window.window_fraction(x, y, 1e-3).item() == pytest.approx(3 / 16)


def test_auto_ranks_each_matrix_by_the_path_that_suits_it(window_on_cpu, monkeypatch):
    """vsl_loss with a spread-out S (window path) and a tightly packed C (dense path)."""
    monkeypatch.setattr(_native, "CUDA_SORTED_FROM_COLS", 64)
    taken = []
    real = sorted_window.rank_forward
    monkeypatch.setattr(sorted_window, "rank_forward", lambda x, *a: (taken.append(x.shape), real(x, *a))[1])
    s = make_input("wide", (80, 80), torch.float64)
    c = make_input("tied", (80, 80), torch.float64)
    c = (c + c.t()) / 2
    check_loss(s, c, "row", ("auto",))
    assert taken == [(80, 80)]                        # S only: C's window holds nearly every pair


@requires_cuda
@pytest.mark.parametrize("kind", ["random", "wide", "tied", "adversarial"])
def test_cuda_kernel_matches_its_host_build(kind):
    """The CUDA threads and the CPU loop run the same element code: equal up to exp's last bits."""
    x = make_input(kind, (3, 2500), torch.float32, seed=7)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(8))
    for descending in (True, False):
        outs = []
        for device in ("cpu", "cuda"):
            xd, gd = x.to(device), g.to(device)
            r, gx, gy, cross = (torch.empty_like(xd) for _ in range(4))
            sorted_window.rank_forward(xd, None, r, 1e-3, descending)
            sorted_window.rank_forward(xd, xd.flip(1).contiguous(), cross, 1e-3, descending)
            sorted_window.rank_backward(xd, xd.flip(1).contiguous(), gd, gx, gy, 1e-3, descending)
            outs.append([t.cpu() for t in (r, cross, gx, gy)])
        for a, b in zip(*outs):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * a.abs().max().item())


def test_opcheck_and_gradcheck(window_on_cpu):
    s = make_input("random", (9, 9), torch.float64).requires_grad_()
    c = make_input("tied", (9, 9), torch.float64).requires_grad_()
    g = torch.randn(9, 9, dtype=torch.float64)
    sorted_code = _native.ALGORITHMS["sorted"]
    torch.library.opcheck(_sigmoid_rank, (s, 0.01, False, sorted_code))
    torch.library.opcheck(_sigmoid_rank_backward, (s.detach(), g, 1e-3, True, True, 50.0, sorted_code))
    torch.library.opcheck(_vsl_ratio_sum, (s, c, 1e-3, True, True, sorted_code))
    x = (torch.randn(5, 7, dtype=torch.float64) * 2.0).requires_grad_()  # pairs on both sides of 50 tau
    assert torch.autograd.gradcheck(lambda m: vsl_ext.sigmoid_rank(m, 0.05, algorithm="sorted"), (x,))
    y = (torch.randn(7, 7, dtype=torch.float64) * 0.05).requires_grad_()
    sem = torch.rand(7, 7, dtype=torch.float64, requires_grad=True)
    for variant in ("row", "public-code"):
        assert torch.autograd.gradcheck(
            lambda a, b: vsl_ext.vsl_loss(a, b, 0.05, variant, algorithm="sorted"), (y, sem))
