"""Bad-input campaign, processes and files (issue 12): vsl_ext.distributed.vsl_loss with one rank's
input bad (2 gloo ranks: every rank must end with an error, none may wait forever), and the CLIs:
vsl-train resumed from truncated or foreign checkpoints, vsl-eval on checkpoints of another model,
vsl-prepare-images on unreadable images. A CLI's bad input ends it with exit code 2 and a message
naming the file, and leaves the files it found as they were and none half-written."""
import csv
import math
import os
import tempfile
import time

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import bad_input as oracle
import gloo_worker
import vsl_ext.distributed
from bad_input import cell
from vsl_ext.harness.data.synthetic import SyntheticConfig, generate
from vsl_ext.harness.evaluate import main as eval_main
from vsl_ext.harness.prepare_images import main as prepare_main
from vsl_ext.harness.train import TrainConfig, train
from vsl_ext.harness.train import main as train_main

DIST = "vsl_ext.distributed.vsl_loss"
N = 10
OTHER = (ValueError, "other rank")


def _rows(rank, lo=5):
    s = torch.randn(N, N, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3e-3
    c = torch.randn(N, N, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3e-3
    return (s[:lo], c[:lo]) if rank == 0 else (s[lo:], c[lo:])


# (name, kind, call on rank r -> loss, expected on rank 0, expected on rank 1); expected: (error type,
# message) or "value" (the loss of the full batch) or "nan".
def _scenario_calls():
    def ok(rank, **kw):
        s, c = _rows(rank)
        return vsl_ext.distributed.vsl_loss(s, c, **kw)

    def bad_on(bad_rank, make):
        def call(rank):
            if rank == bad_rank:
                return make()
            return ok(rank)
        return call

    return [
        ("int64 rows on rank 1", "dtype", bad_on(1, lambda: vsl_ext.distributed.vsl_loss(
            torch.ones(5, N, dtype=torch.int64), torch.ones(5, N))), OTHER, (TypeError, "local_sims must be a floating-point tensor")),
        ("a list on rank 1", "dtype", bad_on(1, lambda: vsl_ext.distributed.vsl_loss([[0.0] * N], torch.ones(1, N))),
         OTHER, (ValueError, r"local_sims must be a 2-D \(rows, N\) tensor, got list")),
        ("3-D rows on rank 0", "shape / rank", bad_on(0, lambda: vsl_ext.distributed.vsl_loss(
            torch.ones(5, N, 1), torch.ones(5, N, 1))), (ValueError, "local_sims must be a 2-D"), OTHER),
        ("semantic rows of another shape on rank 0", "shape / rank", bad_on(0, lambda: vsl_ext.distributed.vsl_loss(
            torch.ones(5, N), torch.ones(4, N))), (ValueError, r"local_semantic_sims must have the shape of local_sims \(5, 10\)"), OTHER),
        ("11 columns on rank 1", "shape / rank", bad_on(1, lambda: vsl_ext.distributed.vsl_loss(
            torch.ones(5, N + 1), torch.ones(5, N + 1))), (ValueError, r"different column counts \[10, 11\]"),
         (ValueError, r"different column counts \[10, 11\]")),
        ("rows adding up to 8", "shape / rank", bad_on(1, lambda: vsl_ext.distributed.vsl_loss(
            torch.ones(3, N), torch.ones(3, N))), (ValueError, "hold 8 rows in all"), (ValueError, "hold 8 rows in all")),
        ("tau 0 on rank 1", "tau", bad_on(1, lambda: ok(1, tau=0.0)), OTHER, (ValueError, "tau must be a finite number")),
        ("tau 2e-3 on rank 1", "tau", bad_on(1, lambda: ok(1, tau=2e-3)), (ValueError, "different tau"),
         (ValueError, "different tau")),
        ("public-code on rank 0", "other arguments", bad_on(0, lambda: ok(0, variant="public-code")),
         (ValueError, "public-code"), OTHER),
        ("NaN on rank 1", "NaN", bad_on(1, lambda: vsl_ext.distributed.vsl_loss(
            _rows(1)[0].index_fill(1, torch.tensor([2]), math.nan), _rows(1)[1])), "nan", "nan"),
        ("no rows on rank 0", "empty", lambda rank: vsl_ext.distributed.vsl_loss(*_rows(rank, lo=0)), "value", "value"),
    ]


SCENARIO_KINDS = [kind for _, kind, _, _, _ in _scenario_calls()]


def _scenarios(rank, world, results_dir):
    full = oracle.loss(*[torch.cat(p) for p in zip(_rows(0), _rows(1))])
    lines = []
    for name, _, call, *expected in _scenario_calls():
        want = expected[rank]
        try:
            got = call(rank).item()
        except (ValueError, TypeError) as exc:
            outcome = "ok" if isinstance(want, tuple) and isinstance(exc, want[0]) and __import__("re").search(
                want[1], str(exc)) else f"wrong error {type(exc).__name__}: {exc}"
        else:
            outcome = ("ok" if (want == "nan" and math.isnan(got)) or (want == "value" and abs(got - full) < 1e-9)
                       else f"returned {got} (full batch {full})")
        lines.append(f"{name}: {outcome}")
    with open(os.path.join(results_dir, f"rank{rank}.txt"), "w") as f:
        f.write("\n".join(lines))


def _cells():
    """One campaign cell per input kind of the scenarios (each scenario is one rank's bad input)."""
    return [cell(DIST, kind, cases=SCENARIO_KINDS.count(kind)) for kind in sorted(set(SCENARIO_KINDS))]


def _apply(marks):
    def decorate(fn):
        for m in marks:
            fn = m(fn)
        return fn
    return decorate


@_apply(_cells())
def test_distributed_one_rank_bad_every_rank_raises():
    """Both ranks run the scenarios in order in one gloo group: a scenario that left a rank waiting
    in a collective would hang the next one (the join below has a deadline), one that desynchronised
    the ranks would fail the next ones."""
    with tempfile.TemporaryDirectory() as d:
        ctx = mp.spawn(gloo_worker.run, args=(2, os.path.join(d, "init"), _scenarios, d), nprocs=2, join=False)
        deadline = time.monotonic() + 240
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    p.kill()
                pytest.fail("the ranks did not finish in 240 s: a rank waits in a collective")
        results = [open(os.path.join(d, f"rank{r}.txt")).read().splitlines() for r in range(2)]
    assert len(results[0]) == len(results[1]) == len(SCENARIO_KINDS)
    bad = [f"rank {r}: {line}" for r in range(2) for line in results[r] if not line.endswith(": ok")]
    assert not bad, "\n".join(bad)


# ------------------------------------------------------------------------------ the CLIs
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny run: (data folder, output folder, checkpoint bytes)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cli")
    data, out = str(root / "data"), str(root / "run")
    generate(data, SyntheticConfig(train_images=8, dev_images=4, test_images=4, regions=5, feat_dim=12))
    train(TrainConfig(data=data, dataset="synthetic", output=out, embed_size=16, word_dim=8, batch_size=20, epochs=1,
                      progress=False, tensorboard=False, seed=0), log=lambda m: None)
    return data, out, open(os.path.join(out, "checkpoint.pth"), "rb").read()


def _snapshot(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, name))}


def _resume(out):
    return train_main(["--output", out, "--resume", "--no-progress", "--no-tensorboard"])


@cell("vsl-train --resume", "truncated file", cases=5)
def test_resume_from_a_truncated_checkpoint(run, capsys):
    data, out, good = run
    ckpt = os.path.join(out, "checkpoint.pth")
    try:
        for cut in (0, 10, 512, len(good) // 2, len(good) - 10):
            with open(ckpt, "wb") as f:
                f.write(good[:cut])
            before = _snapshot(out)
            assert _resume(out) == 2
            assert f"{ckpt} is not a readable checkpoint" in capsys.readouterr().err
            assert _snapshot(out) == before, "a failed resume changed the run folder"
    finally:
        with open(ckpt, "wb") as f:
            f.write(good)


def _checkpoint_variants(good):
    ckpt = torch.load(__import__("io").BytesIO(good), weights_only=True)

    def variant(change):
        c = {**ckpt, "model": dict(ckpt["model"]), "config": dict(ckpt["config"])}
        change(c)
        return c

    return {
        "unknown config key": (variant(lambda c: c["config"].update(future_option=1)), "run config this vsl_ext does not know"),
        "no config": (variant(lambda c: c.pop("config")), "incomplete vsl-train checkpoint .* config"),
        "no model": (variant(lambda c: c.pop("model")), "incomplete vsl-train checkpoint .* model"),
        "weights of another model": (variant(lambda c: c["model"].update(
            state_dict=torch.nn.Linear(3, 3).state_dict())), "holds the weights of another model than its VSE"),
        "a list": ([1, 2, 3], "is not a vsl-train checkpoint"),
        "a bare state_dict": (torch.nn.Linear(3, 3).state_dict(), "is not a vsl-train checkpoint"),
    }


@cell("vsl-train --resume", "foreign / wrong-version file", cases=6)
def test_resume_from_a_foreign_checkpoint(run, capsys):
    data, out, good = run
    ckpt = os.path.join(out, "checkpoint.pth")
    try:
        for name, (obj, message) in _checkpoint_variants(good).items():
            torch.save(obj, ckpt)
            before = _snapshot(out)
            assert _resume(out) == 2, name
            assert __import__("re").search(message, capsys.readouterr().err), name
            assert _snapshot(out) == before, name
    finally:
        with open(ckpt, "wb") as f:
            f.write(good)


@cell("vsl-eval", "foreign / wrong-version file", cases=6)
def test_eval_of_a_checkpoint_of_another_model(run, tmp_path, capsys):
    data, out, good = run
    variants = _checkpoint_variants(good)
    ckpt = torch.load(__import__("io").BytesIO(good), weights_only=True)
    sgr = {**ckpt, "model": {**ckpt["model"], "name": "sgr"}}          # says sgr, holds vse weights
    cases = {"sgr spec with vse weights": (sgr, "holds the weights of another model than its SGRAF"),
             "unknown model": ({**ckpt, "model": {**ckpt["model"], "name": "resnet"}}, "model must be one of"),
             **{k: variants[k] for k in ("no model", "weights of another model", "a list", "a bare state_dict")}}
    for name, (obj, message) in cases.items():
        path = str(tmp_path / "other.pth")
        torch.save(obj, path)
        assert eval_main([path, "--data", data, "--split", "dev", "--json", str(tmp_path / "m.json")]) == 2, name
        err = capsys.readouterr().err
        assert __import__("re").search(message, err), (name, err)
        assert not (tmp_path / "m.json").exists()


@cell("vsl-eval", "truncated file", cases=2)
def test_eval_of_a_truncated_checkpoint(run, tmp_path, capsys):
    data, _, good = run
    for cut in (0, len(good) // 2):
        (tmp_path / "t.pth").write_bytes(good[:cut])
        assert eval_main([str(tmp_path / "t.pth"), "--data", data]) == 2
        assert "is not a readable checkpoint" in capsys.readouterr().err


@pytest.fixture
def image_folder(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i in range(3):
        PIL.fromarray(np.random.default_rng(i).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(images / f"i{i}.jpg")
        rows += [(f"i{i}.jpg", f"caption {j} of image {i}") for j in range(5)]
    with open(tmp_path / "captions.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image", "caption")] + rows)
    return images, tmp_path / "captions.csv"


@cell("vsl-prepare-images", "corrupt file", cases=3)
@cell("vsl-prepare-images", "empty")
def test_prepare_images_names_the_unreadable_image(image_folder, tmp_path, capsys):
    images, captions = image_folder
    good = (images / "i0.jpg").read_bytes()
    for name, content in [("garbage", b"not an image at all"), ("empty", b""), ("truncated JPEG", good[:120]),
                          ("PNG signature only", b"\x89PNG\r\n\x1a\n")]:
        (images / "i1.jpg").write_bytes(content)
        out = tmp_path / ("out_" + name.replace(" ", "_"))
        rc = prepare_main(["--images", str(images), "--captions", str(captions), "--out", str(out), "--split", "1,1,1",
                           "--size", "16", "--grid", "2"])
        assert rc == 2, name
        assert f"{images / 'i1.jpg'} is not a readable image" in capsys.readouterr().err, name
        assert not out.exists(), f"{name}: an output folder was started"
