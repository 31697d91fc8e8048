"""vsl_ext.metrics.average_semantic_precision (DAA's ASP) and rank_agreement (mean Spearman of S and
C rows) against oracles written here: DAA's ASP_compute formula with numpy's stable argsort, and
scipy.stats.spearmanr row by row."""
import warnings

import numpy as np
import pytest
import torch

from vsl_ext import metrics

st = pytest.importorskip("scipy.stats")


def _asp_oracle(sims, sems):
    """DAA's ASP_compute: ranks by a descending argsort (ties in index order here), mean min/max ratio."""
    total = 0.0
    for q in range(sims.shape[0]):
        rs = np.argsort(np.argsort(-sims[q], kind="stable"), kind="stable") + 1
        rc = np.argsort(np.argsort(-sems[q], kind="stable"), kind="stable") + 1
        total += (np.minimum(rs, rc) / np.maximum(rs, rc)).mean()
    return 100.0 * total / sims.shape[0]


@pytest.mark.parametrize("levels", [3, 1000])   # many ties, few ties
@pytest.mark.parametrize("symmetric", [True, False])
def test_asp_matches_daas_formula(levels, symmetric):
    rng = np.random.default_rng(levels)
    n, cpi = 9, 5
    sims = rng.integers(0, levels, size=(n, n * cpi)).astype(np.float32)
    c = rng.integers(0, levels, size=(n, n)).astype(np.float64)
    if symmetric:
        c = c + c.T
    sems = np.repeat(c, cpi, axis=1)    # image i, caption k: C[i, k // cpi]
    got = metrics.average_semantic_precision(sims, c, cpi, chunk_elements=40)
    assert got["i2t"] == pytest.approx(_asp_oracle(sims, sems), rel=1e-12)
    assert got["t2i"] == pytest.approx(_asp_oracle(sims.T, sems.T), rel=1e-12)


def test_asp_is_100_when_s_ranks_as_c():
    c = np.eye(4) + 0.1 * np.arange(4)[None, :]
    sims = torch.from_numpy(np.repeat(c, 2, axis=1) + 0.001 * -np.tile(np.arange(2), 4))  # same order as C
    got = metrics.average_semantic_precision(sims, c, 2)
    assert got["i2t"] == pytest.approx(100.0) and got["t2i"] == pytest.approx(100.0)
    worse = metrics.average_semantic_precision(-sims, c, 2)
    assert worse["i2t"] < 90.0 and worse["t2i"] < 90.0


@pytest.mark.parametrize("levels", [2, 1000])
def test_rank_agreement_is_the_mean_spearman(levels):
    rng = np.random.default_rng(7)
    n, cpi = 12, 5
    sims = rng.integers(0, levels, size=(n, n * cpi)).astype(np.float64)
    c = rng.integers(0, levels, size=(n, n)).astype(np.float32)
    c[3] = 1.0   # a constant row: no correlation, counts as 0
    s_img = sims.reshape(n, n, cpi).mean(2)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", st.ConstantInputWarning)   # row 3: rho is undefined (NaN)
        rho = [st.spearmanr(s_img[i], c[i])[0] for i in range(n)]
    want = float(np.mean(np.nan_to_num(rho, nan=0.0)))
    assert metrics.rank_agreement(sims, c, cpi, chunk_rows=5) == pytest.approx(want, abs=1e-12)


def test_semantic_metrics_check_shapes():
    with pytest.raises(ValueError, match=r"\(4, 4\) image x image"):
        metrics.rank_agreement(np.zeros((4, 20)), np.zeros((4, 20)))
    with pytest.raises(ValueError, match="captions"):
        metrics.average_semantic_precision(np.zeros((4, 19)), np.zeros((4, 4)))


def test_eccv_without_its_package_names_the_extra(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_eccv(name, *a, **k):
        if name == "eccv_caption":
            raise ImportError("No module named 'eccv_caption'")
        return real_import(name, *a, **k)

    metrics._eccv_package.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_eccv)
    try:
        with pytest.raises(ImportError, match=r'pip install "vsl_ext\[eccv\]"'):
            metrics.eccv_caption_metrics(np.zeros(metrics.COCO_5K_SHAPE, dtype=np.float32))
    finally:
        metrics._eccv_package.cache_clear()
