"""The bad-input campaign (issue 12): its table of entry point x input kind, and the float64 oracles
its expected values come from.

Every campaign test carries ``@cell(entry, kind)`` (the pytest marker ``bad_input``); one collected
test item is one case of its cell, unless the marker says ``cases=N`` (a test that runs N scenarios
in one process group, or N inputs in one subprocess). ``python tests/bad_input_table.py`` collects
the campaign and prints the table with each cell's count (docs/reliability.md holds its output).

Expected values come from the formulas written out here in plain Python floats (float64), never
from vsl_ext: the rank ``R[i, j] = 1 + sum_{k != j} sigmoid((M[i, k] - M[i, j]) / tau)`` with the
documented rule for infinities (equal values, infinities included, tie at 1/2; an infinity against
another value is saturated; NaN makes the row NaN) and the loss ``1 - mean(min(SR, CR) / max(SR, CR))``.
"""
import math
from typing import List, Sequence

import pytest
import torch

ENTRIES = (
    "vsl_ext.sigmoid_rank", "vsl_ext.vsl_loss (row)", "vsl_ext.vsl_loss (public-code)",
    "torch.ops.vsl_ext.sigmoid_rank", "torch.ops.vsl_ext.sigmoid_rank_backward", "torch.ops.vsl_ext.vsl_loss_ratio_sum",
    "VSLLoss", "VSLCriterion", "vsl_ext.distributed.vsl_loss",
    "CaptionIndex constructors", "CaptionIndex.load", "CaptionIndex.image_similarity / caption_similarity",
    "CaptionIndex.cider_d", "metrics.recall_at_k / evaluate_protocol", "PrecompSplit",
    "vsl-train --resume", "vsl-eval", "vsl-prepare-images",
    "vsl_ext.sigmoid_rank (among)", "torch.ops.vsl_ext.sigmoid_rank_among", "vsl_ext.smooth_ap_loss",
    "torch.ops.vsl_ext.smooth_ap_loss",
)
KINDS = (
    "dtype", "shape / rank", "empty", "n = 1", "device", "layout (strides)", "NaN", "±inf", "huge (1e38, dtype max)",
    "tau", "other arguments", "ids", "text (Unicode, empty)", "truncated file", "foreign / wrong-version file",
    "corrupt file",
)


def cell(entry: str, kind: str, cases: int = 1):
    """Marks a campaign test: a case (or ``cases`` cases) of the cell (entry, kind)."""
    assert entry in ENTRIES, entry
    assert kind in KINDS, kind
    return pytest.mark.bad_input(entry=entry, kind=kind, cases=cases)


# ------------------------------------------------------------------------------ float64 oracles
def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _difference(a: float, b: float) -> float:
    """a - b, 0 for equal values (equal infinities included: they tie)."""
    return 0.0 if a == b else a - b


def rank_row(row: Sequence[float], tau: float, descending: bool = True) -> List[float]:
    values = [float(v) for v in row]
    if any(math.isnan(v) for v in values):
        return [math.nan] * len(values)
    sign = 1.0 if descending else -1.0
    return [1.0 + sum(sigmoid(sign * _difference(values[k], values[j]) / tau)
                      for k in range(len(values)) if k != j) for j in range(len(values))]


def ranks(m, tau: float = 1e-3, descending: bool = True) -> torch.Tensor:
    """The float64 ranks of every row of ``m`` (any tensor or nested list)."""
    rows = m.double().tolist() if isinstance(m, torch.Tensor) else m
    return torch.tensor([rank_row(r, tau, descending) for r in rows], dtype=torch.float64)


def rank_backward(m, grad, tau: float = 1e-3, descending: bool = True) -> torch.Tensor:
    """dL/dm for L = sum(grad * R(m)): ``(s / tau) sum_{j != l} sigmoid'((m_l - m_j) / tau) (g_j - g_l)``;
    0 where a pair is saturated or tied at an infinity, NaN rows stay NaN."""
    m, g = m.double().tolist(), grad.double().tolist()
    s = 1.0 if descending else -1.0
    out = []
    for row, grow in zip(m, g):
        if any(math.isnan(v) for v in row):
            out.append([math.nan] * len(row))
            continue
        line = []
        for l, ml in enumerate(row):
            total = 0.0
            for j, mj in enumerate(row):
                if j == l or math.isinf(ml) or math.isinf(mj):
                    continue   # an infinite entry gets no gradient and passes none
                p = sigmoid(s * (ml - mj) / tau)
                total += p * (1.0 - p) * (grow[j] - grow[l])
            line.append(s / tau * total)
        out.append(line)
    return torch.tensor(out, dtype=torch.float64)


def ratio_sum(sr: torch.Tensor, cr: torch.Tensor) -> float:
    """sum of min / max; NaN if either holds NaN (Python's min and max would drop it)."""
    pairs = list(zip(sr.flatten().tolist(), cr.flatten().tolist()))
    if any(math.isnan(a) or math.isnan(b) for a, b in pairs):
        return math.nan
    return sum(min(a, b) / max(a, b) for a, b in pairs)


def loss(s, c, tau: float = 1e-3) -> float:
    """The row VSL in float64."""
    sr, cr = ranks(s, tau), ranks(c, tau)
    return 1.0 - ratio_sum(sr, cr) / sr.numel()


def _public_sigmoid(t: float) -> float:
    return 1.0 / (1.0 + math.exp(min(50.0, max(-50.0, -t))))


def public_code_ranks(m, tau: float = 1e-3) -> torch.Tensor:
    """The published code's rank: ``SR[b, c] = 1 + sum_{a != c} sig((M[a, b] - M[b, c]) / tau)`` with its
    clamped exponent; equal values (infinities included) tie at 1/2."""
    v = m.double().tolist()
    n = len(v)
    out = [[1.0 + sum(0.5 if v[a][b] == v[b][c] else _public_sigmoid((v[a][b] - v[b][c]) / tau)
                      for a in range(n) if a != c) for c in range(n)] for b in range(n)]
    if any(math.isnan(x) for row in v for x in row):
        return torch.full((n, n), math.nan, dtype=torch.float64)
    return torch.tensor(out, dtype=torch.float64)


def public_code_loss(s, c, tau: float = 1e-3) -> float:
    sr, cr = public_code_ranks(s, tau), public_code_ranks(c, tau)
    return 1.0 - ratio_sum(sr, cr) / sr.numel()


def triplet(s, margin: float = 0.2) -> float:
    """VSE++ hardest-negative hinge, both directions, on finite float64 values."""
    v = s.double().tolist()
    n = len(v)
    total = 0.0
    for i in range(n):
        total += max([0.0] + [max(0.0, margin + v[i][j] - v[i][i]) for j in range(n) if j != i])
        total += max([0.0] + [max(0.0, margin + v[j][i] - v[i][i]) for j in range(n) if j != i])
    return total


def assert_values(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    """Equal to rtol (NaN where NaN is expected), computed from the float64 oracle."""
    torch.testing.assert_close(actual.double().cpu(), expected, rtol=rtol, atol=1e-9, equal_nan=True)
