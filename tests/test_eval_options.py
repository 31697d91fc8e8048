"""vsl-eval's runtime options: --threads (the metrics' last digit can depend on it), the progress
bar of long evaluations, and --overwrite (no output file is replaced without it)."""
import json

import numpy as np
import pytest
import torch

from vsl_ext.harness.evaluate import main as eval_main
from vsl_ext.harness.train import TrainConfig, train


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def saf_checkpoint(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("saf")
    train(TrainConfig(data=tiny_data, dataset="synthetic", output=str(out), model="saf", embed_size=16, word_dim=8,
                      sim_dim=8, batch_size=20, epochs=1, progress=False, tensorboard=False, test_split=None),
          log=lambda m: None)
    return str(out / "model_best.pth")


def test_threads_default_to_one_and_can_be_set(saf_checkpoint, tiny_data):
    torch.set_num_threads(2)
    assert eval_main([saf_checkpoint, "--data", tiny_data, "--no-progress"]) == 0
    assert torch.get_num_threads() == 1
    assert eval_main([saf_checkpoint, "--data", tiny_data, "--no-progress", "--threads", "2"]) == 0
    assert torch.get_num_threads() == 2
    with pytest.raises(SystemExit):
        eval_main([saf_checkpoint, "--data", tiny_data, "--threads", "-1"])


def test_a_pairwise_head_shows_progress_while_it_scores(saf_checkpoint, tiny_data, capsys):
    pytest.importorskip("tqdm")
    assert eval_main([saf_checkpoint, "--data", tiny_data, "--shard", "2"]) == 0     # 4 images: 2 shards
    assert "similarities (images)" in capsys.readouterr().err
    assert eval_main([saf_checkpoint, "--data", tiny_data, "--shard", "2", "--no-progress"]) == 0
    assert "similarities (images)" not in capsys.readouterr().err


def test_no_output_file_is_replaced_without_overwrite(saf_checkpoint, tiny_data, tmp_path, capsys):
    metrics, sims = tmp_path / "m.json", tmp_path / "s.npy"
    metrics.write_text("earlier")
    sims.write_bytes(b"earlier")
    run = [saf_checkpoint, "--data", tiny_data, "--no-progress", "--json", str(metrics),
           "--save-sims", str(tmp_path / "s")]
    assert eval_main(run) == 2
    err = capsys.readouterr().err
    assert str(metrics) in err and str(sims) in err and "--overwrite" in err
    assert metrics.read_text() == "earlier" and sims.read_bytes() == b"earlier"
    assert eval_main(run + ["--overwrite"]) == 0
    assert "results" in json.loads(metrics.read_text())
    assert np.load(sims).shape == (4, 20)       # tiny_data's test split: 4 images x 5 captions
