"""Infinite entries (-inf masks, float16 overflow to +inf) on every device and algorithm, against the
float64 brute force of tests/oracle.py (which spells the rule out pair by pair and never computes
inf - inf).

The rule (README, csrc/sigmoid_math.h): in ``R[i, j] = 1 + sum_{k != j} sigmoid((M[i, k] - M[i, j]) / tau)``
equal infinities tie (1/2, as equal finite values do), an infinity against any other value is
saturated (0 or 1), and no gradient flows through a pair that holds an infinity (0 at infinite
entries); NaN propagates.
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vsl_ext
from helpers import DEVICES, DTYPE_IDS, DTYPES, assert_close_grad, device_cases
from oracle import brute_rank, brute_rank_grad, brute_vsl
from vsl_ext import reference
from vsl_ext.criterion import VSLCriterion, triplet_loss
from vsl_ext.metrics import ranks, recall_at_k

INF = math.inf
NAN = math.nan
# Every algorithm on every device: on CPU dense, sorted and auto (sorted from 64 columns); on CUDA
# (and the emulator) dense, sorted and CUDA's automatic choice, which keeps rows with infinities
# on the sorted algorithm.
ALGORITHMS = ("dense", "sorted", "auto")


def test_oracle_on_the_issue_rows():
    """The numbers of the issue, straight from the formula."""
    r = brute_rank([[0.1, -INF, 0.3]], 0.01)[0]
    assert r == pytest.approx([1.99999999794, 3.0, 1.00000000206], rel=0, abs=5e-12)
    assert brute_rank([[0.1, -INF, 0.3, -INF]], 0.01)[0] == pytest.approx([2.0, 3.5, 1.0, 3.5], abs=1e-8)


# ----------------------------------------------------------------------------------- helpers
def _tensor(rows, dtype):
    return torch.tensor(rows, dtype=torch.float64).to(dtype)


def _grad_weights(shape, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def check_rank_paths(m: torch.Tensor, tau: float, descending: bool, device="cpu", algorithms=ALGORITHMS):
    """Ranks and gradients of every algorithm against the oracle on m's own (dtype-rounded) values;
    gradients exactly 0 at infinite entries."""
    rows = m.double().tolist()
    expected = torch.tensor(brute_rank(rows, tau, descending), dtype=torch.float64)
    G = _grad_weights(m.shape)
    expected_grad = torch.tensor(brute_rank_grad(rows, G.tolist(), tau, descending), dtype=torch.float64)
    infinite = torch.isinf(m)
    for algorithm in algorithms:
        x = m.to(device).requires_grad_()
        r = vsl_ext.sigmoid_rank(x, tau, descending, algorithm=algorithm)
        (gx,) = torch.autograd.grad(r, x, G.to(r.dtype).to(device))
        where = f"{algorithm} on {device}, {m.dtype}, descending={descending}"
        torch.testing.assert_close(r.detach().double().cpu(), expected, rtol=1e-5, atol=0, msg=where)
        gx = gx.cpu()
        assert torch.isfinite(gx).all(), where
        assert (gx[infinite] == 0).all(), f"gradient at an infinite entry: {where}"
        assert_close_grad(gx.double(), expected_grad)


ROWS = {
    "issue": [[0.1, -INF, 0.3]],
    "two masks": [[0.1, -INF, 0.3, -INF]],
    "mixed": [[INF, 0.2, -INF, INF, 0.2, -INF, 0.2005, 0.5, -INF, 0.1995],
              [0.3, 0.3, 0.3, -INF, INF, 0.3, 0.301, INF, 0.299, -INF]],
    "all infinite": [[INF, INF, INF], [-INF, -INF, -INF], [INF, -INF, INF]],
    "one column": [[INF], [-INF], [0.3]],
    "two columns": [[INF, INF], [-INF, INF], [-INF, 0.0], [0.0, 0.0]],
}


# ----------------------------------------------------------------------------------- ranks
@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_issue_rows(device, algorithm, dtype):
    r = vsl_ext.sigmoid_rank(_tensor([[0.1, -INF, 0.3]], dtype).to(device), 0.01, algorithm=algorithm).cpu()
    r2 = vsl_ext.sigmoid_rank(_tensor([[0.1, -INF, 0.3, -INF]], dtype).to(device), 0.01, algorithm=algorithm).cpu()
    want = torch.tensor([[1.99999999794, 3.0, 1.00000000206]], dtype=torch.float64)
    tol = 1e-11 if dtype == torch.float64 else 3e-7
    torch.testing.assert_close(r.double(), want, rtol=0, atol=tol)
    torch.testing.assert_close(r2.double(), torch.tensor([[2.0, 3.5, 1.0, 3.5]], dtype=torch.float64), rtol=0,
                               atol=1e-8)
    assert r2[0, 1].item() == r2[0, 3].item() == 3.5


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_plus_inf_ranks_first(device, algorithm, dtype):
    m = _tensor([[0.5, INF, 0.9, -INF, 0.1]], dtype).to(device)
    desc = vsl_ext.sigmoid_rank(m, algorithm=algorithm)
    asc = vsl_ext.sigmoid_rank(m, descending=False, algorithm=algorithm)
    assert desc.tolist() == [[3.0, 1.0, 2.0, 5.0, 4.0]]
    assert asc.tolist() == [[3.0, 5.0, 4.0, 1.0, 2.0]]


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("case", sorted(ROWS) + ["masked batch"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_rows_with_infinities(device, case, dtype):
    """The issue's rows, several infinities, all-infinite and one-column rows, and a masked batch
    across CUDA's 1,024-column tile."""
    m = _masked_batch(2, 1030, dtype) if case == "masked batch" else _tensor(ROWS[case], dtype)
    # 3e37: the window's 30 tau (50 tau) is beyond float32's range
    taus = (1e-3,) if case == "masked batch" else (1e-3, 0.05, 3e37)
    for descending in (True, False):
        for tau in taus:
            check_rank_paths(m, tau, descending, device)


def _masked_batch(rows, cols, dtype, seed=0):
    """Finite values a few tau apart (many pairs inside the sorted window), many of them tied, with
    -inf masks and +inf overflows at positions that differ between rows."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randint(-12, 13, (rows, cols), generator=g).double() * 5e-4  # a grid of tau / 2: ties
    m[:, ::2] += torch.rand(rows, cols, generator=g, dtype=torch.float64)[:, ::2] * 1e-4
    u = torch.rand(rows, cols, generator=g)
    m[u < 0.15] = -INF
    m[u > 0.93] = INF
    for r in range(rows):
        m[r, r % cols] = -INF
        m[r, (r + 2) % cols] = INF
    return m.to(dtype)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("cols", [5, 64, 130])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_masked_batches(device, cols, dtype):
    """Many finite values inside each other's windows around masked and overflowed entries: sorted
    blocks, window bounds and counts by position next to the infinite runs."""
    m = _masked_batch(4, cols, dtype)
    assert torch.isinf(m).any(dim=1).all()
    for descending in (True, False):
        check_rank_paths(m, 1e-3, descending, device)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_finite_entries_get_the_finite_sub_rows_gradient(device):
    """Pairs with an infinity add constants (0, 1 or 1/2) to the ranks and nothing to the gradient:
    a finite entry's gradient is the gradient over the row's finite entries alone."""
    row = [0.3, -INF, 0.301, INF, 0.2995, -INF, 0.3]
    G = _grad_weights((1, len(row)), seed=4)[0].tolist()
    finite = [i for i, v in enumerate(row) if math.isfinite(v)]
    sub = brute_rank_grad([[row[i] for i in finite]], [[G[i] for i in finite]], 1e-3)[0]
    for algorithm in ALGORITHMS:
        x = torch.tensor([row], dtype=torch.float64, device=device, requires_grad=True)
        (gx,) = torch.autograd.grad(vsl_ext.sigmoid_rank(x, algorithm=algorithm), x,
                                    torch.tensor([G], dtype=torch.float64, device=device))
        gx = gx.cpu()
        torch.testing.assert_close(gx[0, finite], torch.tensor(sub, dtype=torch.float64), rtol=1e-9, atol=1e-9)
        assert gx[0, [1, 3, 5]].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_ranks_of_a_row_sum_to_the_hard_ranks_sum(device):
    """sigmoid(d) + sigmoid(-d) = 1 and ties give 1/2 + 1/2: a NaN-free row's ranks sum to
    n (n + 1) / 2 whatever its infinities (a check of the oracle and of every path)."""
    m = _masked_batch(3, 40, torch.float64, seed=3)
    n = m.shape[1]
    for row in brute_rank(m.tolist(), 1e-3):
        assert sum(row) == pytest.approx(n * (n + 1) / 2, rel=1e-12)
    for algorithm in ALGORITHMS:
        r = vsl_ext.sigmoid_rank(m.to(device), algorithm=algorithm).cpu()
        torch.testing.assert_close(r.sum(dim=1), torch.full((3,), n * (n + 1) / 2, dtype=torch.float64))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_reference_follows_the_rule(dtype):
    """The test oracle of the other modules, vsl_ext.reference.sigmoid_rank, on infinities."""
    for rows in ROWS.values():
        m = _tensor(rows, dtype)
        for descending in (True, False):
            x = m.clone().requires_grad_()
            r = reference.sigmoid_rank(x, 1e-3, descending)
            G = _grad_weights(m.shape)
            (gx,) = torch.autograd.grad(r, x, G.to(dtype))
            expected = brute_rank(m.double().tolist(), 1e-3, descending)
            torch.testing.assert_close(r.detach().double(), torch.tensor(expected, dtype=torch.float64),
                                       rtol=1e-5, atol=0)
            expected_grad = brute_rank_grad(m.double().tolist(), G.tolist(), 1e-3, descending)
            assert torch.isfinite(gx).all() and (gx[torch.isinf(m)] == 0).all()
            assert_close_grad(gx.double(), torch.tensor(expected_grad, dtype=torch.float64))


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_half_precision_overflow_ranks_first(device):
    """float16 similarities that overflow to +inf are ranked (in float32) like any +inf."""
    m = torch.tensor([[60000.0, 70000.0, 0.5, -70000.0]]).half().to(device)  # 70000 overflows float16
    assert torch.isinf(m).sum() == 2
    for algorithm in ALGORITHMS:
        assert vsl_ext.sigmoid_rank(m, algorithm=algorithm).tolist() == [[2.0, 1.0, 3.0, 4.0]]


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_nan_still_propagates_next_to_infinities(device):
    m = torch.tensor([[NAN, INF, 0.1, -INF], [0.1, -INF, 0.3, INF], [INF, NAN, INF, 0.2]], dtype=torch.float64)
    for algorithm in ALGORITHMS:
        x = m.clone().to(device).requires_grad_()
        r = vsl_ext.sigmoid_rank(x, algorithm=algorithm)
        (gx,) = torch.autograd.grad(r, x, torch.ones_like(r))
        r, gx = r.cpu(), gx.cpu()
        assert torch.isnan(r[[0, 2]]).all() and torch.isnan(gx[[0, 2]]).all()
        assert r[1].tolist() == [3.0, 4.0, 2.0, 1.0] and torch.isfinite(gx[1]).all()


# -------------------------------------------------------------------------------- hypothesis
POOL = [-INF, INF, 0.0, 1e-3, -2e-3, 0.03, 0.0301, -0.0299, 5e-4, 1.0]


@st.composite
def rows_with_infinities(draw, max_rows=4, max_cols=70):
    """(m, descending): a (<= max_rows, <= max_cols) float64 matrix drawn from a few values with ties,
    pairs on the +-30 tau window's edges, -inf and +inf (no NaN)."""
    rows, cols = draw(st.integers(1, max_rows)), draw(st.integers(1, max_cols))
    values = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=8))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 16)))
    pool = torch.tensor(values, dtype=torch.float64)
    return pool[torch.randint(0, len(values), (rows, cols), generator=g)], draw(st.booleans())


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=rows_with_infinities())
def test_hypothesis_every_algorithm_matches_the_oracle(device, case):
    m, descending = case
    for dtype in DTYPES:
        check_rank_paths(m.to(dtype), 1e-3, descending, device)


# ---------------------------------------------------------------------------------- vsl_loss
def _masked_pair(n, dtype, pad=2, seed=0):
    """S with its last ``pad`` captions masked by -inf (whole columns, their own pairs included) and
    one +inf overflow; C finite and tied, as CaptionIndex gives it."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, n, generator=g, dtype=torch.float64) * 5e-3
    s[:, n - pad:] = -INF
    s[0, 1] = INF
    c = torch.randint(0, 4, (n, n), generator=g).double() * 2e-3
    return s.to(dtype), ((c + c.t()) / 2).to(dtype)


def _check_loss(s, c, variant, device, tau=1e-3, algorithms=ALGORITHMS):
    loss_want, gs_want, gc_want = brute_vsl(s.double().tolist(), c.double().tolist(), tau, variant)
    gs_want = torch.tensor(gs_want, dtype=torch.float64)
    gc_want = torch.tensor(gc_want, dtype=torch.float64)
    for algorithm in algorithms:
        x = s.to(device).requires_grad_()
        y = c.to(device).requires_grad_()
        loss = vsl_ext.vsl_loss(x, y, tau, variant, algorithm=algorithm)
        gx, gy = torch.autograd.grad(loss, (x, y))
        assert math.isfinite(loss.item())
        assert loss.item() == pytest.approx(loss_want, rel=1e-5, abs=1e-6)
        assert torch.isfinite(gx).all() and (gx.cpu()[torch.isinf(s)] == 0).all()
        assert_close_grad(gx.cpu().double(), gs_want)
        assert_close_grad(gy.cpu().double(), gc_want)


@pytest.mark.parametrize("device, n", device_cases([3, 8, 66], emulated=[3, 20], cuda=[3, 8, 66]),
                         indirect=["device"])
@pytest.mark.parametrize("variant", ["row", "public-code"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_vsl_loss_with_masked_captions(device, n, variant, dtype):
    s, c = _masked_pair(n, dtype, pad=max(1, n // 4))
    _check_loss(s, c, variant, device)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("variant", ["row", "public-code"])
def test_vsl_loss_with_infinities_in_both_matrices(device, variant):
    s, c = _masked_pair(9, torch.float64, seed=2)
    c[3, :] = -INF
    c[:, 5] = INF
    _check_loss(s, c, variant, device)


def test_reference_losses_on_masked_batches():
    """reference.vsl_loss follows the rule; reference.public_code_vsl_loss reproduces the published
    code: NaN when one infinity meets itself (masked padding captions), the kernels' value when no
    two equal infinities meet (the clamp saturates an infinity against a finite value)."""
    s, c = _masked_pair(8, torch.float64)
    assert reference.vsl_loss(s, c).item() == pytest.approx(brute_vsl(s.tolist(), c.tolist(), 1e-3)[0], rel=1e-9)
    assert math.isnan(reference.public_code_vsl_loss(s, c).item())
    one = torch.randn(8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 5e-3
    one[2, 6] = -INF
    one[4, 1] = INF
    x = one.clone().requires_grad_()
    published = reference.public_code_vsl_loss(x, c)
    (g_published,) = torch.autograd.grad(published, x)
    y = one.clone().requires_grad_()
    ours = vsl_ext.vsl_loss(y, c, variant="public-code")
    (g_ours,) = torch.autograd.grad(ours, y)
    want = brute_vsl(one.tolist(), c.tolist(), 1e-3, "public-code")[0]
    assert published.item() == pytest.approx(want, rel=1e-9) and ours.item() == pytest.approx(want, rel=1e-9)
    assert_close_grad(g_ours, g_published)


# ------------------------------------------------------------------------------ triplet loss
def _brute_triplet(S, margin=0.2, max_violation=True):
    """VSE++ hinge with the documented rule: a -inf positive removes its row / column, a -inf
    negative never violates, equal infinities tie."""
    n = len(S)

    def cost(neg, pos):
        if pos == -INF or neg == -INF:
            return 0.0
        diff = 0.0 if neg == pos else neg - pos
        return max(0.0, margin + diff)

    total = 0.0
    for i in range(n):
        rows = [cost(S[i][j], S[i][i]) for j in range(n) if j != i]
        cols = [cost(S[j][i], S[i][i]) for j in range(n) if j != i]
        for costs in (rows, cols):
            total += (max(costs) if costs else 0.0) if max_violation else sum(costs)
    return total


@pytest.mark.parametrize("max_violation", [True, False])
def test_triplet_loss_ignores_masked_pairs(max_violation):
    g = torch.Generator().manual_seed(0)
    s = torch.rand(6, 6, generator=g, dtype=torch.float64)
    s[1, 4] = s[3, 0] = -INF   # known false negatives, masked
    s[:, 5] = s[5, :] = -INF   # a padding pair: its image's row and its caption's column
    s[2, 2] = s[2, 3] = s[3, 3] = INF  # overflowed positives and a negative that ties with them
    x = s.clone().requires_grad_()
    loss = triplet_loss(x, 0.2, max_violation)
    (gx,) = torch.autograd.grad(loss, x)
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx(_brute_triplet(s.tolist(), 0.2, max_violation), abs=1e-12)
    assert torch.isfinite(gx).all() and (gx[torch.isinf(s) & (s < 0)] == 0).all()
    assert (gx[:, 5] == 0).all() and (gx[5, :] == 0).all()
    # the padding pair adds nothing: the loss of the real pairs alone
    assert loss.item() == pytest.approx(triplet_loss(s[:5, :5], 0.2, max_violation).item(), abs=1e-12)


def test_triplet_loss_overflowed_negative_is_an_infinite_violation():
    s = torch.eye(3, dtype=torch.float64)
    s[0, 2] = INF
    assert triplet_loss(s).item() == INF
    s[1, 1] = NAN
    assert math.isnan(triplet_loss(s).item())


def test_criterion_with_masked_captions_is_finite():
    s, c = _masked_pair(8, torch.float32)
    s[0, 1] = 0.0  # no overflowed negative (that would be an infinite violation)
    x = s.clone().requires_grad_()
    out = VSLCriterion(text_side=True)(x, c, c)
    out["loss"].backward()
    assert all(math.isfinite(v.item()) for v in out.values())
    assert torch.isfinite(x.grad).all() and (x.grad[torch.isinf(s)] == 0).all()


# ----------------------------------------------------------------------------------- metrics
def _brute_retrieval_ranks(sims, cpi):
    """0-based ranks with NaN and ties resolved against the true item, in loops: a NaN true score is
    -inf, a wrong item counts if it is NaN or scored >= the (best) true item."""
    n, m = sims.shape

    def true_value(v):
        return -INF if math.isnan(v) else v

    def against(wrong, true):
        return math.isnan(wrong) or wrong >= true

    i2t = [sum(against(sims[i, c], max(true_value(sims[i, t]) for t in range(cpi * i, cpi * i + cpi)))
               for c in range(m) if c // cpi != i) for i in range(n)]
    t2i = [sum(against(sims[k, c], true_value(sims[c // cpi, c])) for k in range(n) if k != c // cpi)
           for c in range(m)]
    return np.array(i2t), np.array(t2i)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("cpi", [1, 5])
def test_retrieval_ranks_with_infinities_and_nan(seed, cpi):
    rng = np.random.default_rng(seed)
    n = 9
    pool = np.array([-INF, INF, NAN, 0.0, 0.5, 0.5, 1.0, 0.25])
    sims = pool[rng.integers(0, len(pool), (n, n * cpi))]
    i2t, t2i = ranks(sims, cpi)
    want_i2t, want_t2i = _brute_retrieval_ranks(sims, cpi)
    np.testing.assert_array_equal(i2t, want_i2t)
    np.testing.assert_array_equal(t2i, want_t2i)


def test_nan_never_makes_a_rank_better():
    n = 6
    perfect = np.repeat(np.eye(n), 5, axis=1)
    assert recall_at_k(perfect)["rsum"] == 600.0
    wrong_nan = perfect.copy()
    wrong_nan[perfect == 0] = NAN              # every wrong item NaN: they all count against
    worst = (np.full(n, 5 * (n - 1)), np.full(5 * n, n - 1))
    for sims in (wrong_nan, np.full((n, 5 * n), NAN), np.full((n, 5 * n), INF), np.full((n, 5 * n), -INF)):
        for got, want in zip(ranks(sims), worst):  # NaN, and ties of infinities, count against
            np.testing.assert_array_equal(got, want)
    assert recall_at_k(np.full((n, 5 * n), NAN))["i2t_r10"] == 0.0
    ninf = perfect.copy()
    ninf[perfect == 0] = -INF                   # -inf wrong items: the true items rank first
    assert recall_at_k(ninf)["rsum"] == 600.0


# ------------------------------------------------------------------------------- temperatures
@pytest.mark.parametrize("tau", [5e-324, 1e-39, 1e39])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_tau_whose_reciprocal_overflows_float32_is_rejected(tau, dtype):
    m = torch.rand(3, 3).to(dtype)
    with pytest.raises(ValueError, match=r"tau = .*(overflows float32)"):
        vsl_ext.sigmoid_rank(m, tau)
    with pytest.raises(ValueError, match=r"tau = "):
        vsl_ext.vsl_loss(m, m, tau)
    with pytest.raises(ValueError, match=r"tau = "):
        VSLCriterion(tau=tau)(m.float(), m.float())


def test_tau_whose_reciprocal_overflows_float64_is_rejected():
    m = torch.rand(3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"tau = 5e-324 .*1 / tau overflows float64"):
        vsl_ext.sigmoid_rank(m, 5e-324)
    with pytest.raises(ValueError, match=r"tau = 5e-324"):
        vsl_ext.vsl_loss(m, m, 5e-324)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_tiny_tau_valid_in_float64_works_for_float64_input(device, algorithm):
    """tau = 1e-39: 1 / tau overflows float32 but not float64. Ranks are hard ranks with ties at
    1/2, the gradient is finite."""
    m = torch.tensor([[0.1, 0.2, 0.2, -INF, 1e-30, 0.0]], dtype=torch.float64, device=device, requires_grad=True)
    r = vsl_ext.sigmoid_rank(m, 1e-39, algorithm=algorithm)
    (g,) = torch.autograd.grad(r, m, torch.arange(6.0, dtype=torch.float64, device=device).view(1, 6))
    loss = vsl_ext.vsl_loss(m.detach().expand(6, 6), torch.rand(6, 6, dtype=torch.float64, device=device), 1e-39,
                            algorithm=algorithm)
    assert r.tolist() == [[3.0, 1.5, 1.5, 6.0, 4.0, 5.0]]
    assert torch.isfinite(g).all() and torch.isfinite(loss)
