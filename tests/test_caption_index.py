"""CaptionIndex: parity with scikit-learn (tfidf) and pycocoevalcap (cider-d), dense references for
the batch kernels on every device (cpu, cuda, cuda-emulated), persistence and input validation."""
import math
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from vsl_ext import CaptionIndex
from vsl_ext._native import _C

from helpers import CAPTION_GROUPS as GROUPS
from helpers import CUDA

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco_captions"


def _flat(groups):
    return [c for g in groups for c in g]


def _coco_lines(name="test_caps.txt"):
    path = DATA / name
    if not path.exists():
        pytest.skip(f"shared COCO captions not found at {path}")
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _coco_groups(n_images, seed, name="test_caps.txt"):
    lines = _coco_lines(name)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(lines) // 5, size=n_images, replace=False)
    return [lines[5 * i:5 * i + 5] for i in pick]


# ------------------------------------------------------------------------------------------- tfidf
def _sklearn(groups, ngram_range):
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(ngram_range=ngram_range)
    X = vec.fit_transform(_flat(groups)).toarray()  # float64, (captions, vocab)
    ptr = np.cumsum([0] + [len(g) for g in groups])
    M = np.stack([X[ptr[i]:ptr[i + 1]].mean(0) for i in range(len(groups))])
    return vec, X, M


@pytest.mark.parametrize("ngram_range", [(1, 1), (1, 2), (1, 4), (2, 3)])
def test_tfidf_matches_sklearn(ngram_range):
    pytest.importorskip("sklearn")
    vec, X, M = _sklearn(GROUPS, ngram_range)
    index = CaptionIndex.from_captions(GROUPS, mode="tfidf", ngram_range=ngram_range)
    assert len(index) == len(GROUPS) and index.num_captions == len(_flat(GROUPS))
    names = index.feature_names()
    assert sorted(names) == sorted(vec.get_feature_names_out())
    assert index.vocab_size == len(names)
    # caption vectors, column-permuted into sklearn's order
    indptr, indices, data = index.caption_vectors()
    col = np.array([vec.vocabulary_[n] for n in names])
    ours = np.zeros_like(X)
    for p in range(index.num_captions):
        ours[p, col[indices[indptr[p]:indptr[p + 1]]]] = data[indptr[p]:indptr[p + 1]]
    np.testing.assert_allclose(ours, X, rtol=0, atol=1e-6)
    # batch similarities, with repeated ids
    rng = np.random.default_rng(0)
    for B in (1, 5, 17):
        ids = rng.integers(0, len(GROUPS), B)
        K = index.image_similarity(ids)
        assert K.dtype == torch.float32 and K.shape == (B, B) and K.device.type == "cpu"
        np.testing.assert_allclose(K.numpy(), M[ids] @ M[ids].T, rtol=0, atol=1e-6)
        assert torch.equal(K, K.T)
        cids = rng.integers(0, index.num_captions, B)
        S = index.caption_similarity(cids)
        np.testing.assert_allclose(S.numpy(), X[cids] @ X[cids].T, rtol=0, atol=1e-6)


def test_tfidf_empty_captions_give_zero_not_nan():
    index = CaptionIndex.from_captions(GROUPS)
    K = index.image_similarity(list(range(len(GROUPS))))
    assert torch.isfinite(K).all()
    assert (K[3] == 0).all() and (K[:, 3] == 0).all()  # image 3 has only a punctuation caption
    S = index.caption_similarity([5, 6, 7, 0])  # "...", "", then two real captions
    assert torch.isfinite(S).all() and (S[0] == 0).all() and (S[1] == 0).all()
    assert S[2, 2] == pytest.approx(1.0, abs=1e-6)


def test_tfidf_matches_sklearn_on_coco():
    pytest.importorskip("sklearn")
    groups = _coco_groups(300, seed=1)
    for ngram_range in [(1, 1), (1, 3)]:
        _, X, M = _sklearn(groups, ngram_range)
        index = CaptionIndex.from_captions(groups, ngram_range=ngram_range)
        ids = np.random.default_rng(2).integers(0, 300, 128)
        np.testing.assert_allclose(index.image_similarity(ids).numpy(), M[ids] @ M[ids].T, rtol=0, atol=1e-6)


def test_tfidf_tokenizer_and_lowercase_options():
    from sklearn.feature_extraction.text import TfidfVectorizer

    tok = lambda s: s.split()  # noqa: E731
    X = TfidfVectorizer(tokenizer=tok, token_pattern=None, lowercase=False).fit_transform(_flat(GROUPS)).toarray()
    index = CaptionIndex.from_captions(GROUPS, tokenizer=tok, lowercase=False)
    ids = np.arange(index.num_captions)
    np.testing.assert_allclose(index.caption_similarity(ids).numpy(), X @ X.T, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="whitespace"):
        CaptionIndex.from_captions([["a b"]], tokenizer=lambda s: [s])


# ----------------------------------------------------------------------------------------- cider-d
def _cider_reference(groups, ids, n=4, sigma=6.0, singleton=False):
    """Dense float64 K of cider-d image similarity, straight from the definition (numpy)."""
    caps = _flat(groups)
    ptr = np.cumsum([0] + [len(g) for g in groups])
    grams = []
    for c in caps:
        w = c.split()
        grams.append([{} for _ in range(n)])
        for k in range(1, n + 1):
            for i in range(len(w) - k + 1):
                g = tuple(w[i:i + k])
                grams[-1][k - 1][g] = grams[-1][k - 1].get(g, 0) + 1
    df = {}
    for i in range(len(groups)):
        seen = set()
        for p in range(ptr[i], ptr[i + 1]):
            for d in grams[p]:
                seen.update(d)
        for g in seen:
            df[g] = df.get(g, 0) + 1
    log_n = math.log(len(groups))
    vecs = [[{g: tf * (log_n - math.log(max(1, df[g]))) for g, tf in d.items()} for d in gp] for gp in grams]
    norms = [[math.sqrt(sum(v * v for v in d.values())) for d in vp] for vp in vecs]
    lens = [max(0, len(c.split()) - 1) for c in caps]

    def sim(p, q):
        tot = 0.0
        for k in range(n):
            val = sum(min(h, vecs[q][k].get(g, 0.0)) * vecs[q][k].get(g, 0.0) for g, h in vecs[p][k].items())
            if norms[p][k] and norms[q][k]:
                val /= norms[p][k] * norms[q][k]
            tot += val * math.exp(-((lens[p] - lens[q]) ** 2) / (2 * sigma ** 2))
        return tot / n * 10

    if singleton:
        return np.array([[sim(p, q) for q in ids] for p in ids])
    K = np.zeros((len(ids), len(ids)))
    for a, i in enumerate(ids):
        for b, j in enumerate(ids):
            K[a, b] = np.mean([sim(p, q) for p in range(ptr[i], ptr[i + 1]) for q in range(ptr[j], ptr[j + 1])])
    return K


def test_cider_hand_checked():
    index = CaptionIndex.from_captions([["a b"], ["c d"]], mode="cider-d")
    l2 = math.log(2)
    # identical caption: orders 1 and 2 match exactly, orders 3 and 4 are empty -> (1 + 1 + 0 + 0) / 4 * 10
    assert index.cider_d(["a b"], [0])[0] == pytest.approx(5.0, abs=1e-12)
    # "a a b" vs "a b": unigrams h = (a: 2 l, b: l), r = (a: l, b: l) -> 2 l^2 / (l sqrt5 * l sqrt2);
    # bigrams h = ("a a": l (unseen: df 0), "a b": l), r = ("a b": l) -> 1 / sqrt2; 2 vs 1 bigrams
    want = 10 * (2 / math.sqrt(10) + 1 / math.sqrt(2)) * math.exp(-1 / 72) / 4
    assert index.cider_d(["a a b"], [0])[0] == pytest.approx(want, abs=1e-12)
    assert l2 > 0
    # no shared n-gram, out-of-vocabulary tokens, empty candidate
    np.testing.assert_array_equal(index.cider_d(["zz zz", "", "c d"], [0, 0, 0]), [0.0, 0.0, 0.0])
    # mean over references: image 0 has references "a b" and "x y"
    two = CaptionIndex.from_captions([["a b", "x y"], ["c d"]], mode="cider-d")
    assert two.cider_d(["a b"], [0])[0] == pytest.approx(2.5, abs=1e-12)
    # image similarity = mean over caption pairs of CIDEr-D(p | q); p == q gives 5
    K = two.image_similarity([0, 1])
    assert K[1, 1].item() == pytest.approx(5.0, abs=1e-5)
    assert K[0, 0].item() == pytest.approx((5 + 0 + 0 + 5) / 4, abs=1e-5)
    assert K[0, 1].item() == 0 and K[1, 0].item() == 0


def test_cider_n_gram_in_every_image_has_zero_weight():
    # "a" is in every image: idf 0, so its norm is 0 and order 1 contributes 0 (no NaN)
    index = CaptionIndex.from_captions([["a"], ["a"]], mode="cider-d")
    assert index.cider_d(["a"], [1])[0] == 0.0
    assert torch.equal(index.image_similarity([0, 1]), torch.zeros(2, 2))


def test_cider_image_similarity_matches_dense_reference():
    groups = GROUPS + [["a man riding a horse", "a man riding a horse on a beach"], ["x"]]
    index = CaptionIndex.from_captions(groups, mode="cider-d")
    rng = np.random.default_rng(3)
    for B in (1, 4, 12, 40):
        ids = rng.integers(0, len(groups), B)
        K = index.image_similarity(ids)
        assert K.shape == (B, B) and K.dtype == torch.float32 and torch.isfinite(K).all()
        np.testing.assert_allclose(K.numpy(), _cider_reference(groups, ids), rtol=1e-5, atol=1e-5)
    cids = rng.integers(0, index.num_captions, 30)
    np.testing.assert_allclose(index.caption_similarity(cids).numpy(),
                               _cider_reference(groups, cids, singleton=True), rtol=1e-5, atol=1e-5)


def test_cider_image_similarity_matches_dense_reference_coco():
    groups = _coco_groups(60, seed=4)
    index = CaptionIndex.from_captions(groups, mode="cider-d")
    ids = np.random.default_rng(5).integers(0, 60, 24)
    K = index.image_similarity(ids).numpy()
    np.testing.assert_allclose(K, _cider_reference(groups, ids), rtol=1e-5, atol=1e-5)
    assert not np.allclose(K, K.T)  # CIDEr-D is not symmetric


def test_cider_d_matches_pycocoevalcap_on_coco():
    cider = pytest.importorskip("pycocoevalcap.cider.cider")
    groups = _coco_groups(200, seed=6, name="testall_caps.txt")
    rng = np.random.default_rng(7)
    # candidates: captions of other images, a reference itself, shuffled words, repeats and unseen words
    cands = []
    for i in range(200):
        other = groups[(i + 1 + rng.integers(0, 199)) % 200][rng.integers(0, 5)]
        words = groups[i][0].split()
        cands.append([other, groups[i][1], " ".join(rng.permutation(words)), "zzyzx " + other + " a a a",
                      words[0]][i % 5])
    gts = {i: groups[i] for i in range(200)}
    res = {i: [cands[i]] for i in range(200)}
    _, want = cider.Cider().compute_score(gts, res)
    index = CaptionIndex.from_captions(groups, mode="cider-d")
    got = index.cider_d(cands, np.arange(200))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    # the same references with the images in another order
    perm = rng.permutation(200)
    np.testing.assert_allclose(index.cider_d([cands[i] for i in perm], perm), want[perm], rtol=1e-9, atol=1e-9)


def test_cider_caption_similarity_matches_pycocoevalcap():
    # one caption per image: CIDEr-D(p | q) is pycocoevalcap's score of candidate p on image q
    cider = pytest.importorskip("pycocoevalcap.cider.cider")
    caps = [g[0] for g in _coco_groups(80, seed=8)]
    index = CaptionIndex.from_captions([[c] for c in caps], mode="cider-d")
    ids = np.arange(80)
    S = index.caption_similarity(ids).numpy()
    gts = {i: [caps[i]] for i in ids}
    for p in (0, 7, 41):
        _, want = cider.Cider().compute_score(gts, {i: [caps[p]] for i in ids})
        np.testing.assert_allclose(S[p], want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(index.cider_d([caps[p]] * 80, ids), want, rtol=1e-9, atol=1e-9)


def test_whitespace_split_matches_python():
    import sys

    spaces = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
    text = "a" + spaces + "b\u200bc" + "\u00a0d\u3000\u3000e\x1cf" + spaces + "ü"
    raw = text.encode("utf-8")
    spans = _C.caption_index_split_whitespace(np.frombuffer(raw, dtype=np.uint8)).reshape(-1, 2)
    assert [raw[s:s + n].decode() for s, n in spans] == text.split()


# ---------------------------------------------------------------------------------------- devices
@pytest.mark.parametrize("mode", ["tfidf", "cider-d"])
def test_batch_similarity_on_device(device, mode):
    """Image and caption similarity of batches (B up to 128 for tfidf, 40 for the slower cider-d
    reference) against scikit-learn / the dense CIDEr-D reference; a second call on a GPU uses the
    cached device arrays."""
    groups = GROUPS * 30 + [["a b c d e f g h"] * 9]
    index = CaptionIndex.from_captions(groups, mode=mode, ngram_range=(1, 2) if mode == "tfidf" else None)
    if mode == "tfidf":
        _, X, M = _sklearn(groups, (1, 2))
    rng = np.random.default_rng(9)
    for B in (1, 7, 128) if mode == "tfidf" else (1, 7, 40):
        ids = rng.integers(0, len(groups), B)
        want = M[ids] @ M[ids].T if mode == "tfidf" else _cider_reference(groups, ids)
        for _ in range(2):
            K = index.image_similarity(ids, device=device)
            assert K.device.type == device and K.dtype == torch.float32 and K.shape == (B, B)
            np.testing.assert_allclose(K.cpu().numpy(), want, rtol=1e-5, atol=1e-5)
        cids = rng.integers(0, index.num_captions, B)
        want = X[cids] @ X[cids].T if mode == "tfidf" else _cider_reference(groups, cids, singleton=True)
        S = index.caption_similarity(torch.from_numpy(cids).to(device), device=torch.device(device))
        np.testing.assert_allclose(S.cpu().numpy(), want, rtol=1e-5, atol=1e-5)


def test_long_rows_use_global_memory(device):
    """Captions longer than CAPTION_INDEX_SMEM_ROW_CAP n-grams: the CUDA kernels read their rows from
    global memory. (float32 sums over 16,000 n-grams: relative tolerance 1e-4.)"""
    long = " ".join(f"w{i}" for i in range(4000))
    groups = [[long, "w1 w2"], ["w3 w4 w5"]]
    index = CaptionIndex.from_captions(groups, mode="cider-d")
    assert index.caption_vectors()[0][1] > _C.CAPTION_INDEX_SMEM_ROW_CAP
    np.testing.assert_allclose(index.image_similarity([0, 1, 0], device=device).cpu().numpy(),
                               _cider_reference(groups, [0, 1, 0]), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(CUDA, reason="checks the error without a usable GPU")
def test_cuda_request_without_gpu_raises():
    with pytest.raises(RuntimeError, match="cuda"):
        CaptionIndex.from_captions(GROUPS).image_similarity([0, 1], device="cuda")


# ------------------------------------------------------------------------------------ persistence
@pytest.mark.parametrize("mode", ["tfidf", "cider-d"])
def test_save_load_round_trip(tmp_path, mode):
    index = CaptionIndex.from_captions(GROUPS, mode=mode, ngram_range=(1, 3) if mode == "tfidf" else None)
    path = tmp_path / "index.vslcap"
    index.save(path)
    assert os.listdir(tmp_path) == ["index.vslcap"]  # the temp file was renamed away
    loaded = CaptionIndex.load(str(path))
    assert (loaded.mode, loaded.ngram_range, len(loaded), loaded.num_captions, loaded.vocab_size) == (
        index.mode, index.ngram_range, len(index), index.num_captions, index.vocab_size)
    assert loaded.feature_names() == index.feature_names()
    ids = [0, 5, 2, 2, 4]
    assert torch.equal(loaded.image_similarity(ids), index.image_similarity(ids))
    assert torch.equal(loaded.caption_similarity(ids), index.caption_similarity(ids))
    if mode == "cider-d":
        cands = ["a man riding a horse", "two dogs", "déjà vu", ""]
        np.testing.assert_array_equal(loaded.cider_d(cands, [0, 1, 2, 3]), index.cider_d(cands, [0, 1, 2, 3]))
    clone = pickle.loads(pickle.dumps(index))
    assert torch.equal(clone.image_similarity(ids), index.image_similarity(ids))
    index.save(path)  # overwrite in place
    assert CaptionIndex.load(path).vocab_size == index.vocab_size


def test_load_rejects_bad_files(tmp_path):
    index = CaptionIndex.from_captions(GROUPS, mode="cider-d")
    path = tmp_path / "ix.bin"
    index.save(path)
    raw = path.read_bytes()

    def write(data):
        bad = tmp_path / "bad.bin"
        bad.write_bytes(data)
        return bad

    for cut in (0, 5, len(raw) // 3, len(raw) - 1):
        with pytest.raises(ValueError, match="truncated|checksum|not a readable"):
            CaptionIndex.load(write(raw[:cut]))
    flipped = bytearray(raw)
    flipped[-100] ^= 0x40
    with pytest.raises(ValueError, match="checksum"):
        CaptionIndex.load(write(bytes(flipped)))
    flipped = bytearray(raw)
    flipped[40] ^= 0x01  # inside the JSON header
    with pytest.raises(ValueError, match="checksum"):
        CaptionIndex.load(write(bytes(flipped)))
    with pytest.raises(ValueError, match="version 99"):
        CaptionIndex.load(write(raw[:8] + struct.pack("<I", 99) + raw[12:]))
    with pytest.raises(ValueError, match="magic"):
        CaptionIndex.load(write(b"NOTANIDX" + raw[8:]))
    with pytest.raises(ValueError):
        CaptionIndex.load(write(raw + b"trailing"))


def test_load_rejects_well_formed_files_with_unsafe_arrays(tmp_path):
    """Files with valid checksums whose arrays would make a kernel index out of bounds."""
    index = CaptionIndex.from_captions(GROUPS, mode="cider-d")
    bad = CaptionIndex(dict(index._a), dict(index._meta))
    cap_len = np.array(index._a["cap_len"])
    cap_len[0] = -3  # the CPU kernel's length-penalty table is indexed by length differences
    bad._a["cap_len"] = cap_len
    bad.save(tmp_path / "len.idx")
    with pytest.raises(ValueError, match="cap_len holds negative"):
        CaptionIndex.load(tmp_path / "len.idx")
    bad = CaptionIndex(dict(index._a), dict(index._meta))
    bad._a["cap_indptr"] = np.array(index._a["cap_indptr"])[::-1].copy()
    bad.save(tmp_path / "ptr.idx")
    with pytest.raises(ValueError, match="cap_indptr is not a valid offset array"):
        CaptionIndex.load(tmp_path / "ptr.idx")


def test_batch_kernels_reject_unsafe_arrays():
    """The CPU batch kernels check row offsets, feature ids and caption lengths themselves."""
    index = CaptionIndex.from_captions(GROUPS, mode="cider-d")
    a = index._a
    P = index.num_captions
    out = torch.empty(P, P)
    caps, gptr = np.arange(P, dtype=np.int64), np.arange(P + 1, dtype=np.int64)
    args = [a["cap_indptr"], a["cap_indices"], a["cap_data"], index._inv_norm(), a["cap_len"], index._bounds(), caps,
            gptr, 6.0, out.data_ptr(), 1]
    _C.caption_index_cider_matrix_cpu(*args)
    lens = np.array(a["cap_len"])
    lens[2] = -1
    with pytest.raises(ValueError, match="negative caption length"):
        _C.caption_index_cider_matrix_cpu(*args[:4], lens, *args[5:])
    indptr = np.array(a["cap_indptr"])
    indptr[3], indptr[4] = indptr[4] + 1, indptr[3]  # a row ending before it starts
    with pytest.raises(ValueError, match="bad row offsets"):
        _C.caption_index_gram_cpu(indptr, a["cap_indices"], a["cap_data"], index.vocab_size, caps, out.data_ptr(), 1)
    ids = np.array(a["cap_indices"])
    ids[0] = index.vocab_size
    with pytest.raises(IndexError, match="feature id out of range"):
        _C.caption_index_gram_cpu(a["cap_indptr"], ids, a["cap_data"], index.vocab_size, caps, out.data_ptr(), 1)
    with pytest.raises(IndexError, match="row 99 is out of range"):
        _C.caption_index_gram_cpu(a["cap_indptr"], a["cap_indices"], a["cap_data"], index.vocab_size,
                                  np.array([0, 99]), out.data_ptr(), 1)


# ------------------------------------------------------------------------------------- validation
def test_out_of_range_ids_raise_index_error():
    index = CaptionIndex.from_captions(GROUPS, mode="cider-d")
    with pytest.raises(IndexError, match="image id 6 "):
        index.image_similarity([0, 6])
    with pytest.raises(IndexError, match="image id -1 "):
        index.image_similarity(torch.tensor([-1, 0]))
    with pytest.raises(IndexError, match=f"caption id {index.num_captions} "):
        index.caption_similarity(np.array([0, index.num_captions]))
    with pytest.raises(IndexError, match="image id 100"):
        index.cider_d(["a"], [100])
    with pytest.raises(TypeError):
        index.image_similarity([0.0, 1.0])
    with pytest.raises(ValueError):
        index.image_similarity([[0, 1]])
    with pytest.raises(ValueError, match="candidates"):
        index.cider_d(["a", "b"], [0])
    assert index.image_similarity([]).shape == (0, 0)
    with pytest.raises(ValueError, match="mode='cider-d'"):
        CaptionIndex.from_captions(GROUPS).cider_d(["a"], [0])


@pytest.mark.parametrize("kw, name", [
    (dict(mode="bm25"), "mode"),
    (dict(mode="tfidf", ngram_range=(2, 1)), "ngram_range"),
    (dict(mode="tfidf", ngram_range=(0, 2)), "ngram_range"),
    (dict(mode="tfidf", ngram_range=(1, 2.5)), "ngram_range"),
    (dict(mode="tfidf", ngram_range=3), "ngram_range"),
    (dict(mode="cider-d", ngram_range=(2, 4)), "ngram_range"),
    (dict(mode="cider-d", sigma=0), "sigma"),
])
def test_bad_arguments_raise_value_error(kw, name):
    with pytest.raises(ValueError, match=name):
        CaptionIndex.from_captions(GROUPS, **kw)


def test_bad_groups():
    with pytest.raises(ValueError, match="groups\\[1\\]"):
        CaptionIndex.from_captions([["a"], []])
    with pytest.raises(TypeError):
        CaptionIndex.from_captions(["a dog", "a cat"])
    with pytest.raises(ValueError, match="empty"):
        CaptionIndex.from_captions([])


def test_from_scan_file(tmp_path):
    path = tmp_path / "caps.txt"
    path.write_text("a dog\na cat\nA DOG\na bird\n", encoding="utf-8")
    index = CaptionIndex.from_scan_file(path, captions_per_image=2)
    assert (len(index), index.num_captions, list(index.image_captions(1))) == (2, 4, [2, 3])
    assert index.image_similarity([0, 1])[0, 1].item() > 0
    with pytest.raises(ValueError, match="multiple of"):
        CaptionIndex.from_scan_file(path, captions_per_image=3)
    cider = CaptionIndex.from_scan_file(path, captions_per_image=2, mode="cider-d")
    assert cider.vocab_size == len(cider.feature_names())


def test_from_scan_file_coco():
    path = DATA / "testall_caps.txt"
    if not path.exists():
        pytest.skip("shared COCO captions not found")
    index = CaptionIndex.from_scan_file(path)
    assert (len(index), index.num_captions) == (5000, 25000)
    assert index.nbytes < 25000 * index.vocab_size * 4 / 10  # far below the dense float32 matrix
    K = index.image_similarity(np.arange(128))
    assert torch.isfinite(K).all() and (K.diagonal() > 0).all()


# ------------------------------------------------------------------------------------ properties
def test_random_corpora_match_references():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    pytest.importorskip("sklearn")
    word = st.sampled_from(["a", "dog", "Dog", "runs", "the", "x", "ßig", "ok!", "..", "zz", "ab"])
    caption = st.lists(word, max_size=7).map(" ".join)
    corpus = st.lists(st.lists(caption, min_size=1, max_size=4), min_size=1, max_size=6)

    @hypothesis.settings(max_examples=40, deadline=None, derandomize=True)
    @hypothesis.given(groups=corpus, ngram_hi=st.integers(1, 3), data=st.data())
    def check(groups, ngram_hi, data):
        ids = data.draw(st.lists(st.integers(0, len(groups) - 1), min_size=1, max_size=8))
        cider = CaptionIndex.from_captions(groups, mode="cider-d")
        np.testing.assert_allclose(cider.image_similarity(ids).numpy(), _cider_reference(groups, ids),
                                   rtol=1e-5, atol=1e-5)
        tfidf = CaptionIndex.from_captions(groups, ngram_range=(1, ngram_hi))
        try:
            _, _, M = _sklearn(groups, (1, ngram_hi))
        except ValueError:  # scikit-learn refuses a corpus without any token; ours is all zeros
            assert torch.equal(tfidf.image_similarity(ids), torch.zeros(len(ids), len(ids)))
            return
        np.testing.assert_allclose(tfidf.image_similarity(ids).numpy(), M[ids] @ M[ids].T, rtol=0, atol=1e-6)

    check()


@pytest.mark.parametrize("mode", ["tfidf", "cider-d"])
def test_corpus_without_tokens(tmp_path, mode):
    # no tokens at all: scikit-learn refuses such a corpus ("empty vocabulary"); the index is all zeros
    punct = " ... " if mode == "tfidf" else " "  # "..." is a token for cider-d's whitespace split
    index = CaptionIndex.from_captions([[""], [punct, "\u3000\t"]], mode=mode)
    assert index.vocab_size == 0 and index.feature_names() == []
    assert torch.equal(index.image_similarity([0, 1, 1]), torch.zeros(3, 3))
    assert torch.equal(index.caption_similarity([0, 1, 2]), torch.zeros(3, 3))
    index.save(tmp_path / "empty.idx")
    assert torch.equal(CaptionIndex.load(tmp_path / "empty.idx").image_similarity([1]), torch.zeros(1, 1))
    if mode == "cider-d":
        np.testing.assert_array_equal(index.cider_d(["a b", ""], [0, 1]), [0.0, 0.0])


@pytest.mark.parametrize("mode", ["tfidf", "cider-d"])
def test_corrupt_feature_ids_are_caught_before_a_gpu_upload(mode):
    """The CUDA kernels trust feature ids; the index checks them before the first upload."""
    index = CaptionIndex.from_captions([["apple banana", "cat dog"], ["eel fox"]], mode=mode)
    name = "img_indices" if mode == "tfidf" else "cap_indices"  # what image_similarity reads
    bad = np.array(index._a[name])
    bad[-1] = index.vocab_size
    index._a[name] = bad
    with pytest.raises(ValueError, match=f"{name} holds feature ids outside"):
        index.image_similarity([0, 1], device="cuda")
