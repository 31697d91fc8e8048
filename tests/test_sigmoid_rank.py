"""sigmoid_rank vs the pure-PyTorch reference: values and gradients on every input regime."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vsl_ext
from vsl_ext import reference

from conftest import assert_close_grad, make_input, requires_cuda

KINDS = ["random", "wide", "tied", "constant", "adversarial"]
SHAPES = [(1, 1), (2, 2), (3, 3), (17, 17), (128, 128), (300, 300), (1, 5), (7, 3), (5, 300), (300, 2)]


def _check(m: torch.Tensor, tau: float, descending: bool, algorithms=("auto",), device: str = "cpu") -> None:
    """Ranks and gradients of every algorithm vs the float64 reference (computed once)."""
    x64 = m.double().requires_grad_()
    expected = reference.sigmoid_rank(x64, tau, descending)
    grad = torch.randn(m.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (ge,) = torch.autograd.grad(expected, x64, grad)
    for algorithm in algorithms:
        x = m.to(device).requires_grad_()
        r = vsl_ext.sigmoid_rank(x, tau, descending, algorithm=algorithm)
        torch.testing.assert_close(r.double().cpu(), expected.detach(), rtol=1e-5, atol=0)
        (gx,) = torch.autograd.grad(r, x, grad.to(r.dtype).to(device))
        assert gx.dtype == m.dtype
        assert_close_grad(gx.cpu(), ge)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_matches_reference(shape, kind, dtype):
    m = make_input(kind, shape, dtype)
    for descending in (True, False):
        _check(m, 1e-3, descending, ("dense", "sorted"))


@pytest.mark.parametrize("algorithm", ["auto", "dense", "sorted"])
def test_ranks_are_hard_ranks_for_well_separated_values(algorithm):
    m = torch.tensor([[0.3, 0.9, 0.1, 0.5]])
    torch.testing.assert_close(vsl_ext.sigmoid_rank(m, algorithm=algorithm), torch.tensor([[3.0, 1.0, 4.0, 2.0]]))
    asc = vsl_ext.sigmoid_rank(m, descending=False, algorithm=algorithm)
    torch.testing.assert_close(asc, torch.tensor([[2.0, 4.0, 1.0, 3.0]]))


def test_ties_share_half_ranks():
    m = torch.tensor([[0.5, 0.5, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(vsl_ext.sigmoid_rank(m), torch.full((1, 3), 2.0, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype):
    m = make_input("random", (9, 9), torch.float32)
    x = m.to(dtype).requires_grad_()
    r = vsl_ext.sigmoid_rank(x)
    assert r.dtype == torch.float32
    expected = reference.sigmoid_rank(x.detach().double())
    torch.testing.assert_close(r.double(), expected, rtol=1e-5, atol=0)
    r.sum().backward()
    assert x.grad.dtype == dtype


def test_non_contiguous_input():
    m = make_input("random", (40, 30), torch.float64)
    t = m.t()  # (30, 40), not contiguous
    torch.testing.assert_close(vsl_ext.sigmoid_rank(t), reference.sigmoid_rank(t.contiguous()), rtol=1e-10, atol=0)


def test_large_temperature_gradcheck():
    for descending in (True, False):
        for algorithm in ("dense", "sorted"):
            m = make_input("random", (6, 7), torch.float64, seed=3) * 10
            assert torch.autograd.gradcheck(
                lambda x: vsl_ext.sigmoid_rank(x, 0.05, descending, algorithm=algorithm), (m.requires_grad_(),))


def test_nan_propagates_within_its_row():
    m = make_input("random", (4, 6), torch.float32)
    m[1, 2] = float("nan")
    r = vsl_ext.sigmoid_rank(m)
    assert torch.isnan(r[1]).all()
    assert torch.isfinite(r[[0, 2, 3]]).all()


def tied_grids(max_rows: int):
    """Hypothesis inputs: (m, descending) with m a (<= max_rows, <= 70) float64 matrix drawn from a
    few values, ties and pairs on the +-30 tau window's edges included."""
    @st.composite
    def draw(draw_):
        rows, cols = draw_(st.integers(1, max_rows)), draw_(st.integers(1, 70))
        values = draw_(st.lists(st.sampled_from([0.0, 1e-3, -2e-3, 0.03, 0.0301, -0.0299, 5e-4, 1.0]),
                                min_size=1, max_size=8))
        g = torch.Generator().manual_seed(draw_(st.integers(0, 2**16)))
        pool = torch.tensor(values, dtype=torch.float64)
        return pool[torch.randint(0, len(values), (rows, cols), generator=g)], draw_(st.booleans())
    return draw()


@settings(max_examples=60, deadline=None)
@given(case=tied_grids(max_rows=6))
def test_hypothesis_tied_grids(case):
    m, descending = case
    _check(m, 1e-3, descending, ("dense", "sorted"))


@requires_cuda
@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (17, 17), (300, 300), (5, 1500), (2, 3000)], ids=str)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_cuda_matches_reference(shape, kind, dtype):
    m = make_input(kind, shape, dtype)
    for descending in (True, False):
        _check(m, 1e-3, descending, ("dense", "sorted", "auto"), device="cuda")



@pytest.mark.parametrize("kind", ["random", "wide", "tied", "adversarial"])
def test_sorted_window_on_long_rows_meets_its_error_bound(kind):
    """float32 sorted-window ranks and gradients at 4096 columns vs the float64 dense kernel.

    The bound (README): pairs beyond 30 tau are exactly 0/1 (each dropped term < sigmoid(-30) =
    9.4e-14), and the separated exponentials carry a relative error of at most (30 + 16) * 2^-23
    in exp(-d), which bounds each rank's relative error by about 5e-6.
    """
    m = make_input(kind, (3, 4096), torch.float32, seed=9)
    grad = torch.randn(m.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for descending in (True, False):
        x64 = m.double().requires_grad_()
        r64 = vsl_ext.sigmoid_rank(x64, 1e-3, descending, algorithm="dense")
        (g64,) = torch.autograd.grad(r64, x64, grad)
        x = m.clone().requires_grad_()
        r = vsl_ext.sigmoid_rank(x, 1e-3, descending, algorithm="sorted")
        torch.testing.assert_close(r.double(), r64.detach(), rtol=5e-6, atol=0)
        (g,) = torch.autograd.grad(r, x, grad.float())
        assert_close_grad(g.double(), g64)
