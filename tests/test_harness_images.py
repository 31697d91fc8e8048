"""vsl-prepare-images: image folder + captions CSV -> SCAN precomp folder."""
import csv
import os

import numpy as np
import pytest

from vsl_ext.harness.data import PrecompSplit
from vsl_ext.harness.data.images import FEATURE_DIM, region_features
from vsl_ext.harness.prepare_images import main, prepare

PIL = pytest.importorskip("PIL.Image")
FLICKR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "flickr8k_mini")


def make_folder(tmp_path, n=6, cpi=5):
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        name = f"img{i}.jpg"
        PIL.fromarray(rng.integers(0, 255, (40 + i, 60, 3), dtype=np.uint8)).save(img_dir / name)
        rows += [(name, f"caption {j} of image {i}") for j in range(cpi)]
    csv_path = tmp_path / "captions.txt"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        w.writerows(rows)
    return str(img_dir), str(csv_path)


def test_region_features_shape_and_ranges():
    rng = np.random.default_rng(1)
    rgb = rng.random((64, 64, 3)).astype(np.float32)
    hsv = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    f = region_features(rgb, hsv, grid=2)
    assert f.shape == (5, FEATURE_DIM) and np.isfinite(f).all()
    flat = region_features(np.full((32, 32, 3), 0.5, np.float32), np.zeros((32, 32, 3), np.uint8), 2)
    assert np.allclose(flat[:, 72:108], 0)          # no gradients -> empty HOG


def test_prepare_writes_a_loadable_precomp_folder(tmp_path):
    images, caps = make_folder(tmp_path)
    out = tmp_path / "out"
    counts = prepare(images, caps, str(out), split=(3, 2, 1), grid=2, size=32, log=lambda m: None)
    assert counts == {"train": 3, "dev": 2, "test": 1}
    s = PrecompSplit(str(out), "train")
    assert (s.num_images, s.num_regions, s.img_dim) == (3, 5, FEATURE_DIM)
    names = (out / "train_images.txt").read_text().split()
    assert s.captions_of_image(0)[0] == f"caption 0 of image {names[0][3:-4]}"
    train = np.load(out / "train_ims.npy").reshape(-1, FEATURE_DIM)
    assert np.abs(train.mean(0)).max() < 1e-4                # standardised with train statistics
    # deterministic split
    prepare(images, caps, str(tmp_path / "again"), split=(3, 2, 1), grid=2, size=32, log=lambda m: None)
    assert (tmp_path / "again" / "dev_images.txt").read_text() == (out / "dev_images.txt").read_text()


def test_errors(tmp_path, capsys):
    images, caps = make_folder(tmp_path, n=3, cpi=2)
    assert main(["--images", images, "--captions", caps, "--out", str(tmp_path / "o"), "--split", "1,1,1"]) == 2
    assert "fewer than 5 captions" in capsys.readouterr().err
    assert main(["--images", images, "--captions", caps, "--out", str(tmp_path / "o"), "--split", "5,1,1",
                 "--captions-per-image", "2"]) == 2
    assert "needs 7 images" in capsys.readouterr().err
    os.remove(os.path.join(images, "img1.jpg"))
    assert main(["--images", images, "--captions", caps, "--out", str(tmp_path / "o"), "--split", "1,1,1",
                 "--captions-per-image", "2"]) == 2
    assert "img1.jpg" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("file,text\na.jpg,hello\n")
    assert main(["--images", images, "--captions", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "'image' and 'caption'" in capsys.readouterr().err


def test_an_existing_dataset_is_replaced_only_with_overwrite(tmp_path, capsys):
    images, caps = make_folder(tmp_path, n=3, cpi=5)
    out = tmp_path / "o"
    args = ["--images", images, "--captions", caps, "--out", str(out), "--split", "1,1,1", "--grid", "2",
            "--size", "32"]
    assert main(args) == 0
    before = (out / "train_ims.npy").read_bytes()
    assert main(args + ["--seed", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "train_ims.npy").read_bytes() == before
    assert main(args + ["--seed", "1", "--overwrite"]) == 0


@pytest.mark.skipif(not os.path.isdir(FLICKR), reason="../shared/data/flickr8k_mini is absent")
def test_real_flickr8k_subset(tmp_path):
    with open(os.path.join(FLICKR, "captions.txt"), newline="") as f:
        rows = list(csv.DictReader(f))
    keep = sorted({r["image"] for r in rows})[:8]
    sub = tmp_path / "captions.csv"
    with open(sub, "w", newline="") as f:
        w = csv.DictWriter(f, ["image", "caption"])
        w.writeheader()
        w.writerows({"image": r["image"], "caption": r["caption"]} for r in rows if r["image"] in keep)
    prepare(os.path.join(FLICKR, "images"), str(sub), str(tmp_path / "out"), split=(4, 2, 2), log=lambda m: None)
    s = PrecompSplit(str(tmp_path / "out"), "dev")
    assert (s.num_images, s.num_captions, s.num_regions) == (2, 10, 17)
    assert np.isfinite(np.load(tmp_path / "out" / "test_ims.npy")).all()
