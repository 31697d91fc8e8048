"""Checkpoints cannot run code (issue 21, item 1): every file vsl-train writes loads with
torch.load(weights_only=True), vsl-eval and vsl-train --resume load nothing any other way, a crafted
file's pickle never runs, and a checkpoint of the earlier format is refused with its conversion
command, which converts it without running anything."""
import builtins
import os
import re

import numpy as np
import pytest
import torch

from vsl_ext.harness import checkpoint_io
from vsl_ext.harness.convert_checkpoint import main as convert_main
from vsl_ext.harness.evaluate import main as eval_main
from vsl_ext.harness.train import TrainConfig, train
from vsl_ext.harness.train import main as train_main

OPEN = r"(builtins|io)\.open"   # builtins.open pickles as io.open


class _OpensAFile:
    """Pickles as a call of builtins.open(marker, "w"): loading it unsafely creates the marker."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ckpt_run")
    train(TrainConfig(data=tiny_data, dataset="synthetic", output=str(out), embed_size=16, word_dim=8,
                      batch_size=20, epochs=1, progress=False, tensorboard=False, seed=0), log=lambda m: None)
    return tiny_data, str(out)


def _crafted(path, marker):
    torch.save({"format": checkpoint_io.CHECKPOINT_FORMAT, "version": 2, "model": _OpensAFile(marker),
                "vocab": ["a"]}, path)


def test_every_checkpoint_written_loads_weights_only(run):
    _, out = run
    for name in ("checkpoint.pth", "model_best.pth"):
        path = os.path.join(out, name)
        ckpt = torch.load(path, map_location="cpu", weights_only=True)      # raises if anything else is inside
        assert ckpt["version"] == 2
        assert isinstance(ckpt["rng"]["numpy"]["key"], torch.Tensor)
        if hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
            assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    np.random.seed(5)
    np.random.standard_normal()           # leaves a cached Gaussian: has_gauss = 1
    checkpoint_io.save_checkpoint({"rng": checkpoint_io.rng_state()}, str(tmp_path / "s.pth"))
    expect = (np.random.random(4), __import__("random").random(), torch.rand(3))
    np.random.seed(0)
    checkpoint_io.set_rng_state(torch.load(tmp_path / "s.pth", weights_only=True)["rng"])
    got = (np.random.random(4), __import__("random").random(), torch.rand(3))
    assert np.array_equal(expect[0], got[0]) and expect[1] == got[1] and torch.equal(expect[2], got[2])


def test_crafted_checkpoint_runs_nothing(run, tmp_path, capsys):
    data, _ = run
    marker = tmp_path / "MARKER"
    path = str(tmp_path / "evil.pth")
    _crafted(path, str(marker))
    torch.load(path, weights_only=False)        # the file is effective: an unsafe load creates the marker
    assert marker.exists()
    marker.unlink()

    assert eval_main([path, "--data", data, "--split", "dev"]) == 2
    err = capsys.readouterr().err
    assert re.search(OPEN, err) and "weights_only=True" in err
    assert not marker.exists()

    resumed = tmp_path / "resume"
    resumed.mkdir()
    _crafted(str(resumed / "checkpoint.pth"), str(marker))
    assert train_main(["--output", str(resumed), "--resume"]) == 2
    assert re.search(OPEN, capsys.readouterr().err)
    assert not marker.exists()

    assert convert_main([path]) == 2             # the converter refuses it too, unread
    assert re.search(OPEN, capsys.readouterr().err)
    assert not marker.exists()


def _earlier_format(path_new, path_old):
    """A format-1 file: the new checkpoint with numpy's random state as np.random.get_state()'s tuple."""
    ckpt = torch.load(path_new, weights_only=True)
    state = ckpt["rng"]["numpy"]
    ckpt["rng"]["numpy"] = (state["bit_generator"], state["key"].numpy().astype(np.uint32), state["pos"],
                            state["has_gauss"], state["cached_gaussian"])
    ckpt["version"] = 1
    torch.save(ckpt, path_old)
    return ckpt


def test_earlier_format_is_refused_with_its_conversion_command_and_converts(run, tmp_path, capsys):
    data, out = run
    old = str(tmp_path / "old.pth")
    written = _earlier_format(os.path.join(out, "checkpoint.pth"), old)
    assert eval_main([old, "--data", data, "--split", "dev"]) == 2
    err = capsys.readouterr().err
    assert "earlier format" in err and f"python -m vsl_ext.harness.convert_checkpoint {old}" in err

    os.chmod(old, 0o640)
    assert convert_main([old]) == 0
    assert os.stat(old).st_mode & 0o777 == 0o640                  # rewritten in place, mode kept
    new = torch.load(old, weights_only=True)
    assert new["version"] == 2
    assert np.array_equal(new["rng"]["numpy"]["key"].numpy().astype(np.uint32), written["rng"]["numpy"][1])
    assert new["rng"]["numpy"]["pos"] == written["rng"]["numpy"][2]
    for k, v in written["model"]["state_dict"].items():
        assert torch.equal(new["model"]["state_dict"][k], v)
    assert eval_main([old, "--data", data, "--split", "dev"]) == 0


def test_resume_of_a_converted_checkpoint_continues(run, tmp_path):
    data, out = run
    folder = tmp_path / "run"
    folder.mkdir()
    _earlier_format(os.path.join(out, "checkpoint.pth"), str(folder / "checkpoint.pth"))
    with pytest.raises(checkpoint_io.EarlierCheckpointFormat):
        train(TrainConfig(output=str(folder), resume=True, epochs=0, data=data, progress=False,
                          tensorboard=False), log=lambda m: None)
    assert convert_main([str(folder / "checkpoint.pth")]) == 0
    summary = train(TrainConfig(output=str(folder), resume=True, epochs=2, data=data, progress=False,
                                tensorboard=False), log=lambda m: None)
    assert summary["epochs"] == 2
