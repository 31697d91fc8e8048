"""sigmoid_rank vs the pure-PyTorch reference: values and gradients on every input regime, on every
device (cpu, cuda, cuda-emulated; tests/helpers.py)."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings

import vsl_ext
from helpers import (
    DEVICES,
    DTYPE_IDS,
    DTYPES,
    KINDS,
    assert_close_grad,
    check_rank,
    device_cases,
    make_input,
    tied_grids,
)
from vsl_ext import reference

SHAPES = [(1, 1), (2, 2), (3, 3), (17, 17), (128, 128), (300, 300), (1, 5), (7, 3), (5, 300), (300, 2)]
# The emulator runs every CUDA thread on the CPU: fewer and smaller matrices, rows around its tile sizes.
EMULATED_SHAPES = [(1, 1), (3, 3), (17, 17), (7, 3), (5, 300), (2, 1100)]
CUDA_SHAPES = [(1, 1), (3, 3), (17, 17), (300, 300), (5, 1500), (2, 3000)]
# CPU: both algorithms; CUDA: both and its per-matrix automatic choice.
ALGORITHMS = {"cpu": ("dense", "sorted"), "cuda": ("dense", "sorted", "auto"),
              "cuda-emulated": ("dense", "sorted", "auto")}


def _algorithms(request):
    return ALGORITHMS[request.node.callspec.params["device"]]


@pytest.mark.parametrize("device, shape", device_cases(SHAPES, emulated=EMULATED_SHAPES, cuda=CUDA_SHAPES),
                         indirect=["device"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_matches_reference(request, device, shape, kind, dtype):
    m = make_input(kind, shape, dtype)
    for descending in (True, False):
        check_rank(m, 1e-3, descending, _algorithms(request), device)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("algorithm", ["auto", "dense", "sorted"])
def test_ranks_are_hard_ranks_for_well_separated_values(device, algorithm):
    m = torch.tensor([[0.3, 0.9, 0.1, 0.5]], device=device)
    want = torch.tensor([[3.0, 1.0, 4.0, 2.0]], device=device)
    torch.testing.assert_close(vsl_ext.sigmoid_rank(m, algorithm=algorithm), want)
    asc = vsl_ext.sigmoid_rank(m, descending=False, algorithm=algorithm)
    torch.testing.assert_close(asc, torch.tensor([[2.0, 4.0, 1.0, 3.0]], device=device))


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_ties_share_half_ranks(device):
    m = torch.tensor([[0.5, 0.5, 0.5]], dtype=torch.float64, device=device)
    for algorithm in ("dense", "sorted"):
        torch.testing.assert_close(vsl_ext.sigmoid_rank(m, algorithm=algorithm),
                                   torch.full((1, 3), 2.0, dtype=torch.float64, device=device))


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(device, dtype):
    m = make_input("random", (9, 9), torch.float32)
    x = m.to(dtype).to(device).requires_grad_()
    r = vsl_ext.sigmoid_rank(x)
    assert r.dtype == torch.float32
    expected = reference.sigmoid_rank(x.detach().cpu().double())
    torch.testing.assert_close(r.double().cpu(), expected, rtol=1e-5, atol=0)
    r.sum().backward()
    assert x.grad.dtype == dtype


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_non_contiguous_input(device):
    m = make_input("random", (40, 30), torch.float64)
    t = m.to(device).t()  # (30, 40), not contiguous
    expected = reference.sigmoid_rank(m.t().contiguous())
    for algorithm in ("dense", "sorted"):
        got = vsl_ext.sigmoid_rank(t, algorithm=algorithm)
        torch.testing.assert_close(got.cpu(), expected, rtol=1e-10, atol=0)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_large_temperature_gradcheck(device):
    for descending in (True, False):
        for algorithm in ("dense", "sorted"):
            m = make_input("random", (6, 7), torch.float64, seed=3).to(device) * 10
            assert torch.autograd.gradcheck(
                lambda x: vsl_ext.sigmoid_rank(x, 0.05, descending, algorithm=algorithm),  # noqa: B023
                (m.requires_grad_(),))


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_nan_propagates_within_its_row(device):
    m = make_input("random", (4, 6), torch.float32)
    m[1, 2] = float("nan")
    for algorithm in ("dense", "sorted", "auto"):
        r = vsl_ext.sigmoid_rank(m.to(device), algorithm=algorithm).cpu()
        assert torch.isnan(r[1]).all()
        assert torch.isfinite(r[[0, 2, 3]]).all()


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=tied_grids(max_rows=5))
def test_hypothesis_tied_grids(device, case):
    """Ties and values on the saturation window's edges (+-30 tau): window bounds and the skipped centre."""
    m, descending = case
    check_rank(m, 1e-3, descending, ("dense", "sorted"), device)


@pytest.mark.parametrize("device, kind", device_cases(["random", "wide", "tied", "adversarial"],
                                                      emulated=["random", "adversarial"]), indirect=["device"])
def test_sorted_on_long_rows_meets_its_error_bound(device, kind):
    """float32 sorted ranks and gradients at 4096 columns vs the float64 dense algorithm.

    The bound (docs/kernels.md): pairs beyond 30 tau are exactly 0/1 (each dropped term < sigmoid(-30)
    = 9.4e-14), and on CPU the separated exponentials carry a relative error of at most
    (30 + 16) * 2^-23 in exp(-d), which bounds each rank's relative error by about 5e-6.
    """
    m = make_input(kind, (3, 4096), torch.float32, seed=9).to(device)
    grad = torch.randn(m.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(device)
    for descending in (True, False):
        x64 = m.double().requires_grad_()
        r64 = vsl_ext.sigmoid_rank(x64, 1e-3, descending, algorithm="dense")
        (g64,) = torch.autograd.grad(r64, x64, grad)
        x = m.clone().requires_grad_()
        r = vsl_ext.sigmoid_rank(x, 1e-3, descending, algorithm="sorted")
        torch.testing.assert_close(r.double(), r64.detach(), rtol=5e-6, atol=0)
        (g,) = torch.autograd.grad(r, x, grad.float())
        assert_close_grad(g.double().cpu(), g64.cpu())
