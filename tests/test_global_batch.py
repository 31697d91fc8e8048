"""vsl-train --global-batch over 2 and 3 gloo processes trains exactly like one process."""
import json
import os
import tempfile

import pytest
import torch
import torch.multiprocessing as mp

import gloo_worker
from vsl_ext.harness.train import TrainConfig, Trainer, train


def _cfg(data, out, **kw):
    # default dropout (0.4): every caption's mask comes from its own seed, so sharding changes none
    base = dict(data=data, dataset="synthetic", output=out, model="vse", embed_size=16, word_dim=8, batch_size=20,
                epochs=2, progress=False, tensorboard=False, seed=0, lr_update=1)
    base.update(kw)
    return TrainConfig(**base)


def _train_shard(rank, world, data, out):
    train(_cfg(data, out, global_batch=True), log=lambda m: None)



@pytest.mark.parametrize("world", [2, 3])
def test_global_batch_matches_single_process(tiny_data, tmp_path, world):
    torch.set_num_threads(1)
    single = str(tmp_path / "single")
    train(_cfg(tiny_data, single), log=lambda m: None)
    sharded = str(tmp_path / "sharded")
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(gloo_worker.run, args=(world, os.path.join(d, "init"), _train_shard, tiny_data, sharded), nprocs=world,
                 join=True)
    a = torch.load(os.path.join(single, "checkpoint.pth"), weights_only=True)
    b = torch.load(os.path.join(sharded, "checkpoint.pth"), weights_only=True)
    assert a["global_step"] == b["global_step"] == 4
    for name, value in a["model"]["state_dict"].items():
        torch.testing.assert_close(b["model"]["state_dict"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    hist_a = [json.loads(line) for line in open(os.path.join(single, "metrics.jsonl"))]
    hist_b = [json.loads(line) for line in open(os.path.join(sharded, "metrics.jsonl"))]
    for ha, hb in zip(hist_a, hist_b):
        for key in ("train_loss", "train_triplet", "train_vsl"):
            assert hb[key] == pytest.approx(ha[key], rel=1e-5, abs=1e-6)
    if world != 2:
        return
    # dropout was on: without it the same run ends elsewhere
    assert TrainConfig().dropout == a["config"]["dropout"] == b["config"]["dropout"] == 0.4
    no_dropout = str(tmp_path / "no_dropout")
    train(_cfg(tiny_data, no_dropout, dropout=0.0), log=lambda m: None)
    c = torch.load(os.path.join(no_dropout, "checkpoint.pth"), weights_only=True)
    assert not torch.allclose(c["model"]["state_dict"]["txt_enc.embed.weight"],
                              a["model"]["state_dict"]["txt_enc.embed.weight"], rtol=1e-4, atol=1e-5)


def test_global_batch_rejects_models_that_do_not_shard(tiny_data, tmp_path):
    for kw in (dict(model="sgr"), dict(variant="public-code"), dict(text_side=True)):
        with pytest.raises(ValueError, match="--global-batch needs --model vse"):
            Trainer(_cfg(tiny_data, str(tmp_path / "x"), global_batch=True, **kw))


def test_global_batch_outside_torchrun_is_a_clear_error(tiny_data, tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        Trainer(_cfg(tiny_data, str(tmp_path / "y"), global_batch=True))
