"""SCAN precomp loader, vocabulary, batch sampler and the synthetic demo generator."""
import json
import os

import numpy as np
import pytest

from vsl_ext.caption_files import read_scan_captions
from vsl_ext.harness.data import PrecompSplit, Vocabulary, epoch_batches, resolve_data_dir, tokenize
from vsl_ext.harness.data.synthetic import NOUNS, SyntheticConfig, generate


def write_split(folder, split, n, cpi=5, regions=4, dim=6, seed=0, caps=None):
    rng = np.random.default_rng(seed)
    shape = (n, regions, dim) if regions else (n, dim)
    np.save(os.path.join(folder, f"{split}_ims.npy"), rng.standard_normal(shape).astype(np.float32))
    caps = caps if caps is not None else [f"image {i} caption {j} a dog" for i in range(n) for j in range(cpi)]
    with open(os.path.join(folder, f"{split}_caps.txt"), "w") as f:
        f.write("\n".join(caps) + "\n")


@pytest.fixture
def scan_dir(tmp_path):
    write_split(tmp_path, "train", 10)
    write_split(tmp_path, "dev", 3, seed=1)
    return str(tmp_path)


def test_loader_reads_rows_lazily_and_correctly(scan_dir):
    vocab = Vocabulary.build(read_scan_captions(os.path.join(scan_dir, "train_caps.txt")))
    s = PrecompSplit(scan_dir, "train", vocab)
    assert (s.num_images, s.num_captions, s.num_regions, s.img_dim) == (10, 50, 4, 6)
    assert isinstance(s.ims, np.memmap)
    full = np.load(os.path.join(scan_dir, "train_ims.npy"))
    np.testing.assert_array_equal(s.images([7, 2, 7]).numpy(), full[[7, 2, 7]])
    b = s.batch([0, 14, 49])
    np.testing.assert_array_equal(b["image_ids"], [0, 2, 9])
    assert b["tokens"].shape == (3, int(b["lengths"].max()))
    assert b["tokens"][0, 0].item() == vocab.word2idx["<start>"]
    assert s.captions_of_image(2)[4] == "image 2 caption 4 a dog"
    with pytest.raises(IndexError):
        s.images([10])


def test_two_dimensional_features_and_repeated_layout(tmp_path):
    write_split(tmp_path, "train", 4, regions=0)
    s = PrecompSplit(str(tmp_path), "train")
    assert s.images([1]).shape == (1, 1, 6)
    # one feature row per caption (older precomp releases): image i is row 5 i
    feats = np.repeat(np.arange(4 * 3, dtype=np.float32).reshape(4, 3), 5, axis=0)
    np.save(tmp_path / "test_ims.npy", feats)
    (tmp_path / "test_caps.txt").write_text("\n".join(f"c{i}" for i in range(20)))
    t = PrecompSplit(str(tmp_path), "test")
    assert t.num_images == 4
    np.testing.assert_array_equal(t.images([1]).numpy()[0, 0], feats[5])


def test_resolve_data_dir(tmp_path):
    sub = tmp_path / "f30k_precomp"
    sub.mkdir()
    write_split(sub, "train", 2)
    assert resolve_data_dir(str(tmp_path), "f30k") == str(sub)
    assert resolve_data_dir(str(sub)) == str(sub)
    with pytest.raises(FileNotFoundError, match="no SCAN precomp files"):
        resolve_data_dir(str(tmp_path), "coco")
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_data_dir(str(tmp_path / "nope"))


def test_clear_errors(tmp_path):
    write_split(tmp_path, "train", 4)
    with pytest.raises(FileNotFoundError, match="dev_ims.npy.*dev_caps.txt|dev_caps.txt"):
        PrecompSplit(str(tmp_path), "dev")
    # caption count does not match
    write_split(tmp_path, "bad", 4, caps=[f"c{i}" for i in range(19)])
    with pytest.raises(ValueError, match=r"19 captions but .*4 feature rows.*must hold 20 captions"):
        PrecompSplit(str(tmp_path), "bad")
    # wrong shapes / dtypes
    np.save(tmp_path / "odd_ims.npy", np.zeros((4, 2, 2, 2), np.float32))
    (tmp_path / "odd_caps.txt").write_text("\n".join(["x"] * 20))
    with pytest.raises(ValueError, match=r"shape \(4, 2, 2, 2\)"):
        PrecompSplit(str(tmp_path), "odd")
    np.save(tmp_path / "int_ims.npy", np.zeros((4, 3), np.int64))
    (tmp_path / "int_caps.txt").write_text("\n".join(["x"] * 20))
    with pytest.raises(ValueError, match="dtype"):
        PrecompSplit(str(tmp_path), "int")
    with pytest.raises(ValueError, match="captions_per_image"):
        PrecompSplit(str(tmp_path), "train", captions_per_image=0)


def test_vocabulary_round_trip(tmp_path):
    v = Vocabulary.build(["A dog, a DOG!", "a cat"], min_count=1)
    assert v.idx2word[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert v.idx2word[4:6] == ["a", "dog"]                       # by frequency
    assert tokenize("A dog, running.") == ["a", "dog", ",", "running", "."]
    assert v.encode("a zebra")[-2] == v.word2idx["<unk>"]
    path = tmp_path / "vocab.json"
    v.save(str(path))
    d = json.loads(path.read_text())
    assert d["idx"] == len(v) and d["idx2word"]["4"] == "a"    # SCAN layout
    assert Vocabulary.load(str(path)).idx2word == v.idx2word
    assert Vocabulary.build(["a a b"], min_count=2).idx2word[4:] == ["a"]
    path.write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        Vocabulary.load(str(path))


@pytest.mark.parametrize("n,bs", [(10, 4), (50, 16), (7, 8), (300, 128)])
def test_epoch_batches_cover_every_caption_once(n, bs):
    batches = epoch_batches(n, 5, bs, seed=3, epoch=1)
    ids = np.concatenate(batches)
    assert sorted(ids.tolist()) == list(range(5 * n))
    assert all(len(b) >= 2 for b in batches)
    if n >= 2 * bs:   # room to keep an image's captions apart: no batch repeats an image
        assert all(len(set((b // 5).tolist())) == len(b) for b in batches)
    again = epoch_batches(n, 5, bs, seed=3, epoch=1)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    other = epoch_batches(n, 5, bs, seed=3, epoch=2)
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other))


def test_synthetic_generator(tmp_path):
    cfg = SyntheticConfig(train_images=30, dev_images=5, test_images=6)
    splits = generate(str(tmp_path), cfg)
    feats, caps, meta = splits["train"]
    assert feats.shape == (30, cfg.regions, cfg.feat_dim) and feats.dtype == np.float32
    assert len(caps) == 30 * cfg.captions_per_image
    for i, m in enumerate(meta):
        main_noun = NOUNS[m["main"][0]]
        assert cfg.main_regions[0] <= m["main_regions"] <= cfg.main_regions[1]
        assert cfg.secondary_objects[0] <= len(m["secondary"]) <= cfg.secondary_objects[1]
        for c in caps[5 * i:5 * i + 5]:             # captions name the main object only
            assert main_noun in c.split()
    s = PrecompSplit(str(tmp_path), "test")
    assert s.num_images == 6
    again = generate(None, cfg)
    np.testing.assert_array_equal(again["train"][0], feats)
    assert again["train"][1] == caps


def test_failure_analysis_on_known_similarities():
    from vsl_ext.harness.data.synthetic import failure_analysis
    cfg = SyntheticConfig(train_images=2, dev_images=2, test_images=40)
    feats, caps, meta = generate(None, cfg)["test"]
    n = len(meta)
    rng = np.random.default_rng(0)
    sem = rng.random((n, n))
    perfect = np.repeat(np.eye(n) + 0.01 * sem, 5, axis=1)   # true image first, then C's order
    d = failure_analysis(perfect, meta, caps, sem)
    assert d["consistent"] == 100.0 and d["secondary_match"] == 0.0
    assert d["rank_agreement"] > 0.9
    assert 0 < d["oracle_t2i_r1"] <= 100
    # top-1 image always one holding the caption's object as a secondary object
    main = np.array([m["main"] for m in meta])
    holder = np.zeros((n, 5 * n))
    for j, m in enumerate(meta):
        for s in m["secondary"]:
            for i in np.flatnonzero((main == np.asarray(s)).all(1)):
                if (main[j] != main[i]).any():
                    holder[j, 5 * i:5 * i + 5] = 1
    d = failure_analysis(holder + 1e-3 * rng.random(holder.shape), meta, caps, sem)
    hit = holder.max(0) > 0          # captions whose top-1 is such a holder (unless it is also consistent)
    assert 0 < d["secondary_match"] <= 100 * hit.mean()
