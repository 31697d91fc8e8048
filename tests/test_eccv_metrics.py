"""vsl_ext.metrics.eccv_caption_metrics against the eccv-caption package's own compute_all_metrics
on rankings the test makes itself (top items by np.partition, then an exact sort of the candidates),
and top_ranked's order against np.argsort(kind="stable")."""
import numpy as np
import pytest
import torch

from vsl_ext import metrics

eccv_caption = pytest.importorskip("eccv_caption", reason='needs eccv-caption (pip install "vsl_ext[eccv]")')


@pytest.fixture(scope="module")
def package():
    return eccv_caption.Metrics()


def _oracle_ranking(sims, k):
    """Each row's k best columns in stable descending order, NaN as -inf: the k-th best value of
    each row by np.partition, then all candidates (scores >= it) sorted by (row, -score, column)."""
    x = np.where(np.isnan(sims), -np.inf, sims)
    kth = -np.partition(-x, k - 1, axis=1)[:, k - 1]
    rows, cols = np.nonzero(x >= kth[:, None])
    order = np.lexsort((cols, -x[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    first = np.searchsorted(rows, np.arange(x.shape[0]))
    place = np.arange(rows.size) - first[rows]
    keep = place < k
    out = np.full((x.shape[0], k), -1, dtype=np.int64)
    out[rows[keep], place[keep]] = cols[keep]
    assert (out >= 0).all()
    return out


def _package_scores(package, sims, ids=None, k_i2t=50, k_t2i=20):
    image_ids, caption_ids = ids if ids is not None else metrics.coco_5k_test_ids()
    s = np.asarray(sims, dtype=np.float32) if not isinstance(sims, torch.Tensor) else sims.float().numpy()  # exact
    i2t = {int(i): caption_ids[row].tolist() for i, row in zip(image_ids, _oracle_ranking(s, k_i2t))}
    t2i = {int(c): image_ids[row].tolist() for c, row in zip(caption_ids, _oracle_ranking(s.T.copy(), k_t2i))}
    return package.compute_all_metrics(i2t, t2i, target_metrics=("eccv_r1", "eccv_map_at_r", "eccv_rprecision",
                                                                "cxc_recalls", "coco_5k_recalls"), Ks=(1, 5, 10))


def _assert_same(got, want):
    assert set(got) == set(metrics.ECCV_KEYS) <= set(want)
    for k in metrics.ECCV_KEYS:
        for d in ("i2t", "t2i"):
            assert got[k][d] == pytest.approx(float(want[k][d]), abs=1e-12), (k, d)


def test_the_package_reads_no_further_than_the_oracles_lists(package):
    # the oracle passes the first 50 (i2t) and 20 (t2i) items; the package reads max(10, positives)
    assert max(len(v) for g in (package.eccv_gts, package.cxc_gts) for v in g["i2t"].values()) <= 50
    assert max(len(v) for g in (package.eccv_gts, package.cxc_gts) for v in g["t2i"].values()) <= 20


def test_random_matrix_with_ties_in_shuffled_order_equals_the_package(package):
    # rows and columns shuffled, with the ids that say so; 65 score levels, so ties everywhere
    rng = np.random.default_rng(0)
    sims = rng.integers(0, 65, size=metrics.COCO_5K_SHAPE, dtype=np.int8).astype(np.float32) / 64
    sims[7, :300] = np.nan
    image_ids, caption_ids = metrics.coco_5k_test_ids()
    ids = image_ids[rng.permutation(5000)], caption_ids[rng.permutation(25000)]
    got = metrics.eccv_caption_metrics(sims, image_ids=ids[0], caption_ids=ids[1])
    _assert_same(got, _package_scores(package, sims, ids))


def test_near_perfect_matrix_equals_the_package(package):
    # every caption scores highest with its own image (COCO R@1 = 1), its ECCV positives next
    rng = np.random.default_rng(1)
    image_ids, caption_ids = metrics.coco_5k_test_ids()
    row = {int(i): r for r, i in enumerate(image_ids)}
    col = {int(c): j for j, c in enumerate(caption_ids)}
    sims = rng.random(metrics.COCO_5K_SHAPE, dtype=np.float32) * 0.5
    for c, imgs in package.eccv_gts["t2i"].items():
        for i in imgs[::2]:  # half of the plausible matches
            sims[row[i], col[c]] += 0.5
    sims[np.arange(25000) // 5, np.arange(25000)] += 2.0
    t = torch.from_numpy(sims).to(torch.float16)   # float16 input (ties again)
    got = metrics.eccv_caption_metrics(t)
    want = _package_scores(package, t)
    _assert_same(got, want)
    assert got["coco_5k_r1"] == {"i2t": 1.0, "t2i": 1.0}
    assert 0.3 < got["eccv_map_at_r"]["t2i"] < 1.0


@pytest.mark.parametrize("shape", [(1000, 5000), (5000, 24995), (25000, 5000)])
def test_wrong_shape_says_what_is_expected(shape):
    with pytest.raises(ValueError, match=r"\(5000 images, 25000 captions\) in SCAN's testall order"):
        metrics.eccv_caption_metrics(np.zeros(shape, dtype=np.float32))


def test_ids_that_are_not_the_test_set_are_refused():
    sims = np.zeros(metrics.COCO_5K_SHAPE, dtype=np.float32)
    image_ids, caption_ids = metrics.coco_5k_test_ids()
    bad = caption_ids.copy()
    bad[0] = bad[1]
    with pytest.raises(ValueError, match="caption_ids must be the 25,000 COCO ids"):
        metrics.eccv_caption_metrics(sims, caption_ids=bad)
    with pytest.raises(ValueError, match="image_ids must be the 5,000 COCO ids"):
        metrics.eccv_caption_metrics(sims, image_ids=image_ids[:4999])


def test_scan_order_of_the_package_data():
    image_ids, caption_ids = metrics.coco_5k_test_ids()
    assert image_ids.shape == (5000,) and caption_ids.shape == (25000,)
    assert len(set(image_ids.tolist())) == 5000 and len(set(caption_ids.tolist())) == 25000


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_ranked_is_a_stable_descending_sort(dtype):
    rng = np.random.default_rng(3)
    x = (rng.integers(0, 6, size=(40, 300))).astype(dtype)
    x[0] = 1.0
    x[1, ::7] = np.nan
    x[2, :5] = np.inf
    x[3, -5:] = -np.inf
    for k in (1, 7, 300):
        want = np.argsort(-np.where(np.isnan(x), -np.inf, x), axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(metrics.top_ranked(x, k, chunk_elements=1000), want)
    with pytest.raises(ValueError, match="k must be"):
        metrics.top_ranked(x, 301)
