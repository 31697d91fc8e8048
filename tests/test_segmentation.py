"""Segmentation inputs (3SHNet's file layout): loading, memory mapping, errors, the synthetic writer."""
import json
import os

import numpy as np
import pytest
import torch

from vsl_ext.harness.data import PrecompSplit
from vsl_ext.harness.data.segmentation import (
    SegmentationSplit,
    SegmentedImages,
    attach_segmentation,
    has_segmentation,
    segmentation_paths,
)
from vsl_ext.harness.data.synthetic import NOUNS, SyntheticConfig, generate, num_segmentation_classes

CPI = 5


def release_like(folder, n=3, regions=36, dim=2048, label_dtype=np.int64, per_caption=False, split="test", seed=0):
    """A split with the shapes of 3SHNet's release: (N, 133, 7, 7) score maps, (N, 64, 64) label maps,
    (N, 133) class presence, (N, 36, 2048) regions. Returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {"ims": rng.standard_normal((n, regions, dim)).astype(np.float32),
              "score_maps": rng.random((n, 133, 7, 7)).astype(np.float32),
              "label_map": rng.integers(0, 133, (n, 64, 64)).astype(label_dtype),
              "class_presence": (rng.random((n, 133)) < 0.1).astype(np.float32)}
    if per_caption:  # every image's rows repeated once per caption, as in the older precomp releases
        arrays = {key: np.repeat(a, CPI, axis=0) for key, a in arrays.items()}
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, f"{split}_ims.npy"), arrays["ims"])
    with open(os.path.join(folder, f"{split}_caps.txt"), "w") as f:
        f.write("".join(f"caption {i} of image {i // CPI}\n" for i in range(n * CPI)))
    for key, path in segmentation_paths(str(folder), split).items():
        np.save(path, arrays[key])
    return arrays


@pytest.mark.parametrize("label_dtype", [np.int64, np.uint8, np.float32])
def test_release_shaped_files_are_read_row_by_row(tmp_path, label_dtype):
    arrays = release_like(tmp_path, label_dtype=label_dtype)
    assert [os.path.basename(p) for p in segmentation_paths(str(tmp_path), "test").values()] == \
        ["test_segmentations.npy", "test_seg_maps.npy", "test_cat_onehots.npy"]
    split = PrecompSplit(str(tmp_path), "test", None, CPI)
    seg = attach_segmentation(split)
    assert (seg.num_classes, seg.score_shape, seg.label_shape) == (133, (7, 7), (64, 64))
    assert all(isinstance(a, np.memmap) for a in seg.arrays.values())          # memory-mapped, not read whole
    ids = [2, 0, 2]
    batch = split.images(ids)
    assert isinstance(batch, SegmentedImages) and len(batch) == 3
    for name, key in (("regions", "ims"), ("score_maps", "score_maps"), ("label_map", "label_map"),
                      ("class_presence", "class_presence")):
        got = getattr(batch, name)
        assert got.dtype == torch.float32
        np.testing.assert_array_equal(got.numpy(), arrays[key][ids].astype(np.float32))
    assert batch.region_lengths.tolist() == [36, 36, 36]
    moved = batch.to("cpu")
    assert torch.equal(moved.score_maps, batch.score_maps) and moved.num_classes == 133


def test_one_feature_row_per_caption_layout(tmp_path):
    """Older precomp releases repeat each image once per caption; 3SHNet indexes its segmentation rows
    like the feature rows, so both files have 5 rows per image."""
    arrays = release_like(tmp_path, n=2, regions=4, dim=6, per_caption=True)
    split = PrecompSplit(str(tmp_path), "test", None, CPI)
    attach_segmentation(split)
    batch = split.images([1, 0])
    np.testing.assert_array_equal(batch.score_maps.numpy(), arrays["score_maps"][[5, 0]])
    np.testing.assert_array_equal(batch.regions.numpy(), arrays["ims"][[5, 0]])


def test_vsl_train_and_eval_on_release_shaped_files(tmp_path):
    from vsl_ext.harness.evaluate import main as eval_main
    from vsl_ext.harness.train import main as train_main

    for k, split in enumerate(("train", "dev", "test")):
        release_like(tmp_path / "data", n=4, split=split, label_dtype=np.uint8, seed=k)
    out = tmp_path / "run"
    assert train_main(["--data", str(tmp_path / "data"), "--model", "3shnet", "--output", str(out), "--embed-size",
                       "16", "--word-dim", "8", "--spatial-dim", "8", "--batch-size", "10", "--epochs", "1",
                       "--no-progress", "--no-tensorboard"]) == 0
    results = json.load(open(out / "results.json"))
    assert results["test"]["full"]["rsum"] >= 0
    ckpt = torch.load(out / "model_best.pth", weights_only=True)
    assert ckpt["data"]["segmentation"] == {"classes": 133, "score_maps": [7, 7], "label_map": [64, 64]}
    assert eval_main([str(out / "model_best.pth"), "--data", str(tmp_path / "data")]) == 0


def test_without_segmentation_images_are_a_tensor(tmp_path):
    release_like(tmp_path, n=2, regions=4, dim=6)
    split = PrecompSplit(str(tmp_path), "test", None, CPI)
    assert isinstance(split.images([0, 1]), torch.Tensor)


def _break(folder, key, value):
    np.save(segmentation_paths(str(folder), "test")[key], value)


@pytest.mark.parametrize("key,value,message", [
    ("score_maps", np.zeros((3, 133, 7), np.float32), r"test_segmentations.npy has shape \(3, 133, 7\)"),
    ("score_maps", np.zeros((3, 133, 7, 7), np.int32), "test_segmentations.npy has dtype int32"),
    ("label_map", np.zeros((3, 64 * 64), np.int64), r"test_seg_maps.npy has shape \(3, 4096\)"),
    ("label_map", np.array([["a"] * 4] * 3).reshape(3, 2, 2), "test_seg_maps.npy has dtype"),
    ("class_presence", np.zeros((3, 80), np.float32), "test_cat_onehots.npy has 80 classes"),
    ("class_presence", np.zeros((4, 133), np.float32), "test_cat_onehots.npy has 4 rows"),
    ("label_map", np.zeros((0, 64, 64), np.int64), "test_seg_maps.npy has 0 rows|is empty"),
    ("score_maps", np.array([{"a": 1}] * 3, dtype=object), "test_segmentations.npy is not a plain numeric"),
])
def test_misshaped_files_are_named(tmp_path, key, value, message):
    release_like(tmp_path, regions=4, dim=6)
    _break(tmp_path, key, value)
    split = PrecompSplit(str(tmp_path), "test", None, CPI)
    with pytest.raises(ValueError, match=message):
        attach_segmentation(split)


def test_missing_file_is_named(tmp_path):
    release_like(tmp_path, regions=4, dim=6)
    assert has_segmentation(str(tmp_path), "test")
    os.unlink(tmp_path / "test_seg_maps.npy")
    assert not has_segmentation(str(tmp_path), "test")
    with pytest.raises(FileNotFoundError, match="test_seg_maps.npy"):
        SegmentationSplit(str(tmp_path), "test")
    os.unlink(tmp_path / "test_cat_onehots.npy")
    with pytest.raises(FileNotFoundError, match="test_seg_maps.npy and .*test_cat_onehots.npy"):
        attach_segmentation(PrecompSplit(str(tmp_path), "test", None, CPI))


def test_row_ids_out_of_range(tmp_path):
    release_like(tmp_path, regions=4, dim=6)
    seg = SegmentationSplit(str(tmp_path), "test", num_rows=3)
    with pytest.raises(IndexError, match="out of range"):
        seg.rows([3])
    with pytest.raises(IndexError, match="out of range"):
        seg.rows([-1])


def test_segmented_images_validate_their_parts():
    r, lm, cp, sm = torch.zeros(2, 4, 3), torch.zeros(2, 8, 8), torch.zeros(2, 5), torch.zeros(2, 5, 2, 2)
    SegmentedImages(r, lm, cp, sm, torch.tensor([1, 4]))
    with pytest.raises(ValueError, match="region_lengths must lie in"):
        SegmentedImages(r, lm, cp, sm, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="region_lengths must lie in"):
        SegmentedImages(r, lm, cp, sm, torch.tensor([5, 4]))
    with pytest.raises(ValueError, match="label_map must have 3 dims"):
        SegmentedImages(r, torch.zeros(2, 64), cp, sm)
    with pytest.raises(ValueError, match="score_maps must have 4 dims with 2 rows"):
        SegmentedImages(r, lm, cp, torch.zeros(3, 5, 2, 2))
    with pytest.raises(ValueError, match="class_presence has 5 classes but score_maps has 6"):
        SegmentedImages(r, lm, cp, torch.zeros(2, 6, 2, 2))


def test_synthetic_segmentation_matches_what_the_regions_show(tmp_path):
    cfg = SyntheticConfig(train_images=6, dev_images=4, test_images=30, regions=16, feat_dim=8)
    splits = generate(str(tmp_path), cfg)
    meta = splits["test"][2]
    C = num_segmentation_classes(cfg)
    seg = SegmentationSplit(str(tmp_path), "test", num_rows=30)
    scores, labels, presence = (seg.arrays[k] for k in ("score_maps", "label_map", "class_presence"))
    assert scores.shape == (30, C, 4, 4) and labels.shape == (30, 8, 8) and presence.shape == (30, C)
    np.testing.assert_allclose(scores.sum(1), 1.0, rtol=1e-5)                    # per-cell class probabilities
    # the label map is the per-cell argmax of the score maps, upsampled 2 x 2
    cell_labels = scores.argmax(1)
    np.testing.assert_array_equal(labels, np.kron(cell_labels, np.ones((2, 2), dtype=cell_labels.dtype)))
    for i in range(30):
        assert set(np.flatnonzero(presence[i])) == set(np.unique(labels[i]))
    # the segmenter is right on most cells: the class of the object each region shows (row-major grid)
    right = 0
    for i, m in enumerate(meta):
        objects = [m["main"][0]] + [s[0] for s in m["secondary"]]
        truth = [objects[o] if o >= 0 else len(NOUNS) + m["scene"] for o in m["region_objects"]]
        right += int((cell_labels[i].reshape(-1) == np.asarray(truth)).sum())
        assert sorted(m["region_objects"]).count(0) == m["main_regions"]
    assert right / (30 * 16) > 0.7


def test_synthetic_features_do_not_depend_on_writing_segmentation(tmp_path):
    cfg = SyntheticConfig(train_images=5, dev_images=3, test_images=3, regions=5, feat_dim=6)
    written = generate(str(tmp_path), cfg)
    in_memory = generate(None, cfg)
    for split in written:
        np.testing.assert_array_equal(written[split][0], in_memory[split][0])
        assert written[split][1] == in_memory[split][1]
    # 5 regions lie on a 3 x 3 grid; cells past the last region show the scene ("stuff" class)
    labels = np.load(tmp_path / "dev_seg_maps.npy")
    assert labels.shape == (3, 6, 6)
    meta = json.load(open(tmp_path / "dev_meta.json"))
    assert all(len(m["region_objects"]) == 5 for m in meta)
