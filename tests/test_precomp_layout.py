"""How caption lines pair with feature rows: each layout, the checks, and every consumer agreeing.

Layouts (see vsl_ext/harness/data/layout.py and SCAN's PrecompDataset): one row per image
(n_caps == rows * k), one row per caption that repeats the image's row k times (n_caps == rows,
rows verified to be copies), caption i with row i (n_caps == rows, k = 1). Expected pairings are
written from those definitions, independently of the loader.
"""
import os

import numpy as np
import pytest
import torch

from vsl_ext import CaptionIndex
from vsl_ext.harness.data import PrecompSplit, Vocabulary
from vsl_ext.harness.data import layout as layout_mod
from vsl_ext.harness.evaluate import CHECKPOINT_FORMAT, evaluate_model
from vsl_ext.harness.evaluate import main as eval_main
from vsl_ext.harness.models import build_model
from vsl_ext.harness.train import TrainConfig, Trainer


def _features(n, regions=3, dim=4, seed=0):
    return np.random.default_rng(seed).standard_normal((n, regions, dim)).astype(np.float32)


def _captions(n_images, k):
    return [f"image{i} says caption {j}" for i in range(n_images) for j in range(k)]


def _write(folder, split, feats, caps):
    np.save(os.path.join(folder, f"{split}_ims.npy"), feats)
    with open(os.path.join(folder, f"{split}_caps.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(caps) + "\n")


def _layouts(folder):
    """{name: (captions_per_image, expected feature row of caption i as an (n_caps, ...) array)}."""
    per_image = _features(4)
    _write(folder, "perimage", per_image, _captions(4, 5))
    repeated = np.repeat(_features(4, seed=1), 5, axis=0)           # row 5 i + j is a copy of image i
    _write(folder, "repeated", repeated, _captions(4, 5))
    own = _features(10, seed=2)
    _write(folder, "own", own, _captions(10, 1))                    # 10 rows, 10 captions, 1 per image
    return {"perimage": (5, per_image[np.arange(20) // 5]),
            "repeated": (5, repeated[np.arange(20)]),
            "own": (1, own[np.arange(10)])}


@pytest.fixture
def folder(tmp_path):
    return str(tmp_path)


def test_every_layout_pairs_each_caption_with_its_image_everywhere(folder):
    for split, (k, expected_rows) in _layouts(folder).items():
        n_caps = len(expected_rows)
        vocab = Vocabulary.build(_captions(10, 5))
        s = PrecompSplit(folder, split, vocab, captions_per_image=k)
        assert (s.num_captions, s.num_images, s.captions_per_image) == (n_caps, n_caps // k, k)
        # batch(): every caption comes with its own image's features and image id
        ids = np.arange(n_caps)[::-1].copy()
        b = s.batch(ids)
        np.testing.assert_array_equal(b["images"].numpy(), expected_rows[ids])
        np.testing.assert_array_equal(b["image_ids"], ids // k)
        for c, img in zip(ids, b["image_ids"]):
            assert s.captions[c].startswith(f"image{img} ")          # the caption names its image
        # the epoch sampler visits every caption once; batches hold no two captions of one image
        batches = s.epoch_batches(batch_size=3, seed=0, epoch=1)
        seen = np.concatenate(batches)
        np.testing.assert_array_equal(np.sort(seen), np.arange(n_caps))
        assert all(len(set(s.image_of_caption(bt).tolist())) == len(bt) for bt in batches[:-1])
        # the caption index that the trainer builds numbers images and captions the same way
        index = CaptionIndex.from_captions(s.caption_groups())
        assert (index.num_images, index.num_captions) == (s.num_images, n_caps)
        for img in range(s.num_images):
            assert list(index.image_captions(img)) == list(range(img * k, img * k + k))
            assert all(c.startswith(f"image{img} ") for c in s.captions_of_image(img))


def test_issue_case_equal_counts_with_default_five_is_an_error_that_says_what_to_pass(folder):
    _layouts(folder)
    with pytest.raises(ValueError) as err:
        PrecompSplit(folder, "own")                                 # default captions_per_image=5
    msg = str(err.value)
    for part in ("own_caps.txt has 10 captions", "own_ims.npy has 10 feature rows", "row 1 differs from row 0",
                 "captions_per_image=1", "--captions-per-image 1"):
        assert part in msg, (part, msg)


def test_a_repeated_layout_with_one_wrong_row_is_caught(folder):
    feats = np.repeat(_features(6, seed=3), 5, axis=0)
    feats[3 * 5 + 2, 1, 0] += 1e-6                                  # image 3's third copy differs in one number
    _write(folder, "bad", feats, _captions(6, 5))
    with pytest.raises(ValueError, match="row 17 differs from row 15 \\(image 3\\)"):
        PrecompSplit(folder, "bad")


def test_large_files_are_checked_on_a_sample(folder, monkeypatch):
    monkeypatch.setattr(layout_mod, "VERIFY_ALL_BYTES", 0)
    monkeypatch.setattr(layout_mod, "SAMPLED_GROUPS", 4)
    # 40 groups of 5 rows, none copies: any sampled group shows it
    _write(folder, "mixed", _features(200, seed=4), _captions(40, 5))
    with pytest.raises(ValueError, match="differs"):
        PrecompSplit(folder, "mixed")
    # copies everywhere except group 39 (the last group is always sampled)
    feats = np.repeat(_features(40, seed=5), 5, axis=0)
    feats[199] += 1
    _write(folder, "lastbad", feats, _captions(40, 5))
    with pytest.raises(ValueError, match="row 199 differs from row 195"):
        PrecompSplit(folder, "lastbad")
    feats[199] = feats[195]
    _write(folder, "good", feats, _captions(40, 5))
    assert PrecompSplit(folder, "good").num_images == 40


@pytest.mark.parametrize("rows, n_caps, k, fits", [(3, 14, 5, None), (3, 6, 5, 2), (4, 20, 1, 5), (6, 4, 5, None)])
def test_counts_that_fit_no_layout_name_both_files_and_the_option(folder, rows, n_caps, k, fits):
    _write(folder, "x", _features(rows), [f"c {i}" for i in range(n_caps)])
    with pytest.raises(ValueError) as err:
        PrecompSplit(folder, "x", captions_per_image=k)
    msg = str(err.value)
    assert f"x_caps.txt has {n_caps} captions" in msg and f"x_ims.npy has {rows} feature rows" in msg
    if fits:
        assert f"captions_per_image={fits} (vsl-train / vsl-eval: --captions-per-image {fits})" in msg
    else:
        assert "belong together" in msg


def test_evaluation_is_the_same_for_both_layouts_of_the_same_data(folder):
    per_image = _features(4, seed=7)
    caps = _captions(4, 5)
    _write(folder, "a", per_image, caps)
    _write(folder, "b", np.repeat(per_image, 5, axis=0), caps)
    vocab = Vocabulary.build(caps)
    torch.manual_seed(0)
    model = build_model("vse", img_dim=4, vocab_size=len(vocab), embed_size=8, word_dim=4)
    ra, sa = evaluate_model(model, PrecompSplit(folder, "a", vocab), "cpu", return_sims=True)
    rb, sb = evaluate_model(model, PrecompSplit(folder, "b", vocab), "cpu", return_sims=True)
    assert sa.shape == sb.shape == (4, 20)
    np.testing.assert_array_equal(sa, sb)
    assert ra == rb


def _checkpoint(path, vocab, captions_per_image):
    torch.manual_seed(0)
    model = build_model("vse", img_dim=4, vocab_size=len(vocab), embed_size=8, word_dim=4)
    torch.save({"format": CHECKPOINT_FORMAT, "model": {"name": "vse", "config": model.config,
                                                       "state_dict": model.state_dict()},
                "vocab": list(vocab.idx2word), "epoch": 1, "config": {"captions_per_image": captions_per_image}},
               path)


def test_vsl_eval_refuses_a_mispaired_folder_and_says_what_to_pass(folder, capsys):
    _layouts(folder)
    ckpt = os.path.join(folder, "ckpt.pth")
    _checkpoint(ckpt, Vocabulary.build(_captions(10, 1)), captions_per_image=5)
    assert eval_main([ckpt, "--data", folder, "--split", "own"]) == 2
    assert "--captions-per-image 1" in capsys.readouterr().err
    assert eval_main([ckpt, "--data", folder, "--split", "own", "--captions-per-image", "1"]) == 0
    assert "10 images" in capsys.readouterr().out
    assert eval_main([ckpt, "--data", folder, "--split", "repeated"]) == 0
    assert "4 images" in capsys.readouterr().out


def test_trainer_on_one_caption_per_image(folder):
    feats = _features(12, seed=8)
    _write(folder, "train", feats, _captions(12, 1))
    _write(folder, "dev", feats[:4], _captions(4, 1))
    base = dict(data=folder, output=os.path.join(folder, "run"), model="vse", embed_size=8, word_dim=4,
                batch_size=4, epochs=1, progress=False, tensorboard=False, test_split=None)
    with pytest.raises(ValueError, match="--captions-per-image 1"):
        Trainer(TrainConfig(**base))
    t = Trainer(TrainConfig(captions_per_image=1, **base), log=lambda m: None)
    assert (t.train_data.num_images, t.index.num_images, t.index.num_captions) == (12, 12, 12)
    summary = t.run()
    assert summary["global_step"] == 3
