"""Files keep the permissions the user asked for (issue 21, item 2): every output of vsl_ext and its
harness, written by the one atomic writer (vsl_ext/_atomic.py), gets the mode ``open(path, "w")``
gives under the current umask when it is new, and keeps its own mode when it is replaced. The right
value is the mode of a file made with plain ``open()`` under the same umask."""
import contextlib
import os
import stat

import numpy as np
import pytest
import torch

from vsl_ext._atomic import atomic_open, atomic_write, current_umask
from vsl_ext.harness.checkpoint_io import save_checkpoint
from vsl_ext.harness.data.synthetic import SyntheticConfig, generate
from vsl_ext.harness.data.vocab import Vocabulary
from vsl_ext.harness.evaluate import main as eval_main
from vsl_ext.harness.train import TrainConfig, train

UMASKS = [0o022, 0o077, 0o002]


@contextlib.contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def open_mode(folder) -> int:
    """The mode plain open(path, "w") gives a new file under the current umask."""
    ref = os.path.join(folder, "reference-open")
    with open(ref, "w"):
        pass
    got = mode(ref)
    os.unlink(ref)
    return got


def _files(folder):
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "tensorboard"]     # written by tensorboard itself
        for name in names:
            yield os.path.join(root, name)


@pytest.mark.parametrize("mask", UMASKS)
def test_current_umask_is_read_without_changing_it(mask):
    with umask(mask):
        assert current_umask() == mask
        assert os.umask(mask) == mask


@pytest.mark.parametrize("mask", UMASKS)
def test_new_file_gets_open_s_mode_and_a_replaced_file_keeps_its_own(tmp_path, mask):
    with umask(mask):
        expect = open_mode(tmp_path)
        atomic_write(tmp_path / "t.txt", "text")
        atomic_write(tmp_path / "b.bin", b"bytes")
        with atomic_open(tmp_path / "sub" / "n.npy") as f:       # a new folder, as makedirs makes it
            np.save(f, np.arange(3))
        assert mode(tmp_path / "t.txt") == mode(tmp_path / "b.bin") == mode(tmp_path / "sub" / "n.npy") == expect
        assert mode(tmp_path / "sub") == 0o777 & ~mask
        for kept in (0o640, 0o660, 0o600, 0o444):
            os.chmod(tmp_path / "t.txt", kept)
            atomic_write(tmp_path / "t.txt", "new text")
            assert mode(tmp_path / "t.txt") == kept
            assert (tmp_path / "t.txt").read_text() == "new text"
        assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_a_failed_write_leaves_the_old_file_and_its_mode(tmp_path):
    atomic_write(tmp_path / "t.txt", "old")
    os.chmod(tmp_path / "t.txt", 0o640)
    with pytest.raises(RuntimeError):
        with atomic_open(tmp_path / "t.txt", "w", "utf-8") as f:
            f.write("half")
            raise RuntimeError("killed")
    assert (tmp_path / "t.txt").read_text() == "old" and mode(tmp_path / "t.txt") == 0o640
    assert os.listdir(tmp_path) == ["t.txt"]


@pytest.mark.parametrize("mask", UMASKS)
def test_library_writers_vocab_index_checkpoint(tmp_path, mask):
    pytest.importorskip("vsl_ext.caption_index")
    from vsl_ext.caption_index import CaptionIndex
    from vsl_ext.phrases import _write_cache

    with umask(mask):
        expect = open_mode(tmp_path)
        vocab = Vocabulary.build(["a dog runs", "a cat sits"])
        vocab.save(str(tmp_path / "vocab.json"))
        index = CaptionIndex.from_captions([["a dog runs", "a dog"], ["a cat sits", "a cat"]], mode="tfidf")
        index.save(tmp_path / "index.vsl")
        save_checkpoint({"x": torch.ones(2)}, str(tmp_path / "c.pth"))
        _write_cache(str(tmp_path / "caps.phrases"), {"k": 1}, [])        # the phrase-parse cache
        names = ("vocab.json", "index.vsl", "c.pth", "caps.phrases")
        for name in names:
            assert mode(tmp_path / name) == expect, name
            os.chmod(tmp_path / name, 0o640)
        vocab.save(str(tmp_path / "vocab.json"))
        index.save(tmp_path / "index.vsl")
        save_checkpoint({"x": torch.ones(2)}, str(tmp_path / "c.pth"))
        _write_cache(str(tmp_path / "caps.phrases"), {"k": 2}, [])
        for name in names:
            assert mode(tmp_path / name) == 0o640, name


@pytest.mark.parametrize("mask", [0o077, 0o002])
def test_harness_outputs_under_the_umask(tmp_path, mask):
    """Synthetic data, a run's checkpoints/config/metrics/results/vocabulary, vsl-eval's JSON and
    similarity matrix: each gets open()'s mode; rewritten (resume, a second vsl-eval) each keeps a
    mode it was given."""
    torch.set_num_threads(1)
    data, out = tmp_path / "data", tmp_path / "run"
    with umask(mask):
        expect = open_mode(tmp_path)
        generate(str(data), SyntheticConfig(train_images=8, dev_images=4, test_images=4, regions=5, feat_dim=12))
        cfg = dict(data=str(data), dataset="synthetic", output=str(out), embed_size=16, word_dim=8, batch_size=20,
                   progress=False, tensorboard=False, seed=0)
        train(TrainConfig(epochs=1, **cfg), log=lambda m: None)
        evaluation = [str(out / "model_best.pth"), "--data", str(data), "--split", "dev",
                      "--json", str(tmp_path / "eval" / "m.json"), "--save-sims", str(tmp_path / "eval" / "s.npy")]
        assert eval_main(evaluation) == 0
        written = sorted(_files(data)) + sorted(_files(out)) + sorted(_files(tmp_path / "eval"))
        names = {os.path.basename(p) for p in written}
        assert {"train_ims.npy", "train_caps.txt", "checkpoint.pth", "model_best.pth", "config.json",
                "vocab.json", "metrics.jsonl", "results.json", "m.json", "s.npy"} <= names
        assert {p: mode(p) for p in written} == {p: expect for p in written}

        for p in written:
            os.chmod(p, 0o640)
        train(TrainConfig(epochs=2, resume=True, **cfg), log=lambda m: None)
        assert eval_main(evaluation + ["--overwrite"]) == 0
        rewritten = [out / n for n in ("checkpoint.pth", "config.json", "vocab.json", "metrics.jsonl",
                                      "results.json")] + [tmp_path / "eval" / "m.json", tmp_path / "eval" / "s.npy"]
        assert {str(p): mode(p) for p in rewritten} == {str(p): 0o640 for p in rewritten}
