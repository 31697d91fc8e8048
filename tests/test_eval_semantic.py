"""vsl-eval's semantic-aware reports: --sims (a saved similarity matrix), --eccv (ECCV Caption, CxC,
COCO 5K through eccv-caption) and --caption-index (DAA's ASP and the rank agreement of S with C).
The numbers themselves are tested against their oracles in test_eccv_metrics.py and
test_semantic_metrics.py; here: that vsl-eval runs, prints and writes them, and refuses what does
not apply."""
import json

import numpy as np
import pytest
import torch

from vsl_ext import CaptionIndex, metrics
from vsl_ext.harness.evaluate import main as eval_main

CAPTIONS = [["a dog on a couch", "a brown dog sleeping"], ["a cat on a mat", "a cat sleeping on a mat"],
            ["a man riding a horse", "a horse with a rider"], ["a dog and a cat", "a cat next to a dog"]]


@pytest.fixture
def small(tmp_path):
    rng = np.random.default_rng(0)
    sims = rng.random((4, 8)).astype(np.float32)
    sims[np.arange(8) // 2, np.arange(8)] += 1.0
    path = tmp_path / "sims.npy"
    np.save(path, sims)
    index = CaptionIndex.from_captions(CAPTIONS)
    index.save(tmp_path / "caps.index")
    return sims, str(path), str(tmp_path / "caps.index"), index


def test_saved_sims_with_a_caption_index(small, tmp_path, capsys):
    sims, path, index_path, index = small
    out = tmp_path / "m.json"
    assert eval_main(["--sims", path, "--captions-per-image", "2", "--caption-index", index_path,
                      "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "i2t R@1/5/10 100.0" in printed and "ASP i2t/t2i" in printed and "rank agreement" in printed
    summary = json.loads(out.read_text())
    c = index.image_similarity(torch.arange(4)).numpy()
    asp = metrics.average_semantic_precision(sims, c, 2)
    assert summary["semantic"]["asp_i2t"] == pytest.approx(asp["i2t"])
    assert summary["semantic"]["asp_t2i"] == pytest.approx(asp["t2i"])
    assert summary["semantic"]["rank_agreement"] == pytest.approx(metrics.rank_agreement(sims, c, 2))
    assert summary["results"]["full"]["i2t_r1"] == 100.0


def test_refusals(small, tmp_path, capsys):
    sims, path, index_path, _ = small
    assert eval_main(["--sims", path, "--captions-per-image", "2", "--eccv"]) == 2
    assert "COCO 5K test set (5000 images x 25000 captions" in capsys.readouterr().err
    other = CaptionIndex.from_captions(CAPTIONS[:3])
    other.save(tmp_path / "three.index")
    assert eval_main(["--sims", path, "--captions-per-image", "2", "--caption-index",
                      str(tmp_path / "three.index")]) == 2
    assert "indexes 3 images, the evaluation has 4" in capsys.readouterr().err
    assert eval_main(["--sims", path]) == 2    # 8 columns are not 4 images x 5 captions
    assert "not an (images x images * 5 captions)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_main(["--sims", path, "model.pth"])


def test_eccv_on_a_saved_5k_similarity(tmp_path, capsys):
    pytest.importorskip("eccv_caption", reason='needs eccv-caption (pip install "vsl_ext[eccv]")')
    rng = np.random.default_rng(1)
    sims = rng.random(metrics.COCO_5K_SHAPE, dtype=np.float32)
    sims[np.arange(25000) // 5, np.arange(25000)] += 0.99
    np.save(tmp_path / "s.npy", sims)
    out = tmp_path / "m.json"
    assert eval_main(["--sims", str(tmp_path / "s.npy"), "--dataset", "coco", "--eccv", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "coco5k" in printed and "coco1k" in printed and "ECCV mAP@R" in printed
    summary = json.loads(out.read_text())
    assert set(summary["eccv"]) == set(metrics.ECCV_KEYS)
    # the package's COCO 5K R@K is vsl_ext's own R@K of the same matrix (no ties here)
    for d in ("i2t", "t2i"):
        for k in (1, 5, 10):
            assert 100 * summary["eccv"][f"coco_5k_r{k}"][d] == pytest.approx(summary["results"]["coco5k"][f"{d}_r{k}"])
