"""Ctrl-C and --resume: an interrupted run resumed with default options ends where an uninterrupted
run ends, with everything that changes the numbers (the thread count too) taken from the run."""
import json
import os
import signal

import pytest
import torch

from vsl_ext.harness import trainer as trainer_mod
from vsl_ext.harness.train import TrainConfig, train
from vsl_ext.harness.train import main as train_main


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def default_sigint():
    """Python's own SIGINT handler (a background job inherits an ignored SIGINT), restored after."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _cfg(data, out, **kw):
    base = dict(data=data, dataset="synthetic", output=str(out), embed_size=16, word_dim=8, batch_size=16,
                epochs=3, lr_update=1, progress=False, tensorboard=False, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def _final_state(out):
    ckpt = torch.load(os.path.join(out, "checkpoint.pth"), weights_only=False)
    lines = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    for line in lines:
        line.pop("train_seconds"), line.pop("val_seconds")
    return ckpt, lines


def _assert_same_run(ref_out, out):
    ref, ref_lines = _final_state(ref_out)
    got, got_lines = _final_state(out)
    assert got_lines == ref_lines
    assert (got["epoch"], got["step"], got["global_step"]) == (ref["epoch"], ref["step"], ref["global_step"])
    for k, v in ref["model"]["state_dict"].items():
        assert torch.equal(v, got["model"]["state_dict"][k]), k
    assert json.load(open(os.path.join(out, "results.json")))["test"] == \
        json.load(open(os.path.join(ref_out, "results.json")))["test"]


def test_resume_with_default_options_keeps_the_runs_thread_count_and_device(tiny_data, tmp_path):
    quiet = dict(log=lambda m: None)
    ref_out, out = tmp_path / "ref", tmp_path / "run"
    train(_cfg(tiny_data, ref_out, threads=2, device="cpu"), **quiet)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tiny_data, out, threads=2, device="cpu"), crash_after_steps=4, **quiet)
    torch.set_num_threads(1)      # a new process whose default differs from the run's
    assert train_main(["--output", str(out), "--resume", "--no-progress", "--no-tensorboard"]) == 0
    assert torch.get_num_threads() == 2
    config = json.load(open(out / "config.json"))
    assert (config["threads"], config["device"]) == (2, "cpu")      # the run's own, not the defaults
    _assert_same_run(ref_out, out)


def test_a_new_run_records_the_default_thread_count(tiny_data, tmp_path):
    torch.set_num_threads(2)
    train(_cfg(tiny_data, tmp_path, epochs=1), log=lambda m: None)
    assert json.load(open(tmp_path / "config.json"))["threads"] == 1 == torch.get_num_threads()


def test_ctrl_c_saves_between_steps_and_the_resumed_run_is_exact(tiny_data, tmp_path, monkeypatch, capsys,
                                                                 default_sigint):
    quiet = dict(log=lambda m: None)
    ref_out, out = tmp_path / "ref", tmp_path / "run"
    train(_cfg(tiny_data, ref_out), **quiet)

    real_step = trainer_mod.Trainer.train_step
    calls = []

    def step_then_ctrl_c(self, ids):
        out_ = real_step(self, ids)
        calls.append(1)
        if len(calls) == 5:              # in epoch 2 (3 steps per epoch): Ctrl-C arrives during a step
            os.kill(os.getpid(), signal.SIGINT)
        return out_

    monkeypatch.setattr(trainer_mod.Trainer, "train_step", step_then_ctrl_c)
    args = ["--data", tiny_data, "--dataset", "synthetic", "--output", str(out), "--embed-size", "16",
            "--word-dim", "8", "--batch-size", "16", "--epochs", "3", "--lr-update", "1", "--no-progress",
            "--no-tensorboard"]
    assert train_main(args) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert str(out / "checkpoint.pth") in err[0] and err[0].endswith(f"vsl-train --output {out} --resume")
    ckpt = torch.load(out / "checkpoint.pth", weights_only=False)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 2)     # the step in flight finished and was saved
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.setattr(trainer_mod.Trainer, "train_step", real_step)
    assert train_main(["--output", str(out), "--resume", "--no-progress", "--no-tensorboard"]) == 0
    _assert_same_run(ref_out, out)
