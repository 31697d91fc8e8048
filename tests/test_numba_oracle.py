"""vsl_ext at n >= 1,024 against an independent float64 brute force compiled with numba (issue 13).

At these sizes the torch reference (``vsl_ext.reference``) needs n^3 memory (4 x 1024^3 float64 =
34 GB) and cannot run, so only vsl_ext's own paths checked each other there. The oracle below is
written from the paper's definitions alone, without vsl_ext's code or algorithms: every pair of a
row is evaluated (no window, no sorting, no separated exponentials), in float64, rows in parallel,
O(n^2) memory. Rank (Zhang et al., ICME 2023):

    R[i, j] = 1 + sum_{a != j} sigmoid(s (K[i, a] - V[i, j]) / tau)

with V the ranked values and K the row they are ranked against, s = +1 (descending) or -1: K = V for
``sigmoid_rank`` and the row VSL; for the public-code VSL, R[b, c] ranks S[b, c] against column b of
S (K = S^T) with the published code's sigmoid, its exponent clamped to [-50, 50]. Loss:
L = 1 - mean(min(SR, CR) / max(SR, CR)). Gradients by the chain rule, written out below.

numba is in the test extra; without it the module is skipped.
"""
import math

import numpy as np
import pytest
import torch

import vsl_ext

numba = pytest.importorskip("numba")
from numba import prange  # noqa: E402

TAU = 1e-3
N = 1024
# Pairs with |z| > CUTOFF are still visited but their exp is not evaluated: sig(z) is then within
# sig(-40) = 4.3e-18 of 0 or 1 and sig' below 4.3e-18. Summed over 1,023 pairs that moves a rank
# (>= 1) by less than 4.4e-15 relative and a gradient by less than 4.4e-12 / tau * max|g| absolute,
# below the float64 tolerances used here; it saves the exps of most pairs of C and many of S. The
# public code's clamp of the exponent at +-50 changes a pair's sigmoid by less than sig(-50) = 2e-22
# and lies beyond the cutoff, so the same loops serve both variants.
CUTOFF = 40.0


@numba.njit(parallel=True, cache=True)
def _sigmoid_terms(v, k, sign, tau):
    """ranks[i, j] = 1 + sum_{a != j} sig(z), z = sign (k[i, a] - v[i, j]) / tau, sig(z) = 1 / (1 + exp(-z))."""
    rows, cols = v.shape
    ranks = np.empty((rows, cols))
    for i in prange(rows):
        for j in range(cols):
            total = 0.0
            for a in range(cols):
                if a == j:
                    continue
                e = -sign * (k[i, a] - v[i, j]) / tau
                if e > CUTOFF:
                    continue  # sig = 0
                if e < -CUTOFF:
                    total += 1.0
                    continue
                total += 1.0 / (1.0 + math.exp(e))
            ranks[i, j] = 1.0 + total
    return ranks


@numba.njit(parallel=True, cache=True)
def _rank_backward(v, k, g, sign, tau):
    """For L = sum(g * R): (dL/dv, dL/dk) with R as in _sigmoid_terms. d sig(z) / dz = sig (1 - sig);
    z = sign (k[i, a] - v[i, j]) / tau, so dz/dk[i, a] = sign / tau and dz/dv[i, j] = -sign / tau; the
    public code's clamped exponent (|z| > 50) has derivative 0, inside the pairs left out here."""
    rows, cols = v.shape
    dv = np.zeros((rows, cols))
    dk = np.zeros((rows, cols))
    for i in prange(rows):
        for j in range(cols):
            for a in range(cols):
                if a == j:
                    continue
                e = -sign * (k[i, a] - v[i, j]) / tau
                if e < -CUTOFF or e > CUTOFF:
                    continue
                s = 1.0 / (1.0 + math.exp(e))
                dz = g[i, j] * s * (1.0 - s) * sign / tau
                dk[i, a] += dz
                dv[i, j] -= dz
    return dv, dk


def oracle_rank(m: np.ndarray, descending: bool, g: np.ndarray):
    """(R, dL/dm for L = sum(g * R)) of the row rank."""
    sign = 1.0 if descending else -1.0
    r = _sigmoid_terms(m, m, sign, TAU)
    dv, dk = _rank_backward(m, m, g, sign, TAU)
    return r, dv + dk


@numba.njit(parallel=True, cache=True)
def _vsl_rows(s, ks, c, kc, tau):
    """The VSL row by row (rows in parallel; a row's ratios and their gradients need only that row of
    SR and CR): each row's pair sigmoids P[j, a] = sig((k[i, a] - v[i, j]) / tau) of S and C are kept
    (n^2 per row), the row's ranks, ratios min/max and d ratio / d rank (equal ranks: 0, like torch's
    split gradient of minimum / maximum) are taken from them, and then, for L = 1 - sum(ratio) / n^2,
    dL/dv[i, j] = -sum_a dz and dL/dk[i, a] = sum_j dz with dz = dL/dR[i, j] sig'(z) / tau."""
    rows, cols = s.shape
    ratio_sums = np.zeros(rows)
    grads = np.zeros((4, rows, cols))  # dL/d(s, ks, c, kc)
    scale = -1.0 / (rows * cols)
    for i in prange(rows):
        p = np.empty((2, cols, cols))
        r = np.ones((2, cols))
        for m in range(2):
            v, k = (s, ks) if m == 0 else (c, kc)
            for j in range(cols):
                for a in range(cols):
                    e = -(k[i, a] - v[i, j]) / tau
                    if a == j or e > CUTOFF:
                        p[m, j, a] = 0.0
                    elif e < -CUTOFF:
                        p[m, j, a] = 1.0
                    else:
                        p[m, j, a] = 1.0 / (1.0 + math.exp(e))
                    r[m, j] += p[m, j, a]
        d = np.empty((2, cols))
        for j in range(cols):
            sr, cr = r[0, j], r[1, j]
            ratio_sums[i] += min(sr, cr) / max(sr, cr)
            d[0, j] = scale * (1.0 / cr if sr < cr else (-cr / sr ** 2 if sr > cr else 0.0))
            d[1, j] = scale * (1.0 / sr if cr < sr else (-sr / cr ** 2 if cr > sr else 0.0))
        for m in range(2):
            for j in range(cols):
                for a in range(cols):
                    q = p[m, j, a]
                    dz = d[m, j] * q * (1.0 - q) / tau
                    grads[2 * m + 1, i, a] += dz
                    grads[2 * m, i, j] -= dz
    return ratio_sums, grads


def oracle_vsl_loss(s: np.ndarray, c: np.ndarray, variant: str):
    """(L, dL/dS, dL/dC), float64."""
    public = variant == "public-code"
    ks, kc = (s.T.copy(), c.T.copy()) if public else (s, c)
    ratio_sums, g = _vsl_rows(s, ks, c, kc, TAU)
    ds = g[0] + (g[1].T if public else g[1])
    dc = g[2] + (g[3].T if public else g[3])
    return 1.0 - ratio_sums.sum() / s.size, ds, dc


def training_like(n: int, seed: int):
    """S: cosines of random unit embeddings (d = 64) with +0.5 on the diagonal; C: uniform symmetric
    with exact ties (a tf-idf-like matrix), both float32."""
    g = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.normalize(torch.randn(n, 64, generator=g), dim=1)
    b = torch.nn.functional.normalize(torch.randn(n, 64, generator=g), dim=1)
    s = a @ b.t() + 0.5 * torch.eye(n)
    c = torch.triu(torch.randint(0, 64, (n, n), generator=g).float() / 64, 1)
    c = c + c.t() + torch.eye(n)
    return s.contiguous(), c.contiguous()


def rel_err(x: torch.Tensor, ref: np.ndarray) -> float:
    ref = torch.from_numpy(np.asarray(ref))
    return float((x.detach().double() - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("descending", [True, False])
def test_sigmoid_rank_matches_the_numba_oracle(descending):
    s, _ = training_like(N, seed=1)
    m = s[:64]  # rows are independent: 64 rows of 1,024 columns
    g = torch.randn(m.shape, generator=torch.Generator().manual_seed(2))
    want_r, want_g = oracle_rank(m.double().numpy(), descending, g.double().numpy())
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-6)):
        x = m.to(dtype).requires_grad_()
        r = vsl_ext.sigmoid_rank(x, TAU, descending)
        (got_g,) = torch.autograd.grad(r, x, g.to(dtype))
        assert rel_err(r, want_r) < tol
        assert rel_err(got_g, want_g) < 50 * tol


@pytest.mark.parametrize("variant", ["row", "public-code"])
def test_vsl_loss_matches_the_numba_oracle(variant):
    s, c = training_like(N, seed=3)
    want_loss, want_ds, want_dc = oracle_vsl_loss(s.double().numpy(), c.double().numpy(), variant)
    for dtype, tol in ((torch.float64, 1e-11), (torch.float32, 1e-5)):
        x, y = s.to(dtype).requires_grad_(), c.to(dtype).requires_grad_()
        loss = vsl_ext.vsl_loss(x, y, TAU, variant=variant)
        ds, dc = torch.autograd.grad(loss, (x, y))
        assert abs(loss.item() - want_loss) <= tol * abs(want_loss)
        assert rel_err(ds, want_ds) < 50 * tol
        assert rel_err(dc, want_dc) < 50 * tol
