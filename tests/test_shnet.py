"""The 3shnet model: shapes and masks, the segmentation's effect, batching, training, checkpoints, demo."""
import json
import os

import numpy as np
import pytest
import torch

from vsl_ext.harness import demo as demo_mod
from vsl_ext.harness.data.segmentation import SegmentedImages
from vsl_ext.harness.data.synthetic import SyntheticConfig
from vsl_ext.harness.evaluate import ensemble_sims, load_checkpoint
from vsl_ext.harness.evaluate import main as eval_main
from vsl_ext.harness.models import build_model
from vsl_ext.harness.models.shnet import TokenMLP, pack_valid
from vsl_ext.harness.train import TrainConfig, Trainer, train
from vsl_ext.harness.train import main as train_main
from vsl_ext.metrics import evaluate_protocol


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def segmented(b=4, regions=6, dim=10, classes=7, cells=(3, 3), label=(6, 6), lengths=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths if lengths is not None else [regions] * b)
    x = torch.randn(b, regions, dim, generator=g)
    x[torch.arange(regions)[None] >= lengths[:, None]] = 0.0
    return SegmentedImages(x, torch.randint(0, classes, (b,) + label, generator=g).float(),
                           (torch.rand(b, classes, generator=g) < 0.4).float(),
                           torch.softmax(torch.randn(b, classes, *cells, generator=g), 1), lengths)


def shnet(dim=10, classes=7, embed=16, seed=0, **kw):
    torch.manual_seed(seed)
    model = build_model("3shnet", img_dim=dim, vocab_size=30, num_classes=classes, embed_size=embed, word_dim=8,
                        spatial_dim=8, **kw)
    return model.eval()


def test_embeddings_are_unit_vectors_with_variable_region_counts():
    model = shnet()
    images = segmented(lengths=[6, 3, 1, 4])
    with torch.no_grad():
        emb = model.encode_images(images)
    assert emb.shape == (4, 16)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))
    # what lies in the padding (past each image's region count) does not matter
    noisy = segmented(lengths=[6, 3, 1, 4])
    noisy.regions = images.regions + torch.randn_like(images.regions) * \
        (torch.arange(6)[None, :, None] >= images.region_lengths[:, None, None])
    with torch.no_grad():
        torch.testing.assert_close(model.encode_images(noisy), emb)


def test_batch_equals_item_by_item():
    model = shnet()
    images = segmented(b=5, lengths=[6, 2, 5, 1, 3])
    with torch.no_grad():
        batched = model.encode_images(images)
        for i in range(5):
            n = int(images.region_lengths[i])
            alone = SegmentedImages(images.regions[i:i + 1, :n], images.label_map[i:i + 1],
                                    images.class_presence[i:i + 1], images.score_maps[i:i + 1])
            torch.testing.assert_close(model.encode_images(alone)[0], batched[i], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("zeroed", [("label_map", "class_presence", "score_maps"), ("label_map",),
                                    ("class_presence",), ("score_maps",)])
def test_segmentation_inputs_change_the_embedding(zeroed):
    model = shnet()
    images = segmented()
    blank = segmented()
    for name in zeroed:
        setattr(blank, name, torch.zeros_like(getattr(images, name)))
    with torch.no_grad():
        a, b = model.encode_images(images), model.encode_images(blank)
    assert (a - b).abs().max() > 1e-3


def test_region_drop_in_training_only():
    model = shnet(region_drop=0.5)
    images = segmented(lengths=[6, 1, 4, 2])
    with torch.no_grad():
        e1, e2 = model.encode_images(images), model.encode_images(images)
        assert torch.equal(e1, e2)                                        # eval: no drop, deterministic
        model.train()
        torch.manual_seed(0)
        t1 = model.encode_images(images)
        assert not torch.allclose(t1, e1)
        x = torch.randn(3, 5, 2)
        packed, counts = pack_valid(x, torch.tensor([[0, 1, 0, 1, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]).bool())
        assert counts.tolist() == [3, 1, 0]
        torch.testing.assert_close(packed[0, :3], x[0, [1, 3, 4]])
        # dropping keeps at least one region of every image
        kept, lengths = model.img_enc.drop_regions(images.regions, torch.zeros(4, 6, dtype=torch.bool))
        assert lengths.tolist() == [1, 1, 1, 1]


def test_token_mlp_batchnorm_sees_only_valid_tokens():
    torch.manual_seed(0)
    mlp = TokenMLP(3, 4, 2).train()
    x = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]]).bool()
    out = mlp(x, mask)
    assert (out[~mask] == 0).all()
    ref = TokenMLP(3, 4, 2).train()
    ref.load_state_dict(mlp.state_dict())
    torch.testing.assert_close(out[mask], ref(x[mask].unsqueeze(0))[0])


def test_clear_errors_for_wrong_inputs():
    model = shnet()
    with pytest.raises(TypeError, match="SegmentedImages"):
        model.encode_images(torch.randn(2, 6, 10))
    with pytest.raises(ValueError, match="7 segmentation classes"):
        model.encode_images(segmented(classes=9))
    with pytest.raises(ValueError, match="10-dim region features"):
        model.encode_images(segmented(dim=12))
    with pytest.raises(ValueError, match="text_encoder"):
        build_model("3shnet", img_dim=4, vocab_size=10, num_classes=3, text_encoder="clip")


def test_full_release_shapes():
    """3SHNet's release: 36 x 2048 regions, 133 classes, 7 x 7 score maps, 64 x 64 label maps."""
    model = shnet(dim=2048, classes=133, embed=32)
    images = segmented(b=2, regions=36, dim=2048, classes=133, cells=(7, 7), label=(64, 64), lengths=[36, 20])
    with torch.no_grad():
        emb = model.encode_images(images)
    assert emb.shape == (2, 32) and torch.isfinite(emb).all()


# --- training, checkpoints, evaluation on tiny synthetic data (with its segmentation files)


def tiny_cfg(data, out, **kw):
    base = dict(data=data, dataset="synthetic", output=str(out), model="3shnet", embed_size=16, word_dim=8,
                spatial_dim=8, batch_size=20, epochs=1, progress=False, tensorboard=False, seed=0, lr_update=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("vsl", [True, False])
def test_trains_with_and_without_vsl(tiny_data, tmp_path, vsl):
    summary = train(tiny_cfg(tiny_data, tmp_path, vsl=vsl), log=lambda m: None)
    hist = json.loads(open(tmp_path / "metrics.jsonl").readline())
    assert summary["global_step"] == 2 and np.isfinite(hist["train_loss"])
    assert (hist["train_vsl"] > 0) == vsl
    assert set(summary["test"]["full"]) >= {"i2t_r1", "t2i_r10", "rsum"}


def test_checkpoint_round_trip(tiny_data, tmp_path):
    trainer = Trainer(tiny_cfg(tiny_data, tmp_path), log=lambda m: None)
    trainer.run()
    model, vocab, ckpt = load_checkpoint(str(tmp_path / "model_best.pth"))
    assert ckpt["model"]["name"] == "3shnet" and ckpt["data"]["segmentation"]["classes"] == 30
    assert ckpt["tokenizer"] == {"kind": "words"}
    # the reloaded model gives the test similarities the trainer computed
    np.testing.assert_allclose(sims_from_files(model, vocab, tiny_data), trainer.test_sims, rtol=1e-5, atol=1e-6)


def sims_from_files(model, vocab, d, split="test"):
    """(images x captions) cosine similarities computed from the split's raw files, one caption at a time."""
    regions = torch.from_numpy(np.load(os.path.join(d, f"{split}_ims.npy")))
    images = regions
    if model.name == "3shnet":
        images = SegmentedImages(regions, torch.from_numpy(np.load(os.path.join(d, f"{split}_seg_maps.npy"))).float(),
                                 torch.from_numpy(np.load(os.path.join(d, f"{split}_cat_onehots.npy"))),
                                 torch.from_numpy(np.load(os.path.join(d, f"{split}_segmentations.npy"))))
    caps = open(os.path.join(d, f"{split}_caps.txt")).read().splitlines()
    with torch.no_grad():
        img = model.encode_images(images)
        cap = torch.cat([model.encode_captions(torch.tensor([vocab.encode(c)]), torch.tensor([len(vocab.encode(c))]))
                         for c in caps])
    return (img.double() @ cap.double().t()).numpy()


def test_vsl_eval_ensemble_averages_the_similarity_matrices(tiny_data, tmp_path, capsys):
    quiet = dict(log=lambda m: None)
    train(tiny_cfg(tiny_data, tmp_path / "a"), **quiet)
    train(tiny_cfg(tiny_data, tmp_path / "b", model="vse", seed=1), **quiet)          # a mixed ensemble
    ckpts = [str(tmp_path / r / "model_best.pth") for r in ("a", "b")]
    expected = [sims_from_files(*load_checkpoint(c)[:2], tiny_data) for c in ckpts]
    assert not np.allclose(expected[0], expected[1])
    # one checkpoint: its own similarities
    assert eval_main([ckpts[0], "--data", tiny_data, "--save-sims", str(tmp_path / "one")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "one.npy"), expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ensemble_sims([np.load(tmp_path / "one.npy")]), np.load(tmp_path / "one.npy"))
    # two: the mean of the two matrices, and the metrics are those of the mean
    assert eval_main(ckpts + ["--data", tiny_data, "--save-sims", str(tmp_path / "two.npy"),
                              "--json", str(tmp_path / "two.json")]) == 0
    assert "ensemble of 2" in capsys.readouterr().out
    mean = (expected[0] + expected[1]) / 2
    np.testing.assert_allclose(np.load(tmp_path / "two.npy"), mean, rtol=1e-5, atol=1e-6)
    report = json.load(open(tmp_path / "two.json"))
    assert report["checkpoints"] == ckpts and len(report["models"]) == 2
    for key, value in evaluate_protocol(mean, "full", 5).items():
        assert report["results"]["full"][key] == pytest.approx(value), key
    with pytest.raises(ValueError, match="differ in shape"):
        ensemble_sims([np.zeros((2, 10)), np.zeros((3, 15))])


def test_resume_after_kill_reaches_the_uninterrupted_state(tiny_data, tmp_path):
    """Region drop draws from torch's RNG, which the checkpoint carries."""
    quiet = dict(log=lambda m: None)
    train(tiny_cfg(tiny_data, tmp_path / "ref", epochs=2, batch_size=16), **quiet)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(tiny_data, tmp_path / "run", epochs=2, batch_size=16, checkpoint_every=1),
              crash_after_steps=3, **quiet)
    train(TrainConfig(output=str(tmp_path / "run"), resume=True, epochs=0, progress=False, tensorboard=False), **quiet)
    ref = torch.load(tmp_path / "ref" / "checkpoint.pth", weights_only=True)
    got = torch.load(tmp_path / "run" / "checkpoint.pth", weights_only=True)
    assert got["global_step"] == ref["global_step"]
    for k, v in ref["model"]["state_dict"].items():
        assert torch.equal(v, got["model"]["state_dict"][k]), k


def test_max_violation_warmup_sums_over_negatives_first(tiny_data, tmp_path):
    trainer = Trainer(tiny_cfg(tiny_data, tmp_path, epochs=3, max_violation_warmup=1), log=lambda m: None)
    seen = []
    step = trainer.train_step
    trainer.train_step = lambda ids: (seen.append((trainer.epoch, trainer.criterion.max_violation)), step(ids))[1]
    trainer.run()
    assert seen == [(0, False), (0, False), (1, True), (1, True), (2, True), (2, True)]
    with pytest.raises(ValueError, match="max-violation-warmup"):
        Trainer(tiny_cfg(tiny_data, tmp_path / "x", max_violation_warmup=-1))


def test_missing_segmentation_is_a_clear_error(tiny_data, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in os.listdir(tiny_data):
        if f != "dev_cat_onehots.npy":
            os.link(os.path.join(tiny_data, f), bare / f)
    rc = train_main(["--data", str(bare), "--model", "3shnet", "--output", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2 and "dev_cat_onehots.npy" in capsys.readouterr().err
    # the other models do not need the files
    assert train_main(["--data", str(bare), "--output", str(tmp_path / "v"), "--embed-size", "8", "--word-dim", "8",
                       "--batch-size", "20", "--epochs", "1", "--no-progress", "--no-tensorboard"]) == 0
    with pytest.raises(ValueError, match="--text-encoder bert is for --model 3shnet"):
        Trainer(tiny_cfg(tiny_data, tmp_path / "x", model="vse", text_encoder="bert", bert_path="x"))
    with pytest.raises(ValueError, match="--bert-path"):
        Trainer(tiny_cfg(tiny_data, tmp_path / "x", text_encoder="bert"))


def test_demo_with_3shnet_writes_the_comparison(tmp_path, monkeypatch):
    small = SyntheticConfig(train_images=12, dev_images=4, test_images=4, regions=5, feat_dim=12)
    monkeypatch.setattr("vsl_ext.harness.data.synthetic.SyntheticConfig", lambda: small)
    from vsl_ext.harness.demo_variants import apply_overrides

    monkeypatch.setattr(demo_mod, "demo_config", lambda data, output, seed, vsl, epochs=None, device="auto",
                        progress=True, threads=1, overrides=None: apply_overrides(
                            tiny_cfg(data, output, model="vse", vsl=vsl, seed=seed, test_split="test"), overrides))
    logs = []
    summary = demo_mod.run_demo(str(tmp_path), seeds=[0], progress=False, log=logs.append,
                                overrides={"model": "3shnet"})
    for m in ("vse", "3shnet"):
        assert len(summary["results"][m]["vsl"]) == 1 and len(summary["results"][m]["baseline"]) == 1
    assert (tmp_path / "3shnet_vsl_seed0" / "model_best.pth").is_file()
    assert torch.load(tmp_path / "3shnet_vsl_seed0" / "model_best.pth", weights_only=True)["model"]["name"] == "3shnet"
    md = (tmp_path / "results.md").read_text()
    assert "| vse triplet | vse + 10 VSL | 3shnet triplet | 3shnet + 10 VSL |" in md and "| i2t R@1 |" in md
    assert "Fig.-1 kind" in md
    with pytest.raises(ValueError, match="demo trains"):
        demo_mod.run_demo(str(tmp_path / "x"), seeds=[0], overrides={"model": "sgr"})
