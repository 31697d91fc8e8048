"""vsl_ext.metrics vs brute-force numpy implementations of the SCAN/SGRAF protocol."""
import numpy as np
import pytest
import torch

from vsl_ext.metrics import KEYS, evaluate_protocol, ranks, recall_at_k, recall_at_k_folds


def scan_protocol(sims, cpi=5):
    """SCAN's i2t/t2i: argsort each query's scores descending, rank = position of the (best) true item."""
    n = sims.shape[0]
    i2t = np.zeros(n)
    for i in range(n):
        order = np.argsort(sims[i])[::-1]
        i2t[i] = min(np.where(order == c)[0][0] for c in range(cpi * i, cpi * i + cpi))
    t2i = np.zeros(cpi * n)
    for c in range(cpi * n):
        order = np.argsort(sims[:, c])[::-1]
        t2i[c] = np.where(order == c // cpi)[0][0]
    return i2t, t2i


def pessimistic_protocol(sims, cpi=5):
    """Loop version of the documented tie rule: count wrong items scored >= the (best) true item."""
    n, m = sims.shape
    i2t = np.zeros(n, dtype=np.int64)
    for i in range(n):
        best = max(sims[i, c] for c in range(cpi * i, cpi * i + cpi))
        i2t[i] = sum(1 for c in range(m) if c // cpi != i and sims[i, c] >= best)
    t2i = np.zeros(m, dtype=np.int64)
    for c in range(m):
        true = sims[c // cpi, c]
        t2i[c] = sum(1 for k in range(n) if k != c // cpi and sims[k, c] >= true)
    return i2t, t2i


def summarize(i2t, t2i):
    out = {}
    for name, r in (("i2t", i2t), ("t2i", t2i)):
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = 100.0 * np.sum(r < k) / len(r)
        out[f"{name}_medr"] = np.floor(np.median(r)) + 1
    out["rsum"] = sum(out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))
    return out


@pytest.mark.parametrize("n,cpi,seed", [(1, 5, 0), (7, 5, 1), (40, 5, 2), (33, 1, 3), (25, 3, 4)])
def test_matches_scan_protocol_without_ties(n, cpi, seed):
    rng = np.random.default_rng(seed)
    sims = rng.standard_normal((n, n * cpi))
    sims[np.arange(n).repeat(cpi), np.arange(n * cpi)] += rng.random(n * cpi)   # some signal
    got = recall_at_k(sims, cpi)
    want = summarize(*scan_protocol(sims, cpi))
    for k in KEYS:
        assert got[k] == pytest.approx(want[k]), k


@pytest.mark.parametrize("levels,seed", [(2, 0), (3, 1), (5, 2), (1, 3)])
def test_ties_are_broken_against_the_true_item(levels, seed):
    rng = np.random.default_rng(seed)
    n, cpi = 30, 5
    sims = rng.integers(0, levels, (n, n * cpi)).astype(np.float32)
    i2t, t2i = ranks(sims, cpi)
    bi2t, bt2i = pessimistic_protocol(sims, cpi)
    np.testing.assert_array_equal(i2t, bi2t)
    np.testing.assert_array_equal(t2i, bt2i)
    got = recall_at_k(sims, cpi)
    want = summarize(bi2t, bt2i)
    for k in KEYS:
        assert got[k] == pytest.approx(want[k]), k


def test_constant_scores_give_zero_recall_and_perfect_scores_full_recall():
    n = 12
    assert recall_at_k(np.zeros((n, 5 * n)))["rsum"] == 0.0
    perfect = np.repeat(np.eye(n), 5, axis=1)
    m = recall_at_k(perfect)
    assert m["rsum"] == 600.0 and m["i2t_medr"] == 1 and m["t2i_medr"] == 1


def test_nan_counts_as_worst_score():
    n = 6
    sims = np.repeat(np.eye(n), 5, axis=1)
    sims[0, :5] = np.nan                       # image 0's true captions are NaN
    i2t, t2i = ranks(sims)
    assert i2t[0] == 5 * (n - 1)               # every wrong caption (score 0) is >= -inf
    assert all(t2i[:5] == n - 1)


def test_chunking_and_inputs():
    rng = np.random.default_rng(5)
    sims = rng.standard_normal((23, 115)).astype(np.float32)
    full = recall_at_k(sims)
    assert recall_at_k(sims, chunk_elements=7) == full
    assert recall_at_k(torch.from_numpy(sims)) == full
    assert recall_at_k(torch.from_numpy(sims).double()) == full


def test_folds_and_protocols():
    rng = np.random.default_rng(6)
    small = rng.standard_normal((10, 50))
    folds = recall_at_k_folds(small, 2)
    a, b = recall_at_k(small[:5, :25]), recall_at_k(small[5:, 25:])
    for k in KEYS:
        assert folds[k] == pytest.approx((a[k] + b[k]) / 2)
    sims = rng.standard_normal((1000, 5000)).astype(np.float32)
    assert evaluate_protocol(sims, "coco1k") == recall_at_k(sims) == evaluate_protocol(sims, "f30k1k")
    with pytest.raises(ValueError, match="coco5k"):
        evaluate_protocol(sims, "coco5k")
    with pytest.raises(ValueError, match="multiple of 1,000"):
        evaluate_protocol(small, "coco1k")
    with pytest.raises(ValueError, match="protocol"):
        evaluate_protocol(sims, "bogus")


def test_bad_inputs():
    with pytest.raises(ValueError, match="captions"):
        recall_at_k(np.zeros((4, 19)))
    with pytest.raises(ValueError, match="2-D"):
        recall_at_k(np.zeros(20))
    with pytest.raises(TypeError):
        recall_at_k([[0.0] * 5])
    with pytest.raises(ValueError, match="captions_per_image"):
        recall_at_k(np.zeros((4, 20)), captions_per_image=0)
