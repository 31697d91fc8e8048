"""Training harness: short CPU runs of every model, resume after a kill, evaluation CLI, bad input."""
import json
import os

import numpy as np
import pytest
import torch

from vsl_ext.harness import demo as demo_mod
from vsl_ext.harness import trainer as trainer_mod
from vsl_ext.harness.data.synthetic import SyntheticConfig, generate
from vsl_ext.harness.evaluate import load_checkpoint
from vsl_ext.harness.evaluate import main as eval_main
from vsl_ext.harness.train import TrainConfig, Trainer, train
from vsl_ext.harness.train import main as train_main


@pytest.fixture(autouse=True)
def _setup():
    torch.set_num_threads(1)



def tiny_cfg(data, out, **kw):
    base = dict(data=data, dataset="synthetic", output=str(out), embed_size=16, word_dim=8, sim_dim=8,
                batch_size=20, epochs=1, progress=False, tensorboard=False, seed=0, lr_update=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("model", ["vse", "sgr", "saf"])
def test_two_iterations_of_each_model(tiny_data, tmp_path, model):
    logs = []
    summary = train(tiny_cfg(tiny_data, tmp_path, model=model, text_side=(model == "saf")), log=logs.append)
    assert summary["global_step"] == 2                       # 40 captions / batch 20
    hist = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert len(hist) == 1 and hist[0]["epoch"] == 1
    assert np.isfinite(hist[0]["train_loss"]) and hist[0]["train_vsl"] > 0
    assert set(summary["test"]["full"]) >= {"i2t_r1", "t2i_r10", "rsum"}
    for name in ("checkpoint.pth", "model_best.pth", "config.json", "vocab.json", "results.json"):
        assert (tmp_path / name).is_file()
    m, vocab, ckpt = load_checkpoint(str(tmp_path / "model_best.pth"))
    assert ckpt["model"]["name"] == model and len(vocab) == m.config["vocab_size"]
    slow_note = [line for line in logs if line.startswith(f"note: {model} scores every image-caption pair")]
    assert len(slow_note) == (model != "vse")  # the pairwise heads warn that a CPU is slow for them


def test_tensorboard_logs_train_and_validation_scalars(tiny_data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # 40 captions in batches of 4: 10 steps per epoch; training scalars are written every 10 steps
    train(tiny_cfg(tiny_data, tmp_path, epochs=2, batch_size=4, tensorboard=True), log=lambda m: None)
    (events,) = (tmp_path / "tensorboard").iterdir()
    acc = EventAccumulator(str(events))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for tag in ("train/loss", "train/triplet", "train/vsl", "val/rsum", "val/i2t_r1"):
        assert tag in tags
    assert len(acc.Scalars("val/rsum")) == 2                  # one per epoch
    assert [e.step for e in acc.Scalars("train/loss")] == [10, 20]


def test_baseline_has_no_vsl_term(tiny_data, tmp_path):
    summary = train(tiny_cfg(tiny_data, tmp_path, vsl=False), log=lambda m: None)
    hist = json.loads(open(tmp_path / "metrics.jsonl").readline())
    assert hist["train_vsl"] == 0.0 and summary["epochs"] == 1


def _state(out):
    ckpt = torch.load(os.path.join(out, "checkpoint.pth"), weights_only=True)
    lines = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    for line in lines:
        line.pop("train_seconds"), line.pop("val_seconds")
    return ckpt, lines


@pytest.mark.parametrize("every,crash_after", [(0, 4), (1, 5), (2, 7)])
def test_resume_after_kill_reaches_the_uninterrupted_state(tiny_data, tmp_path, every, crash_after):
    quiet = dict(log=lambda m: None)
    ref_out, out = tmp_path / "ref", tmp_path / "run"
    train(tiny_cfg(tiny_data, ref_out, epochs=3, batch_size=16, checkpoint_every=every), **quiet)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(tiny_data, out, epochs=3, batch_size=16, checkpoint_every=every),
              crash_after_steps=crash_after, **quiet)
    # resume from the command line values alone: output + resume (epochs etc. come from the checkpoint)
    train(TrainConfig(output=str(out), resume=True, epochs=0, progress=False, tensorboard=False), **quiet)
    ref, ref_lines = _state(ref_out)
    got, got_lines = _state(out)
    assert got_lines == ref_lines
    assert (got["epoch"], got["step"], got["global_step"]) == (ref["epoch"], ref["step"], ref["global_step"])
    for k, v in ref["model"]["state_dict"].items():
        assert torch.equal(v, got["model"]["state_dict"][k]), k
    ref_opt, got_opt = ref["optimizer"]["state"], got["optimizer"]["state"]
    for k in ref_opt:
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(ref_opt[k][name], got_opt[k][name])


def test_checkpoint_writes_are_atomic(tiny_data, tmp_path, monkeypatch):
    train(tiny_cfg(tiny_data, tmp_path), log=lambda m: None)
    good = (tmp_path / "checkpoint.pth").read_bytes()

    def dying_save(obj, f, *a, **k):
        f.write(b"partial")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(trainer_mod.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        trainer_mod.atomic_save({"x": 1}, str(tmp_path / "checkpoint.pth"))
    assert (tmp_path / "checkpoint.pth").read_bytes() == good
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_cli_train_and_eval(tiny_data, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = train_main(["--data", tiny_data, "--output", str(out), "--model", "vse", "--embed-size", "16",
                     "--word-dim", "8", "--batch-size", "20", "--epochs", "1", "--no-progress", "--no-tensorboard"])
    assert rc == 0
    rc = eval_main([str(out / "model_best.pth"), "--data", tiny_data, "--split", "dev", "--json",
                    str(tmp_path / "m.json")])
    assert rc == 0
    assert "i2t R@1/5/10" in capsys.readouterr().out
    res = json.load(open(tmp_path / "m.json"))["results"]["full"]
    assert 0 <= res["rsum"] <= 600


def test_clear_errors(tiny_data, tmp_path, capsys):
    assert train_main(["--data", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 2
    assert "data folder not found" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("train_ims.npy", "train_caps.txt", "dev_caps.txt"):
        os.link(os.path.join(tiny_data, f), bad / f)
    assert train_main(["--data", str(bad), "--output", str(tmp_path / "o")]) == 2
    assert "dev_ims.npy" in capsys.readouterr().err
    np.save(bad / "dev_ims.npy", np.zeros((3, 5, 12), np.float32))          # 3 images, 20 captions
    assert train_main(["--data", str(bad), "--output", str(tmp_path / "o")]) == 2
    assert "20 captions but" in capsys.readouterr().err
    np.save(bad / "dev_ims.npy", np.zeros((4, 5, 7), np.float32))           # wrong feature size
    assert train_main(["--data", str(bad), "--output", str(tmp_path / "o")]) == 2
    assert "(5, 7)" in capsys.readouterr().err
    assert train_main(["--output", str(tmp_path / "none"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert eval_main([str(tmp_path / "nope.pth"), "--data", tiny_data]) == 2
    (tmp_path / "junk.pth").write_bytes(b"junk")
    assert eval_main([str(tmp_path / "junk.pth"), "--data", tiny_data]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    with pytest.raises(ValueError, match="batch-size"):
        Trainer(tiny_cfg(tiny_data, tmp_path / "x", batch_size=1))
    with pytest.raises(SystemExit):
        train_main(["--model", "nope", "--data", tiny_data])


def test_existing_run_is_not_overwritten_by_accident(tiny_data, tmp_path, capsys):
    train(tiny_cfg(tiny_data, tmp_path), log=lambda m: None)
    args = ["--data", tiny_data, "--output", str(tmp_path), "--embed-size", "16", "--word-dim", "8",
            "--batch-size", "20", "--epochs", "1", "--no-progress", "--no-tensorboard"]
    assert train_main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert train_main(args + ["--overwrite"]) == 0


def test_resume_refuses_different_data(tiny_data, tmp_path):
    train(tiny_cfg(tiny_data, tmp_path / "r"), log=lambda m: None)
    other = tmp_path / "other"
    generate(str(other), SyntheticConfig(train_images=6, dev_images=4, test_images=4, regions=5, feat_dim=12))
    with pytest.raises(ValueError, match="trained on"):
        Trainer(TrainConfig(output=str(tmp_path / "r"), data=str(other), resume=True, epochs=0, progress=False))


def test_demo_pipeline_writes_table_and_chart(tmp_path, monkeypatch):
    small = SyntheticConfig(train_images=12, dev_images=4, test_images=4, regions=5, feat_dim=12)
    monkeypatch.setattr("vsl_ext.harness.data.synthetic.SyntheticConfig", lambda: small)
    monkeypatch.setattr(demo_mod, "demo_config", lambda data, output, seed, vsl, epochs=None, device="auto",
                        progress=True, threads=1: tiny_cfg(data, output, vsl=vsl, seed=seed, test_split="test"))
    logs = []
    summary = demo_mod.run_demo(str(tmp_path), seeds=[0, 1], progress=False, log=logs.append)
    assert len(summary["results"]["vsl"]) == 2
    md = (tmp_path / "results.md").read_text()
    assert "| i2t R@1 |" in md and "±" in md
    assert (tmp_path / "results.png").is_file() or "matplotlib" in "\n".join(logs)
