"""A float64 brute force of the ranks and the VSL with the rule for infinite entries, pair by pair in
Python floats: the tests' independent oracle (it shares no code with the package or its reference).

The rule (csrc/sigmoid_math.h): in ``R[i, j] = 1 + sum_{k != j} sigmoid((M[i, k] - M[i, j]) / tau)``
equal infinities tie (1/2, as equal finite values do), an infinity against any other value is
saturated (0 or 1), and no gradient flows through a pair that holds an infinity (0 at infinite
entries); NaN propagates. inf - inf is never computed.
"""
import math

INF = math.inf


def logistic(z: float) -> float:
    if z == INF:
        return 1.0
    if z == -INF:
        return 0.0
    e = math.exp(-abs(z))
    return 1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)


def pair_sigmoid(v: float, x: float, tau: float, clamp=None) -> float:
    """sigmoid((v - x) / tau) under the rule; ``clamp``: the published code's clamp of the argument."""
    if v == x:  # equal finite values, or the same infinity twice: a tie
        return 0.5
    if math.isinf(v) or math.isinf(x):  # an infinity against another value: saturated
        z = INF if v > x else -INF
    else:
        z = (v - x) / tau
    if clamp is not None:
        z = min(max(z, -clamp), clamp)
    return logistic(z)


def pair_sigmoid_grad(v: float, x: float, tau: float, clamp=None) -> float:
    """d sigmoid((v - x) / tau) / dv: 0 for any pair that holds an infinity (and beyond a clamp)."""
    if math.isinf(v) or math.isinf(x):
        return 0.0
    z = (v - x) / tau
    if clamp is not None and abs(z) > clamp:
        return 0.0
    e = math.exp(-abs(z))
    return e / (1.0 + e) ** 2 / tau


def brute_rank(rows, tau, descending=True, values=None, clamp=None):
    """``R[i][j] = 1 + sum_{k != j} sigmoid(+-(values[i][k] - rows[i][j]) / tau)``; values: rows (row
    rank) or the compared rows of a rank against other rows (the public-code variant's S^T)."""
    values = rows if values is None else values
    out = []
    for x, v in zip(rows, values):
        out.append([1.0 + sum(pair_sigmoid(v[k], x[j], tau, clamp) if descending else
                              pair_sigmoid(x[j], v[k], tau, clamp) for k in range(len(v)) if k != j)
                    for j in range(len(x))])
    return out


def brute_rank_grads(rows, G, tau, descending=True, values=None, clamp=None):
    """(d/d rows, d/d values) of ``sum_ij G[i][j] R[i][j]``; for a row rank (values None) the
    gradient is their sum."""
    values = rows if values is None else values
    s = 1.0 if descending else -1.0
    g_rows = [[0.0] * len(x) for x in rows]
    g_values = [[0.0] * len(v) for v in values]
    for i, (x, v) in enumerate(zip(rows, values)):
        for j in range(len(x)):
            for k in range(len(v)):
                if k == j:
                    continue
                d = s * G[i][j] * pair_sigmoid_grad(v[k], x[j], tau, clamp)
                g_values[i][k] += d
                g_rows[i][j] -= d
    return g_rows, g_values


def brute_rank_grad(rows, G, tau, descending=True):
    g_rows, g_values = brute_rank_grads(rows, G, tau, descending)
    return [[a + b for a, b in zip(r, v)] for r, v in zip(g_rows, g_values)]


def transpose(m):
    return [list(col) for col in zip(*m)]


def brute_vsl(S, C, tau, variant="row"):
    """(loss, dL/dS, dL/dC) of the VSL (row variant, or the published code's column convention
    with its clamp at 50 and the rule for infinities)."""
    n = len(S)
    public = variant == "public-code"
    clamp = 50.0 if public else None
    ranked = []
    for M in (S, C):
        values = transpose(M) if public else None
        ranked.append((brute_rank(M, tau, True, values, clamp), values))
    (SR, _), (CR, _) = ranked
    total = 0.0
    gSR = [[0.0] * n for _ in range(n)]
    gCR = [[0.0] * n for _ in range(n)]
    for b in range(n):
        for c in range(n):
            a, d = SR[b][c], CR[b][c]
            if a < d:
                total += a / d
                gSR[b][c], gCR[b][c] = -1.0 / d / n ** 2, a / d ** 2 / n ** 2
            elif a > d:
                total += d / a
                gSR[b][c], gCR[b][c] = d / a ** 2 / n ** 2, -1.0 / a / n ** 2
            else:
                total += 1.0  # min/max has subgradient 0 at a tie (the halves cancel)
    grads = []
    for M, G in ((S, gSR), (C, gCR)):
        values = transpose(M) if public else None
        g_rows, g_values = brute_rank_grads(M, G, tau, True, values, clamp)
        if public:
            g_values = transpose(g_values)
        grads.append([[a + b for a, b in zip(r, v)] for r, v in zip(g_rows, g_values)])
    return 1.0 - total / n ** 2, grads[0], grads[1]


def brute_rank_among(rows, among, tau, descending=True):
    """``R[i][j] = 1 + sum_{k != j, among[i][k]} sigmoid(+-(rows[i][k] - rows[i][j]) / tau)`` for every j."""
    out = []
    for x, keep in zip(rows, among):
        out.append([1.0 + sum(pair_sigmoid(x[k], x[j], tau) if descending else pair_sigmoid(x[j], x[k], tau)
                              for k in range(len(x)) if k != j and keep[k])
                    for j in range(len(x))])
    return out


def brute_rank_among_grad(rows, among, G, tau, descending=True):
    """d/d rows of ``sum_ij G[i][j] R[i][j]`` for the rank among ``among``."""
    s = 1.0 if descending else -1.0
    grad = [[0.0] * len(x) for x in rows]
    for i, (x, keep) in enumerate(zip(rows, among)):
        for j in range(len(x)):
            for k in range(len(x)):
                if k == j or not keep[k]:
                    continue
                d = s * G[i][j] * pair_sigmoid_grad(x[k], x[j], tau)
                grad[i][k] += d
                grad[i][j] -= d
    return grad


def brute_smooth_ap(S, P, tau):
    """(loss, dL/dS) of Smooth-AP for any relevance P (Brown et al., ECCV 2020, generalised):
    ``1 - mean_q (1/|P_q|) sum_{j in P_q} R_P(q, j) / R_all(q, j)`` over the queries q with a relevant
    reference, R_all the descending rank in the row, R_P the same sum over the relevant k only."""
    valid = [q for q in range(len(S)) if any(P[q])]
    total = 0.0
    grad = [[0.0] * len(x) for x in S]
    for q in valid:
        x, p = S[q], P[q]
        w = 1.0 / (sum(1 for v in p if v) * len(valid))
        for j in range(len(x)):
            if not p[j]:
                continue
            r_all = 1.0 + sum(pair_sigmoid(x[k], x[j], tau) for k in range(len(x)) if k != j)
            r_pos = 1.0 + sum(pair_sigmoid(x[k], x[j], tau) for k in range(len(x)) if k != j and p[k])
            total += w * r_pos / r_all
            g_all, g_pos = w * r_pos / r_all ** 2, -w / r_all  # d loss / d R_all, d loss / d R_P
            for k in range(len(x)):
                if k == j:
                    continue
                d = (g_all + (g_pos if p[k] else 0.0)) * pair_sigmoid_grad(x[k], x[j], tau)
                grad[q][k] += d
                grad[q][j] -= d
    return 1.0 - total, grad
