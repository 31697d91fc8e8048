"""sigmoid_rank(M, among=mask): ranks within a subset of each row, against the float64 brute force
(tests/oracle.py) and the reference, on every device and algorithm: values and gradients, ties,
infinities, empty and full subsets, gradcheck, opcheck, vmap, and the argument errors."""
import math

import pytest
import torch

import oracle
import vsl_ext
from helpers import DEVICES, KINDS, assert_close_grad, device_cases, make_input
from vsl_ext import reference
from vsl_ext.ops import sigmoid_rank_among as among_ops

ALGORITHMS = ("dense", "sorted")


def _mask(shape, seed, p=0.4):
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(shape, generator=g) < p
    m[0] = False  # a row with an empty subset
    if shape[0] > 1:
        m[1] = True  # a row whose subset is the whole row
    return m


def _check(m, among, tau, descending, device, algorithms=ALGORITHMS):
    rows = m.double().tolist()
    mask = among.tolist()
    expected = torch.tensor(oracle.brute_rank_among(rows, mask, tau, descending), dtype=torch.float64)
    g = torch.randn(m.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected_grad = torch.tensor(oracle.brute_rank_among_grad(rows, mask, g.tolist(), tau, descending),
                                 dtype=torch.float64)
    for algorithm in algorithms:
        x = m.to(device).requires_grad_()
        r = vsl_ext.sigmoid_rank(x, tau, descending, algorithm=algorithm, among=among.to(device))
        torch.testing.assert_close(r.double().cpu(), expected, rtol=1e-5, atol=1e-6)
        (gx,) = torch.autograd.grad(r, x, g.to(r.dtype).to(device))
        assert gx.dtype == m.dtype
        assert_close_grad(gx.cpu(), expected_grad)


@pytest.mark.parametrize("device, shape", device_cases([(1, 1), (3, 7), (5, 80)], emulated=[(1, 1), (3, 7), (4, 70)]),
                         indirect=["device"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("descending", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_matches_brute_force(device, shape, kind, descending, dtype):
    tau = 1e-3
    m = make_input(kind, shape, dtype, seed=shape[1], tau=tau)
    _check(m, _mask(shape, shape[1]), tau, descending, device)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("descending", [True, False])
def test_infinities_follow_the_rule(device, descending):
    tau = 1e-2
    m = make_input("random", (6, 40), torch.float64, seed=9, tau=tau)
    m[2, :5] = -math.inf
    m[3, 3:9] = math.inf
    m[4, ::3] = -math.inf
    m[4, 1::7] = math.inf
    m[5, :] = -math.inf
    among = _mask((6, 40), 4, 0.5)
    among[2, :3] = True
    among[3, 3:6] = False
    _check(m, among, tau, descending, device)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_full_subset_is_the_row_rank_and_empty_subset_ranks_one(device, algorithm):
    m = make_input("tied", (4, 70), torch.float32, seed=2).to(device)
    full = vsl_ext.sigmoid_rank(m, 2e-3, algorithm=algorithm, among=torch.ones(m.shape, dtype=torch.bool))
    torch.testing.assert_close(full, vsl_ext.sigmoid_rank(m, 2e-3, algorithm=algorithm))
    empty = vsl_ext.sigmoid_rank(m, 2e-3, algorithm=algorithm, among=torch.zeros(m.shape, dtype=torch.bool))
    assert torch.equal(empty, torch.ones_like(m))


def test_matches_the_reference():
    m = make_input("random", (9, 33), torch.float64, seed=1, tau=1e-2).requires_grad_()
    among = _mask((9, 33), 1)
    for descending in (True, False):
        r = vsl_ext.sigmoid_rank(m, 1e-2, descending, among=among)
        e = reference.sigmoid_rank_among(m, among, 1e-2, descending)
        torch.testing.assert_close(r, e)
        g = torch.randn(m.shape, dtype=torch.float64)
        assert_close_grad(torch.autograd.grad(r, m, g)[0], torch.autograd.grad(e, m, g)[0])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_gradcheck_float64(algorithm):
    m = make_input("random", (3, 9), torch.float64, seed=4, tau=0.5).requires_grad_()
    among = _mask((3, 9), 5)
    assert torch.autograd.gradcheck(lambda x: vsl_ext.sigmoid_rank(x, 0.5, algorithm=algorithm, among=among), (m,))


def test_a_masked_out_nan_does_not_reach_other_ranks():
    m = make_input("random", (2, 8), torch.float64, seed=4, tau=1e-2)
    m[0, 3] = math.nan
    among = torch.ones(2, 8, dtype=torch.bool)
    among[0, 3] = False
    r = vsl_ext.sigmoid_rank(m, 1e-2, among=among)
    assert torch.isnan(r[0, 3]) and torch.isfinite(r[0, [0, 1, 2, 4, 5, 6, 7]]).all() and torch.isfinite(r[1]).all()


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_opcheck(device):
    m = (torch.randn(2, 3, 9, generator=torch.Generator().manual_seed(4)) * 5e-3).to(device).requires_grad_()
    among = (torch.rand(2, 3, 9, generator=torch.Generator().manual_seed(0)) < 0.5).to(device)
    tau = torch.tensor(1e-3, dtype=torch.float64)
    torch.library.opcheck(among_ops.sigmoid_rank_among_op, (m, among, tau, True, 0))
    torch.library.opcheck(among_ops.sigmoid_rank_among_backward_op,
                          (m.detach(), among, torch.randn(2, 3, 9, device=device), tau, False, 2))


def test_vmap_and_batches_match_a_loop():
    m = torch.randn(4, 3, 11, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 5e-2
    among = torch.rand(4, 3, 11, generator=torch.Generator().manual_seed(1)) < 0.5
    f = lambda x, a: vsl_ext.sigmoid_rank(x, 1e-2, among=a)  # noqa: E731
    loop = torch.stack([f(x, a) for x, a in zip(m, among)])
    torch.testing.assert_close(torch.func.vmap(f)(m, among), loop)
    grads = torch.func.vmap(torch.func.grad(lambda x, a: f(x, a).pow(2).sum()))(m, among)
    for x, a, gv in zip(m, among, grads):
        x = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(f(x, a).pow(2).sum(), x)
        torch.testing.assert_close(gv, g)


def test_torch_compile_fullgraph():
    m = make_input("random", (3, 12), torch.float32, seed=7, tau=1e-2)
    among = torch.rand(3, 12, generator=torch.Generator().manual_seed(1)) < 0.5
    f = lambda x, a: vsl_ext.sigmoid_rank(x, 1e-2, among=a)  # noqa: E731
    torch.testing.assert_close(torch.compile(f, fullgraph=True, backend="eager")(m, among), f(m, among))


@pytest.mark.parametrize("among, error, message", [
    (torch.ones(3, 4), TypeError, "among must be a bool tensor"),
    (torch.ones(3, 5, dtype=torch.bool), ValueError, "among must have the shape of M"),
    ("mask", TypeError, "among must be a bool torch.Tensor"),
])
def test_bad_among_names_the_argument(among, error, message):
    with pytest.raises(error, match=message):
        vsl_ext.sigmoid_rank(torch.zeros(3, 4), among=among)


@pytest.mark.parametrize("among, error, message", [
    (torch.ones(3, 4), TypeError, "vsl_ext::sigmoid_rank_among: among must be a bool tensor"),
    (torch.ones(3, 5, dtype=torch.bool), ValueError, "among must have the shape of m"),
    (torch.ones(4, dtype=torch.bool), ValueError, "among must have the shape of m"),
])
def test_the_op_checks_among(among, error, message):
    tau = torch.tensor(1e-3, dtype=torch.float64)
    with pytest.raises(error, match=message):
        torch.ops.vsl_ext.sigmoid_rank_among(torch.zeros(3, 4), among, tau, True, 0)
    with pytest.raises(error, match=message.replace("among:", "among_backward:")):
        torch.ops.vsl_ext.sigmoid_rank_among_backward(torch.zeros(3, 4), among, torch.zeros(3, 4), tau, True, 0)
