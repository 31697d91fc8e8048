"""Bad-input campaign, data entry points (issue 12): CaptionIndex (constructors, load, the similarity
queries, cider_d), metrics.recall_at_k / evaluate_protocol, PrecompSplit.

Expected values come from independent oracles: scikit-learn's TfidfVectorizer and pycocoevalcap's
Cider (skipped when absent), and the retrieval ranks written out below as loops over the documented
definition. Files are crafted byte by byte; every bad one must raise ValueError (or an OSError
naming the path) and never crash or read past an array.
"""
import io
import json
import math
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bad_input import cell
from vsl_ext import CaptionIndex, caption_index_file, metrics
from vsl_ext.harness.data.precomp import PrecompSplit

CTOR, LOAD, QUERY, CIDER = ("CaptionIndex constructors", "CaptionIndex.load",
                            "CaptionIndex.image_similarity / caption_similarity", "CaptionIndex.cider_d")
METRICS, PRECOMP = "metrics.recall_at_k / evaluate_protocol", "PrecompSplit"
GROUPS = [["a dog runs on the beach", "a brown dog"], ["a red car", "the car is red", "red"], ["x y z"],
          ["a dog and a car"]]
NAN, INF = math.nan, math.inf

# Text Python's str.split() splits and the native tokenizer must split the same (pycocoevalcap's
# CIDEr-D splits with str.split()), and text it must not split.
ODD_TEXT = {
    "ideographic space": "a\u3000dog runs", "line separator": "a\u2028dog", "NEL": "a\x85dog on\x1cthe beach",
    "unit separators": "dog\x1f car\x1e red", "zero-width space (not whitespace)": "a\u200bdog runs",
    "NUL": "a\x00dog runs", "lone surrogate": "a \ud800 dog", "emoji and RTL": "a 🐕 dog \u05d0\u05d1 runs",
    "combining marks": "a do\u0301g runs", "empty": "", "whitespace only": " \t\u3000 ",
}


# ------------------------------------------------------------------------------ constructors
@cell(CTOR, "text (Unicode, empty)")
@pytest.mark.parametrize("name", sorted(ODD_TEXT))
def test_tfidf_of_odd_text_matches_scikit_learn(name):
    sklearn = pytest.importorskip("sklearn.feature_extraction.text")
    groups = [g + [ODD_TEXT[name]] if i == 0 else g for i, g in enumerate(GROUPS)]
    caps = [c for g in groups for c in g]
    vec = sklearn.TfidfVectorizer().fit_transform(caps).toarray() if any(
        len(t) > 1 for c in caps for t in c.split()) else np.zeros((len(caps), 1))
    owner = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    means = np.stack([vec[owner == i].mean(0) for i in range(len(groups))])
    got = CaptionIndex.from_captions(groups).image_similarity(range(len(groups)))
    np.testing.assert_allclose(got.numpy(), means @ means.T, rtol=1e-5, atol=1e-6)


def _cider_oracle(candidates, references):
    cider = pytest.importorskip("pycocoevalcap.cider.cider_scorer")
    scorer = cider.CiderScorer(n=4, sigma=6.0)
    for cand, refs in zip(candidates, references):
        scorer += (cand, refs)
    scorer.compute_doc_freq()
    scorer.ref_len = np.log(float(len(scorer.crefs)))
    return np.array(scorer.compute_cider())


@cell(CIDER, "text (Unicode, empty)")
@pytest.mark.parametrize("name", sorted(ODD_TEXT))
def test_cider_d_of_odd_text_matches_pycocoevalcap(name):
    """The candidate (and a reference) holds the odd text. pycocoevalcap's document frequencies are
    over its (candidate, references) pairs, the index's over its images: one pair per image."""
    groups = [g + [ODD_TEXT[name]] if i == 1 else g for i, g in enumerate(GROUPS)]
    index = CaptionIndex.from_captions(groups, mode="cider-d")
    candidates, images = [ODD_TEXT[name], ODD_TEXT[name] + " red car", "a dog runs", "x"], [1, 0, 2, 3]
    want = _cider_oracle(candidates, [groups[i] for i in images])
    np.testing.assert_allclose(index.cider_d(candidates, images), want, rtol=1e-6, atol=1e-9)


BAD_GROUPS = [([], ValueError, "groups is empty"), ([[]], ValueError, r"groups\[0\] is empty"),
              ("captions", TypeError, "groups must be a list"), (None, TypeError, "groups must be a list"),
              (["a caption"], TypeError, r"groups\[0\] must be a list of caption strings, got str"),
              ([["a"], [b"bytes"]], TypeError, r"groups\[1\] holds a bytes"),
              ([["a"], [None]], TypeError, r"groups\[1\] holds a NoneType"), ([["a"], 5], TypeError, r"groups\[1\]")]


@cell(CTOR, "shape / rank")
@pytest.mark.parametrize("mode", ["tfidf", "cider-d"])
@pytest.mark.parametrize("groups, error, message", BAD_GROUPS, ids=[repr(g)[:14] for g, _, _ in BAD_GROUPS])
def test_constructor_rejects_bad_groups(mode, groups, error, message):
    with pytest.raises(error, match=message):
        CaptionIndex.from_captions(groups, mode=mode)


@cell(CTOR, "text (Unicode, empty)", cases=2)
def test_index_of_empty_captions_only():
    """No token anywhere: an empty vocabulary, zero similarities, CIDEr-D 0."""
    for mode in ("tfidf", "cider-d"):
        index = CaptionIndex.from_captions([[""], ["", " "]], mode=mode)
        assert index.vocab_size == 0
        assert index.image_similarity([0, 1, 1]).abs().sum().item() == 0.0
    assert index.cider_d(["a dog"], [1]).tolist() == [0.0]


@cell(CTOR, "other arguments")
@pytest.mark.parametrize("kw, message", [({"mode": "bm25"}, "mode must be one of"),
                                         ({"ngram_range": (0, 2)}, "ngram_range must satisfy"),
                                         ({"ngram_range": (1.0, 2)}, "ngram_range must be a pair of integers"),
                                         ({"mode": "cider-d", "sigma": NAN}, "sigma must be a finite number > 0"),
                                         ({"mode": "cider-d", "sigma": 0}, "sigma must be a finite number > 0"),
                                         ({"lowercase": 1}, "lowercase must be a bool"),
                                         ({"token_pattern": "("}, "token_pattern is not a valid regular expression")],
                         ids=lambda v: str(v)[:24])
def test_constructor_rejects_bad_options(kw, message):
    with pytest.raises((ValueError, TypeError), match=message):
        CaptionIndex.from_captions(GROUPS, **kw)


@cell(CTOR, "corrupt file", cases=3)
def test_from_scan_file_bad_files(tmp_path):
    (tmp_path / "utf8.txt").write_bytes(b"a dog\nthe \xff cat\n")
    with pytest.raises(ValueError, match=r"utf8.txt, line 2: not valid utf-8"):
        CaptionIndex.from_scan_file(tmp_path / "utf8.txt", captions_per_image=1)
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="has 0 caption lines"):
        CaptionIndex.from_scan_file(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="caption file not found"):
        CaptionIndex.from_scan_file(tmp_path / "missing.txt")


# ------------------------------------------------------------------------------ load
@pytest.fixture(scope="module", params=["tfidf", "cider-d"])
def saved(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("index") / f"{request.param}.vslidx"
    CaptionIndex.from_captions(GROUPS, mode=request.param).save(path)
    return path


def _load_fails(path, message):
    with pytest.raises(ValueError, match=message):
        CaptionIndex.load(path)


@cell(LOAD, "truncated file", cases=7)
def test_load_truncated(saved, tmp_path):
    data = saved.read_bytes()
    hlen = struct.unpack_from("<Q", data, 12)[0]
    for cut in (0, 7, 23, 24 + hlen // 2, 24 + hlen, len(data) // 2 + 24 + hlen // 2, len(data) - 1):
        (tmp_path / "cut").write_bytes(data[:cut])
        _load_fails(tmp_path / "cut", "not a readable vsl_ext CaptionIndex file: .*(truncated|checksum)")


@cell(LOAD, "foreign / wrong-version file", cases=7)
def test_load_foreign_and_wrong_version(saved, tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(100))
    torch.save({"x": 1}, tmp_path / "b.pth")
    (tmp_path / "c.txt").write_text("a dog\n" * 50)
    (tmp_path / "d").write_bytes(b"VSLCAPIX" + bytes(200))
    for name in ("a.npy", "b.pth", "c.txt"):
        _load_fails(tmp_path / name, "wrong magic bytes")
    _load_fails(tmp_path / "d", "format version 0; this vsl_ext reads versions")
    data = bytearray(saved.read_bytes())
    struct.pack_into("<I", data, 8, 99)
    (tmp_path / "v99").write_bytes(bytes(data))
    _load_fails(tmp_path / "v99", "format version 99; this vsl_ext reads versions")
    with pytest.raises(IsADirectoryError):
        CaptionIndex.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        CaptionIndex.load(tmp_path / "missing")


def _rewrite_header(path, out, change):
    """The file with its JSON header changed by ``change(header)`` and its checksum made right."""
    data = path.read_bytes()
    magic, version, hlen, _ = struct.unpack_from("<8sIQI", data, 0)
    header = json.loads(data[24:24 + hlen])
    change(header)
    hbytes = json.dumps(header).encode()
    hbytes += b" " * ((-(24 + len(hbytes))) % 64)
    out.write_bytes(struct.pack("<8sIQI", magic, version, len(hbytes), zlib.crc32(hbytes)) + hbytes + data[24 + hlen:])


@cell(LOAD, "empty")
def test_load_empty_file(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    _load_fails(tmp_path / "empty", r"truncated \(0 bytes\)")


@cell(LOAD, "corrupt file", cases=6)
def test_load_corrupt(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    flipped = bytearray(data)
    flipped[30] ^= 0x20
    (tmp_path / "h").write_bytes(bytes(flipped))
    _load_fails(tmp_path / "h", "header checksum mismatch")
    flipped = bytearray(data)
    flipped[-3] ^= 0x01
    (tmp_path / "p").write_bytes(bytes(flipped))
    _load_fails(tmp_path / "p", "payload checksum mismatch")
    out = tmp_path / "x"
    _rewrite_header(saved, out, lambda h: h.update(format="numpy"))
    _load_fails(out, "header names format 'numpy'")
    _rewrite_header(saved, out, lambda h: h["meta"].update(mode="phrases"))
    _load_fails(out, "mode 'phrases' does not exist in format version 1")
    _rewrite_header(saved, out, lambda h: h["arrays"][0].update(offset=10 ** 9))
    _load_fails(out, "lies outside the payload")
    _rewrite_header(saved, out, lambda h: h["arrays"][0].update(dtype="<f8"))
    _load_fails(out, "array img_ptr has dtype float64")


# Arrays that a buggy writer could produce with right checksums: load must refuse each, or the
# queries must still stay inside the arrays (the sanitizer build checks that part).
def _mutations(mode):
    yield "cap_indices past the vocabulary", lambda a: a["cap_indices"].__setitem__(0, 10 ** 6)
    yield "negative cap_indices", lambda a: a["cap_indices"].__setitem__(0, -1)
    yield "img_ptr decreasing", lambda a: a["img_ptr"].__setitem__(1, 5)
    yield "cap_indptr past the end", lambda a: a["cap_indptr"].__setitem__(-1, 10 ** 6)
    yield "tok_off past the blob", lambda a: a["tok_off"].__setitem__(-1, 10 ** 6)
    yield "feat_prefix out of range", lambda a: a["feat_prefix"].__setitem__(-1, 10 ** 6)
    yield "feat_last negative", lambda a: a["feat_last"].__setitem__(-1, -7)
    yield "order_ptr inconsistent", lambda a: a["order_ptr"].__setitem__(-1, a["order_ptr"][-1] + 3)
    yield "duplicate tokens", lambda a: a["tok_blob"].__setitem__(slice(None), ord("a"))
    if mode == "tfidf":
        yield "img_indices past the vocabulary", lambda a: a["img_indices"].__setitem__(0, 10 ** 6)
    else:
        yield "negative cap_len", lambda a: a["cap_len"].__setitem__(0, -1)


@pytest.mark.parametrize("mode, mutation", [pytest.param(mode, name, marks=cell(LOAD, "corrupt file"), id=f"{mode}-{name}")
                                            for mode in ("tfidf", "cider-d") for name, _ in _mutations(mode)])
def test_load_inconsistent_arrays_with_valid_checksums(tmp_path, mode, mutation):
    index = CaptionIndex.from_captions(GROUPS, mode=mode, ngram_range=(1, 2) if mode == "tfidf" else None)
    arrays = {k: np.array(v) for k, v in index._a.items()}
    dict(_mutations(mode))[mutation](arrays)
    caption_index_file.write(tmp_path / "bad", arrays, index._meta)
    try:
        loaded = CaptionIndex.load(tmp_path / "bad")
    except ValueError as exc:
        assert "not a readable vsl_ext CaptionIndex file" in str(exc)
        return
    try:   # accepted: every query must answer or raise, inside the arrays
        loaded.image_similarity([0, 1, 2, 3])
        loaded.caption_similarity(range(loaded.num_captions))
        if mode == "cider-d":
            loaded.cider_d(["a dog runs", "red car"], [0, 1])
        loaded.feature_names()
    except (ValueError, IndexError):
        pass


# ------------------------------------------------------------------------------ queries: ids
BAD_IDS = [([4], IndexError, "image id 4 is out of range for an index of 4 images"),
           ([-1], IndexError, "image id -1 is out of range"), ([2 ** 63 - 1], IndexError, "is out of range"),
           ([2 ** 64], IndexError, "image id 18446744073709551616 is out of range"),
           ([1, -2 ** 70], IndexError, "image id -1180591620717411303424 is out of range"),
           (np.array([2 ** 64 - 1], dtype=np.uint64), IndexError, "image id 18446744073709551615 is out of range"),
           ([1.0], TypeError, "image_ids must hold integers, got dtype float64"),
           (np.array([0.5]), TypeError, "must hold integers"), (torch.tensor([1.0]), TypeError, "torch.float32 tensor"),
           ([True], TypeError, "image_ids must hold integers, got dtype bool"),
           (torch.tensor([True]), TypeError, "torch.bool tensor"), ([[0, 1]], ValueError, "image_ids must be 1-D"),
           ("01", TypeError, "must hold integers"), (None, TypeError, "must hold integers"),
           (3, TypeError, "image_ids must be a 1-D sequence of ints, got a single int"),
           (torch.zeros(2, dtype=torch.int64, device="meta"), ValueError, "must be a CPU or CUDA tensor")]


@cell(QUERY, "ids")
@pytest.mark.parametrize("mode", ["tfidf", "cider-d"])
@pytest.mark.parametrize("ids, error, message", BAD_IDS, ids=[repr(i)[:18] for i, _, _ in BAD_IDS])
def test_queries_reject_bad_ids(mode, ids, error, message):
    index = CaptionIndex.from_captions(GROUPS, mode=mode)
    with pytest.raises(error, match=message):
        index.image_similarity(ids)
    for_captions = message.replace("image", "caption").replace("id 4 is", "id 7 is").replace("4 captions", "7 captions")
    with pytest.raises(error, match=for_captions):
        index.caption_similarity(ids if not (isinstance(ids, list) and ids == [4]) else [7])
    if mode == "cider-d" and ids is not None and not isinstance(ids, (int, str)):
        with pytest.raises(error, match=message):
            index.cider_d(["a dog"] * len(ids), ids)


@cell(QUERY, "ids", cases=4)
def test_queries_take_any_integer_ids():
    index = CaptionIndex.from_captions(GROUPS)
    want = index.image_similarity([3, 0, 0])
    for ids in (np.array([3, 0, 0], dtype=np.uint8), (np.int16(3), 0, 0), torch.tensor([3, 0, 0], dtype=torch.int32),
                np.array([3, 99, 0, 0])[[0, 2, 3]]):
        assert torch.equal(index.image_similarity(ids), want)
    assert index.image_similarity([]).shape == (0, 0)


@cell(CIDER, "other arguments", cases=5)
def test_cider_d_rejects_bad_candidates():
    index = CaptionIndex.from_captions(GROUPS, mode="cider-d")
    for candidates, error, message in [("a dog", TypeError, "candidates must be a list of caption strings"),
                                       ([b"a dog"], TypeError, "candidates must be strings, got bytes"),
                                       ([None], TypeError, "candidates must be strings, got NoneType"),
                                       (["a", "b"], ValueError, "image_ids has 1 entries but candidates has 2")]:
        with pytest.raises(error, match=message):
            index.cider_d(candidates, [0])
    with pytest.raises(ValueError, match="cider_d needs an index built with mode='cider-d'"):
        CaptionIndex.from_captions(GROUPS).cider_d(["a"], [0])


# ------------------------------------------------------------------------------ metrics
def _ranks_oracle(s, cpi):
    """0-based ranks by the documented rule, as loops: wrong items scored >= the true one (or NaN) count;
    a NaN true score counts as -inf."""
    s = np.asarray(s, dtype=np.float64)
    n_img = s.shape[0]

    def at_least(x, true):
        return math.isnan(x) or x >= true

    def true(x):
        return -math.inf if math.isnan(x) else x

    i2t = [sum(at_least(s[i, c], max(true(s[i, t]) for t in range(i * cpi, i * cpi + cpi)))
               for c in range(s.shape[1]) if c // cpi != i) for i in range(n_img)]
    t2i = [sum(at_least(s[j, c], true(s[c // cpi, c])) for j in range(n_img) if j != c // cpi)
           for c in range(s.shape[1])]
    return np.array(i2t), np.array(t2i)


def _recalls(i2t, t2i):
    out = {f"{p}_r{k}": 100.0 * float(np.mean(r < k)) for p, r in (("i2t", i2t), ("t2i", t2i)) for k in (1, 5, 10)}
    out["i2t_medr"], out["t2i_medr"] = float(np.floor(np.median(i2t)) + 1), float(np.floor(np.median(t2i)) + 1)
    return out


@cell(METRICS, "NaN", cases=60)
@cell(METRICS, "±inf", cases=60)
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 3), st.data())
def test_recall_with_ties_nan_and_infinities_follows_the_definition(n_img, cpi, data):
    values = st.sampled_from([0.0, 0.5, 1.0, -1.0, NAN, INF, -INF, 1e38, -3.4e38])
    s = np.array(data.draw(st.lists(values, min_size=n_img * n_img * cpi, max_size=n_img * n_img * cpi)),
                 dtype=np.float32).reshape(n_img, n_img * cpi)
    got = metrics.recall_at_k(s, cpi, chunk_elements=data.draw(st.sampled_from([1, 7, 1 << 25])))
    want = _recalls(*_ranks_oracle(s, cpi))
    assert {k: got[k] for k in want} == want


@cell(METRICS, "huge (1e38, dtype max)", cases=2)
def test_recall_huge_scores_and_exact_integers():
    s = np.array([[3.4e38, 3.4e38, 1e38, -3.4e38], [-1e38, 1e38, 3.4e38, 3.3e38]], dtype=np.float32)
    assert metrics.recall_at_k(s, 2)["i2t_r1"] == _recalls(*_ranks_oracle(s, 2))["i2t_r1"]
    ints = np.array([[2 ** 40 + 1, 2 ** 40], [2 ** 40, 2 ** 40 + 1]], dtype=np.int64)   # float32 would tie them
    assert metrics.recall_at_k(ints, 1)["rsum"] == 600.0
    with pytest.raises(ValueError, match="integers beyond 2\\*\\*53"):
        metrics.recall_at_k(np.array([[2 ** 60, 0], [0, 1]], dtype=np.int64), 1)


@cell(METRICS, "n = 1")
def test_recall_one_image():
    assert metrics.recall_at_k(np.array([[0.1, 0.2, NAN]]), 3) == pytest.approx(
        {**_recalls(np.array([0]), np.array([0, 0, 0])), "i2t_meanr": 1.0, "t2i_meanr": 1.0, "rsum": 600.0})


BAD_SIMS = [(np.zeros(10), ValueError, r"sims must be a 2-D \(images x captions\) matrix"),
            (np.zeros((2, 3, 4)), ValueError, "sims must be a 2-D"),
            (np.zeros((2, 9)), ValueError, r"sims has shape \(2, 9\) but 2 images with 5 captions each need 10"),
            (np.zeros((0, 0)), ValueError, "sims must be non-empty"),
            (np.zeros((2, 0)), ValueError, "need 10 caption columns"),
            ([[1.0] * 5], TypeError, "sims must be a numpy array or torch.Tensor, got list"),
            (np.zeros((1, 5), dtype=object), TypeError, "sims must hold real numbers"),
            (np.zeros((1, 5), dtype=bool), TypeError, "sims must hold real numbers"),
            (np.array([["a"] * 5]), TypeError, "sims must hold real numbers"),
            (torch.zeros(1, 5, dtype=torch.complex64), TypeError, "sims must hold real numbers"),
            (torch.zeros(1, 5, dtype=torch.bool), TypeError, "sims must hold real numbers")]


@pytest.mark.parametrize("sims, error, message", [
    pytest.param(*case, marks=cell(METRICS, "dtype" if case[1] is TypeError and not isinstance(case[0], list)
                                   else "empty" if "empty" in case[2] or "(2, 0)" in str(getattr(case[0], "shape", ""))
                                   else "shape / rank"), id=f"{type(case[0]).__name__}-{i}")
    for i, case in enumerate(BAD_SIMS)])
def test_recall_rejects_bad_sims(sims, error, message):
    with pytest.raises(error, match=message):
        metrics.recall_at_k(sims)
    with pytest.raises(error, match=message):
        metrics.evaluate_protocol(sims, "full")


@cell(METRICS, "other arguments")
@pytest.mark.parametrize("call, message", [
    (lambda s: metrics.recall_at_k(s, 0), "captions_per_image must be a positive int"),
    (lambda s: metrics.recall_at_k(s, True), "captions_per_image must be a positive int"),
    (lambda s: metrics.recall_at_k(s, 2.5), "captions_per_image must be a positive int"),
    (lambda s: metrics.recall_at_k(s, "5"), "captions_per_image must be a positive int"),
    (lambda s: metrics.evaluate_protocol(s, "coco"), "protocol must be one of"),
    (lambda s: metrics.evaluate_protocol(s, None), "protocol must be one of"),
    (lambda s: metrics.evaluate_protocol(s, "coco1k"), "coco1k needs a multiple of 1,000 images"),
    (lambda s: metrics.evaluate_protocol(s, "coco5k"), "coco5k evaluates 5000 images, got 2"),
    (lambda s: metrics.evaluate_protocol(s, "f30k1k"), "f30k1k evaluates 1000 images, got 2")], ids=range(9))
def test_metrics_reject_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call(np.zeros((2, 10)))


@cell(METRICS, "dtype", cases=3)
def test_recall_numpy_integer_layout_and_dtypes():
    s = np.random.default_rng(0).random((3, 15))
    want = metrics.recall_at_k(s, 5)
    assert metrics.recall_at_k(s, np.int64(5)) == want
    assert metrics.recall_at_k(torch.from_numpy(s).float(), 5)["rsum"] == metrics.recall_at_k(s.astype(np.float32))["rsum"]
    half = s.astype(np.float16)
    assert metrics.recall_at_k(half, 5) == metrics.recall_at_k(half.astype(np.float64), 5)


# ------------------------------------------------------------------------------ PrecompSplit
CAPS = "".join(f"caption {i}\n" for i in range(10)).encode()
GOOD = np.random.default_rng(1).random((2, 3, 4)).astype(np.float32)


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, a=GOOD)
    return buf.getvalue()


BAD_FEATURES = {
    "truncated data": ("truncated file", lambda: _npy(GOOD)[:-5], "not a plain numeric .npy array"),
    "truncated header": ("truncated file", lambda: _npy(GOOD)[:40], "not a plain numeric .npy array"),
    "truncated to the magic": ("truncated file", lambda: _npy(GOOD)[:6], "not a plain numeric .npy array"),
    "empty file": ("empty", lambda: b"", "not a plain numeric .npy array"),
    "text file": ("foreign / wrong-version file", lambda: b"hello\n", "not a plain numeric .npy array"),
    ".npz archive": ("foreign / wrong-version file", _npz, "is a NpzFile archive, not one .npy array"),
    "object array": ("dtype", lambda: _npy(np.array([[1, None]], dtype=object)), "not a plain numeric .npy array"),
    "int32": ("dtype", lambda: _npy(GOOD.astype(np.int32)), "has dtype int32; expected float features"),
    "bool": ("dtype", lambda: _npy(GOOD > 0.5), "has dtype bool; expected float features"),
    "complex": ("dtype", lambda: _npy(GOOD.astype(np.complex64)), "has dtype complex64; expected float features"),
    "structured": ("dtype", lambda: _npy(np.zeros((2, 3), dtype=[("a", "<f4")])), "expected float features"),
    "zero regions": ("empty", lambda: _npy(np.zeros((2, 0, 4), np.float32)), r"is empty \(shape \(2, 0, 4\)\)"),
    "zero features": ("empty", lambda: _npy(np.zeros((2, 3, 0), np.float32)), r"is empty \(shape \(2, 3, 0\)\)"),
    "1-D": ("shape / rank", lambda: _npy(np.zeros(2, np.float32)), r"has shape \(2,\); expected"),
    "4-D": ("shape / rank", lambda: _npy(np.zeros((2, 3, 4, 1), np.float32)), r"has shape \(2, 3, 4, 1\); expected"),
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=cell(PRECOMP, BAD_FEATURES[n][0]), id=n)
                                  for n in sorted(BAD_FEATURES)])
@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "read"])
def test_precomp_rejects_bad_feature_files(tmp_path, name, mmap):
    _, make, message = BAD_FEATURES[name]
    (tmp_path / "test_ims.npy").write_bytes(make())
    (tmp_path / "test_caps.txt").write_bytes(CAPS)
    with pytest.raises(ValueError, match=message):
        PrecompSplit(str(tmp_path), "test", mmap=mmap)


@cell(PRECOMP, "dtype", cases=3)
@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "read"])
def test_precomp_other_float_layouts_give_the_stored_values(tmp_path, mmap):
    (tmp_path / "test_caps.txt").write_bytes(CAPS)
    for arr in (GOOD.astype(np.float16), GOOD.astype(">f4"), np.asfortranarray(GOOD.astype(np.float64))):
        np.save(tmp_path / "test_ims.npy", arr)
        split = PrecompSplit(str(tmp_path), "test", mmap=mmap)
        np.testing.assert_array_equal(split.images([1, 0]).numpy(), arr[[1, 0]].astype(np.float32))


@cell(PRECOMP, "text (Unicode, empty)", cases=2)
def test_precomp_rejects_invalid_utf8_captions(tmp_path):
    np.save(tmp_path / "test_ims.npy", GOOD)
    (tmp_path / "test_caps.txt").write_bytes(CAPS.replace(b"caption 7", b"capt\xc3\x28on 7"))
    with pytest.raises(ValueError, match=r"test_caps.txt, line 8: not valid utf-8 at byte 4"):
        PrecompSplit(str(tmp_path), "test")
    (tmp_path / "test_caps.txt").write_bytes(CAPS.replace(b"caption 2", b"\xef\xbb\xbf" * 2))
    with pytest.raises(ValueError, match=r"line 3: not valid utf-8|captions"):   # a BOM mid-file is no BOM
        split = PrecompSplit(str(tmp_path), "test")
        assert split.captions[2] == "\ufeff\ufeff"
        raise ValueError("captions read")


@cell(PRECOMP, "ids", cases=2)
def test_precomp_image_ids_out_of_range(tmp_path):
    np.save(tmp_path / "test_ims.npy", GOOD)
    (tmp_path / "test_caps.txt").write_bytes(CAPS)
    split = PrecompSplit(str(tmp_path), "test")
    for ids in ([2], [-1]):
        with pytest.raises(IndexError, match=r"image id out of range \[0, 2\)"):
            split.images(ids)
