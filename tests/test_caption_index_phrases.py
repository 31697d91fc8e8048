"""CaptionIndex mode "phrases": image similarity from scene-graph labels against scikit-learn's
TfidfVectorizer (images as documents, a callable analyzer over label strings) and a float64 numpy
brute force; persistence and format versions; the spaCy-backed path on hand-made and COCO captions."""
import os
import pickle
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vsl_ext import CaptionIndex, caption_index_file
from vsl_ext.phrases import PhraseLabels


DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco_captions"

L = PhraseLabels
# images x captions of hand-made labels: repeats inside a caption, shared labels, an image without labels
LABEL_GROUPS = [
    [L(("dog", "cat"), (), (("dog", "chase", "cat"),)), L(("dog",), (("dog", "brown"),), ())],
    [L(("dog", "cat"), (), (("cat", "chase", "dog"),))],
    [L()],
    [L(("man", "horse"), (), (("man", "ride", "horse"),)), L(("man", "horse", "beach"), (("horse", "white"),),
                                                             (("man", "ride on", "beach"),)), L(("horse",))],
    [L(("dog",)), L(("dog", "frisbee"), (("frisbee", "red"),), (("dog", "catch", "frisbee"),)), L()],
    [L(("tennis racket", "man"), (("man", "young"),), (("man", "swing", "tennis racket"),))],
]


def _label_docs(groups):
    """Each image as the list of its label strings, a label counted once per caption (the tf)."""
    return [[s for lab in g for s in set(lab.labels())] for g in groups]


def _sklearn(groups):
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = _label_docs(groups)
    vec = TfidfVectorizer(analyzer=lambda doc: doc, lowercase=False)  # smooth idf, l2 norm (defaults)
    return vec, vec.fit_transform(docs).toarray()


def _brute(groups):
    """float64 dense: tf = captions holding the label, idf = ln((1+N)/(1+df)) + 1, rows l2-normalised."""
    docs = _label_docs(groups)
    vocab = sorted({s for d in docs for s in d})
    tf = np.zeros((len(docs), len(vocab)))
    for i, d in enumerate(docs):
        for s in d:
            tf[i, vocab.index(s)] += 1
    df = (tf > 0).sum(0)
    w = tf * (np.log((1 + len(docs)) / (1 + df)) + 1)
    norm = np.linalg.norm(w, axis=1, keepdims=True)
    return vocab, np.divide(w, norm, out=np.zeros_like(w), where=norm > 0)


def test_matches_sklearn_and_brute_force():
    index = CaptionIndex.from_phrase_labels(LABEL_GROUPS)
    vec, X = _sklearn(LABEL_GROUPS)
    vocab, W = _brute(LABEL_GROUPS)
    assert index.mode == "phrases" and index.ngram_range is None
    assert (len(index), index.num_captions) == (6, 11)
    assert index.feature_names() == vocab == list(vec.get_feature_names_out())
    np.testing.assert_allclose(X, W, rtol=1e-12, atol=1e-12)  # the two oracles agree
    indptr, indices, data = index.image_vectors()
    dense = np.zeros((len(index), index.vocab_size))
    for i in range(len(index)):
        dense[i, indices[indptr[i]:indptr[i + 1]]] = data[indptr[i]:indptr[i + 1]]
    np.testing.assert_allclose(dense, W, rtol=1e-6, atol=1e-7)
    ids = [0, 1, 2, 3, 4, 5, 3, 0]
    K = index.image_similarity(ids)
    assert K.dtype == torch.float32 and K.shape == (8, 8)
    np.testing.assert_allclose(K.numpy(), (W @ W.T)[np.ix_(ids, ids)], rtol=0, atol=1e-6)


def test_symmetric_in_unit_range_with_unit_diagonal():
    index = CaptionIndex.from_phrase_labels(LABEL_GROUPS * 7)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(index), 64)
    K = index.image_similarity(ids).numpy()
    assert np.array_equal(K, K.T)
    assert K.min() >= 0 and K.max() <= 1 + 1e-6
    empty = np.array([len(LABEL_GROUPS[i % 6][0].labels()) == 0 and i % 6 == 2 for i in ids])
    np.testing.assert_allclose(np.diag(K)[~empty], 1, atol=1e-6)
    assert not K[empty].any() and not K[:, empty].any()


def test_word_order_matters_where_tfidf_does_not():
    groups = [[L(("dog", "cat"), (), (("dog", "chase", "cat"),))], [L(("cat", "dog"), (), (("cat", "chase", "dog"),))],
              [L(("dog", "cat"), (), (("dog", "chase", "cat"),))]]
    K = CaptionIndex.from_phrase_labels(groups).image_similarity([0, 1, 2]).numpy()
    T = CaptionIndex.from_captions([["a dog chasing a cat"], ["a cat chasing a dog"], ["a dog chasing a cat"]]
                                   ).image_similarity([0, 1, 2]).numpy()
    assert T[0, 1] == pytest.approx(1, abs=1e-6)  # same unigrams
    assert K[0, 1] < 0.8 and K[0, 2] == pytest.approx(1, abs=1e-6)
    _, W = _brute(groups)
    assert K[0, 1] == pytest.approx((W @ W.T)[0, 1], abs=1e-6)


def test_no_labels_at_all():
    index = CaptionIndex.from_phrase_labels([[L()], [L(), L()]])
    assert index.vocab_size == 0 and index.feature_names() == []
    assert torch.equal(index.image_similarity([0, 1, 1]), torch.zeros(3, 3))


def test_save_load_round_trip_and_versions(tmp_path):
    index = CaptionIndex.from_phrase_labels(LABEL_GROUPS)
    path = tmp_path / "ix.vslcap"
    index.save(path)
    assert os.listdir(tmp_path) == ["ix.vslcap"]
    raw = path.read_bytes()
    assert struct.unpack_from("<I", raw, 8)[0] == 2  # phrases needs format version 2
    loaded = CaptionIndex.load(path)
    assert (loaded.mode, len(loaded), loaded.num_captions, loaded.feature_names()) == (
        "phrases", len(index), index.num_captions, index.feature_names())
    ids = [5, 0, 3, 3, 2]
    assert torch.equal(loaded.image_similarity(ids), index.image_similarity(ids))
    clone = pickle.loads(pickle.dumps(index))
    assert torch.equal(clone.image_similarity(ids), index.image_similarity(ids))
    # tfidf / cider-d files keep format version 1, so older readers still read them
    tf = tmp_path / "tf.vslcap"
    CaptionIndex.from_captions([["a dog"], ["a cat"]]).save(tf)
    assert struct.unpack_from("<I", tf.read_bytes(), 8)[0] == 1
    assert CaptionIndex.load(tf).mode == "tfidf"


def test_load_rejects_phrases_under_version_1_and_corruption(tmp_path):
    index = CaptionIndex.from_phrase_labels(LABEL_GROUPS)
    path = tmp_path / "ix"
    index.save(path)
    raw = path.read_bytes()
    bad = tmp_path / "bad"
    bad.write_bytes(raw[:8] + struct.pack("<I", 1) + raw[12:])
    with pytest.raises(ValueError, match="not a readable|version"):
        CaptionIndex.load(bad)
    bad.write_bytes(raw[:8] + struct.pack("<I", 3) + raw[12:])
    with pytest.raises(ValueError, match="version 3"):
        CaptionIndex.load(bad)
    flipped = bytearray(raw)
    flipped[-3] ^= 0x10
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="checksum"):
        CaptionIndex.load(bad)


def test_structure_checks_catch_bad_arrays():
    index = CaptionIndex.from_phrase_labels(LABEL_GROUPS)
    a = {k: np.array(v) for k, v in index._a.items()}
    a["img_indices"][0] = index.vocab_size
    with pytest.raises(ValueError, match="img_indices"):
        caption_index_file.check_structure(a, index._meta)
    a = {k: np.array(v) for k, v in index._a.items()}
    a["img_indptr"] = a["img_indptr"][:-1]
    with pytest.raises(ValueError, match="image rows"):
        caption_index_file.check_structure(a, index._meta)


def test_phrases_mode_refuses_caption_level_queries_and_tfidf_options():
    index = CaptionIndex.from_phrase_labels(LABEL_GROUPS)
    with pytest.raises(ValueError, match="caption_similarity"):
        index.caption_similarity([0, 1])
    with pytest.raises(ValueError, match="image vectors only"):
        index.caption_vectors()
    with pytest.raises(ValueError, match="cider-d"):
        CaptionIndex.from_captions([["a b"]], mode="cider-d").image_vectors()
    for kw in ({"ngram_range": (1, 2)}, {"lowercase": True}, {"sigma": 3.0}, {"tokenizer": str.split}):
        with pytest.raises(ValueError, match="do not apply to mode='phrases'"):
            CaptionIndex.from_captions([["a dog"]], mode="phrases", **kw)
    with pytest.raises(ValueError, match="phrase_cache"):
        CaptionIndex.from_captions([["a dog"]], phrase_cache="x")


@pytest.mark.parametrize("groups, err, match", [
    ([], ValueError, "empty"),
    ([[]], ValueError, r"groups\[0\] is empty"),
    ([L()], TypeError, r"groups\[0\] must be a list"),
    ([["dog"]], TypeError, "holds a str"),
    ([[L(("a\tb",))]], ValueError, "without tabs"),
    ([[L((), (("dog",),))]], ValueError, "tuple of 2 strings"),
    ([[L((), (), (("a", "", "b"),))]], ValueError, "non-empty"),
    ([[L(["dog"])]], TypeError, "must be a tuple"),
])
def test_from_phrase_labels_checks_input(groups, err, match):
    with pytest.raises(err, match=match):
        CaptionIndex.from_phrase_labels(groups)


def test_image_similarity_on_device(device):
    index = CaptionIndex.from_phrase_labels(LABEL_GROUPS * 40)
    _, W = _brute(LABEL_GROUPS * 40)
    ids = np.random.default_rng(3).integers(0, len(index), 128)
    K = index.image_similarity(ids, device=device)
    assert K.device.type == device and K.dtype == torch.float32
    np.testing.assert_allclose(K.cpu().numpy(), (W @ W.T)[np.ix_(ids, ids)], rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------- with spaCy
@pytest.fixture(scope="module")
def model():
    from vsl_ext import phrases
    try:
        return phrases.load_model()
    except ImportError as exc:
        pytest.skip(f"spaCy or its English model is not installed ({exc})")


def test_from_captions_parses_and_caches(tmp_path, model):
    from vsl_ext import phrases
    groups = [["A dog chasing a cat.", "A brown dog runs after a cat."], ["A cat chasing a dog."],
              ["Two men riding horses on the beach."]]
    cache = tmp_path / "parses.cache"
    index = CaptionIndex.from_captions(groups, mode="phrases", phrase_cache=cache)
    assert cache.exists() and index._meta["parser"] == phrases.parser_info()
    labels = phrases.parse([c for g in groups for c in g])
    expected = CaptionIndex.from_phrase_labels([labels[0:2], labels[2:3], labels[3:4]])
    assert index.feature_names() == expected.feature_names()
    assert torch.equal(index.image_similarity([0, 1, 2]), expected.image_similarity([0, 1, 2]))
    K = index.image_similarity([0, 1]).numpy()
    assert 0 < K[0, 1] < 0.9  # same animals, opposite roles
    again = CaptionIndex.from_captions(groups, mode="phrases", phrase_cache=cache)
    assert torch.equal(again.image_similarity([0, 1, 2]), index.image_similarity([0, 1, 2]))


def test_from_scan_file_passes_the_mode(model, tmp_path):
    path = tmp_path / "caps.txt"
    path.write_text("a dog chasing a cat\na brown dog\na cat chasing a dog\na small cat\n", encoding="utf-8")
    index = CaptionIndex.from_scan_file(path, captions_per_image=2, mode="phrases")
    expected = CaptionIndex.from_captions([["a dog chasing a cat", "a brown dog"],
                                           ["a cat chasing a dog", "a small cat"]], mode="phrases")
    assert index.mode == "phrases" and index.feature_names() == expected.feature_names()
    assert torch.equal(index.image_similarity([0, 1]), expected.image_similarity([0, 1]))


def test_from_scan_file_coco(model, tmp_path):
    path = DATA / "testall_caps.txt"
    if not path.exists():
        pytest.skip(f"shared COCO captions not found at {path}")
    from sklearn.feature_extraction.text import TfidfVectorizer
    from vsl_ext import phrases
    cache = tmp_path / "testall.phrases"
    t = time.perf_counter()
    index = CaptionIndex.from_scan_file(path, mode="phrases", phrase_cache=cache)
    print(f"phrase index over {path.name}: {len(index)} images, {index.vocab_size} labels, "
          f"built in {time.perf_counter() - t:.1f} s")
    assert (len(index), index.num_captions) == (5000, 25000)
    ids = np.random.default_rng(1).integers(0, len(index), 128)
    K = index.image_similarity(ids).numpy()
    assert np.array_equal(K, K.T) and K.min() >= 0 and K.max() <= 1 + 1e-6
    np.testing.assert_allclose(np.diag(K), 1, atol=1e-6)  # every COCO image yields labels
    # scikit-learn over the same parses (read back from the cache): images as documents
    lines = path.read_text(encoding="utf-8").split("\n")
    labs = phrases.parse(lines[:25000], cache=cache)
    docs = [[s for lab in labs[5 * i:5 * i + 5] for s in set(lab.labels())] for i in range(5000)]
    vec = TfidfVectorizer(analyzer=lambda d: d, lowercase=False)
    X = vec.fit_transform(docs)[ids].toarray()
    assert list(vec.get_feature_names_out()) == index.feature_names()
    np.testing.assert_allclose(K, X @ X.T, rtol=0, atol=1e-5)
