"""SSAMT (vsl_ext.harness.models.ssamt), phrase units of captions (data.phrase_units), the training
step's phrase part and the two demo variants in CI size."""
import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from vsl_ext.harness.data.phrase_units import CaptionPhrases, attach_phrases, phrase_cache_path
from vsl_ext.harness.data.vocab import Vocabulary
from vsl_ext.harness.models import MODELS, build_model
from vsl_ext.harness.phrase_training import PhraseStep, phrase_grains
from vsl_ext.phrases import PhraseLabels

LABELS = [
    PhraseLabels(("dog", "frisbee"), (("frisbee", "red"),), (("dog", "catch", "frisbee"),)),
    PhraseLabels(),                                                          # a caption without phrases
    PhraseLabels(("man", "horse"), (), (("man", "ride", "horse"),)),
    PhraseLabels(("tennis racket",), (("tennis racket", "black"),)),
    PhraseLabels(("cat",)),
    PhraseLabels(("cat", "bench"), (("bench", "wooden"),), (("cat", "sleep on", "bench"), ("cat", "on", "bench"))),
]
WORDS = "dog frisbee red catch man horse ride tennis racket black cat bench wooden sleep on a the".split()


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary(WORDS)


@pytest.fixture(scope="module")
def phrases(vocab):
    return CaptionPhrases(LABELS, vocab, captions_per_image=2)


def caption_tokens(vocab, n, seed=0):
    g = np.random.default_rng(seed)
    seqs = [vocab.encode(" ".join(g.choice(WORDS, int(g.integers(2, 8))))) for _ in range(n)]
    from vsl_ext.harness.data import pad_tokens
    return pad_tokens(seqs)


def small_ssamt(vocab, **kw):
    torch.manual_seed(0)
    cfg = dict(img_dim=12, vocab_size=len(vocab), embed_size=16, word_dim=8, num_layers=2, heads=4, slots=3,
               dropout=0.1)
    cfg.update(kw)
    return build_model("ssamt", **cfg)


# ------------------------------------------------------------------ phrase units
def test_phrase_batch_layout(phrases, vocab):
    b = phrases.batch([0, 1, 5])
    assert b.kinds.shape == (3, 5) and b.labels.shape == (3, 5)
    assert b.kinds.tolist() == [[1, 1, 2, 3, 0], [0, 0, 0, 0, 0], [1, 1, 2, 3, 3]]
    assert b.mask.sum(1).tolist() == [4, 0, 5]
    assert (b.labels[~b.mask] == -1).all() and (b.labels[b.mask] >= 0).all()
    assert b.slots.shape[:3] == (3, 5, 3) and b.slots.shape[3] == 2              # "sleep on", "tennis racket"
    w = vocab.word2idx
    assert b.slots[0, 2].tolist() == [[w["frisbee"], 0], [w["red"], 0], [0, 0]]  # (entity, modifier, -)
    assert b.slots[2, 3].tolist() == [[w["cat"], 0], [w["sleep"], w["on"]], [w["bench"], 0]]
    assert b.text[0, 2, :2].tolist() == [w["red"], w["frisbee"]]                 # reading order "red frisbee"
    assert b.text_lengths[2].tolist() == [1, 1, 2, 4, 3]
    assert phrases.units_of(3) == ["entity\ttennis racket", "attribute\ttennis racket\tblack"]
    only_empty = phrases.batch([1])
    assert only_empty.kinds.shape == (1, 1) and not only_empty.mask.any()      # P >= 1 even without units
    with pytest.raises(IndexError):
        phrases.batch([6])


def test_image_label_sets_cover_all_captions(phrases):
    cat = phrases.label_names.index("entity\tcat")
    bench_on = phrases.label_names.index("triple\tcat\ton\tbench")
    dog = phrases.label_names.index("entity\tdog")
    has = phrases.image_has_label([0, 1, 2], np.array([cat, bench_on, dog, -1]))
    assert has.tolist() == [[False, False, True, False], [False, False, False, False], [True, True, False, False]]


def test_caption_phrases_rejects_ragged_images(vocab):
    with pytest.raises(ValueError, match="captions_per_image"):
        CaptionPhrases(LABELS[:5], vocab, 2)


# ------------------------------------------------------------------ the model
def test_registered():
    assert "ssamt" in MODELS


def test_shapes_masks_and_unit_norm(phrases, vocab):
    model = small_ssamt(vocab).eval()
    images = torch.randn(3, 5, 12)
    tokens, lengths = caption_tokens(vocab, 3)
    pb = phrases.batch([0, 1, 5])
    img, units, umask = model.encode_image_grains(images)
    cap, pemb, pmask = model.encode_text_grains(tokens, lengths, pb)
    assert img.shape == (3, 16) and units.shape == (3, 5 + 3, 16) and umask.all()
    assert cap.shape == (3, 16) and pemb.shape == (3, 5, 16) and pmask.tolist() == pb.mask.tolist()
    torch.testing.assert_close(img.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(cap.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(pemb[pmask].norm(dim=1), torch.ones(int(pmask.sum())))
    assert (pemb[~pmask] == 0).all() and torch.isfinite(cap).all()
    sims = model(images, tokens, lengths, pb)
    torch.testing.assert_close(sims, img @ cap.t())
    with pytest.raises(ValueError, match="phrases"):
        model.encode_captions(tokens, lengths)


def test_batch_equals_per_item(phrases, vocab):
    model = small_ssamt(vocab).eval()
    ids = [0, 1, 2, 3, 4, 5]
    images = torch.randn(6, 5, 12)
    tokens, lengths = caption_tokens(vocab, 6, seed=3)
    with torch.no_grad():
        img = model.encode_images(images)
        cap, pemb, _ = model.encode_text_grains(tokens, lengths, phrases.batch(ids))
        for k, c in enumerate(ids):
            one = phrases.batch([c])
            L = int(lengths[k])
            cap1, pemb1, _ = model.encode_text_grains(tokens[k:k + 1, :L], lengths[k:k + 1], one)
            torch.testing.assert_close(cap1[0], cap[k], rtol=1e-5, atol=1e-6)
            P = one.kinds.shape[1]
            torch.testing.assert_close(pemb1[0], pemb[k, :P], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(model.encode_images(images[k:k + 1])[0], img[k], rtol=1e-5, atol=1e-6)


def test_phrases_change_the_caption_embedding(phrases, vocab):
    model = small_ssamt(vocab).eval()
    tokens, lengths = caption_tokens(vocab, 2)
    with torch.no_grad():
        a = model.encode_captions(tokens, lengths, phrases.batch([0, 2]))
        b = model.encode_captions(tokens, lengths, phrases.batch([5, 2]))
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1], atol=1e-6)


def test_save_load_round_trip(tmp_path, phrases, vocab):
    model = small_ssamt(vocab).eval()
    path = tmp_path / "m.pth"
    torch.save({"name": model.name, "config": model.config, "state_dict": model.state_dict()}, path)
    spec = torch.load(path, weights_only=True)
    again = build_model(spec["name"], **spec["config"]).eval()
    again.load_state_dict(spec["state_dict"])
    images = torch.randn(2, 5, 12)
    tokens, lengths = caption_tokens(vocab, 2)
    pb = phrases.batch([0, 5])
    with torch.no_grad():
        torch.testing.assert_close(again(images, tokens, lengths, pb), model(images, tokens, lengths, pb))


def test_config_errors(vocab):
    with pytest.raises(ValueError, match="heads"):
        small_ssamt(vocab, embed_size=18)
    with pytest.raises(ValueError, match="dropout"):
        small_ssamt(vocab, dropout=1.0)


# ------------------------------------------------------------------ training step
class FakeSplit:
    def __init__(self, phrases, vocab, n_caps):
        self.phrases = phrases
        self.tokens, self.lengths = caption_tokens(vocab, n_caps, seed=7)
        self.images = torch.randn(n_caps // 2, 5, 12)

    def batch(self, caption_ids):
        ids = np.asarray(caption_ids)
        L = int(self.lengths[ids].max())
        return {"images": self.images[ids // 2], "tokens": self.tokens[ids, :L], "lengths": self.lengths[ids],
                "image_ids": ids // 2, "caption_ids": ids}


@pytest.mark.parametrize("name", ["ssamt", "vse"])
def test_phrase_step_gradients_are_finite(name, phrases, vocab):
    torch.manual_seed(0)
    model = build_model(name, img_dim=12, vocab_size=len(vocab), embed_size=16, word_dim=8, dropout=0.1)
    split = FakeSplit(phrases, vocab, 6)
    step = PhraseStep(phrases, phrase_level=True, weight=2.0)
    sims, terms = step(model, split.batch([0, 3, 5]), "cpu")
    assert sims.shape == (3, 3)
    assert set(terms) == {"phrase_global", "phrase_local", "phrase_mismatch", "phrase"}
    out = step.combine({"loss": sims.diagonal().sum()}, terms)
    torch.testing.assert_close(out["loss"], sims.diagonal().sum() + 2.0 * terms["phrase"])
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_vse_phrase_embedding_is_the_caption_encoder_on_the_phrase_words(phrases, vocab):
    torch.manual_seed(0)
    model = build_model("vse", img_dim=12, vocab_size=len(vocab), embed_size=16, word_dim=8, dropout=0.0).eval()
    pb = phrases.batch([0, 1])
    g = phrase_grains(model, torch.randn(2, 5, 12), *caption_tokens(vocab, 2), pb)
    # unit 2 of caption 0 is "red frisbee": vse's own caption encoder on those two words
    words = torch.tensor([[vocab.word2idx["red"], vocab.word2idx["frisbee"]]])
    want = model.encode_captions(words, torch.tensor([2]))[0]
    torch.testing.assert_close(g["phrase_emb"][0, 2], want)
    assert (g["phrase_emb"][1] == 0).all() and g["units"].shape == (2, 5, 16)


# ------------------------------------------------------------------ with the parser (spaCy)
def _parser_or_skip():
    try:
        from vsl_ext import phrases as ph
        ph.load_model()
    except ImportError as exc:
        pytest.skip(f"spaCy or its English model is not installed ({exc})")


def test_phrase_cache_path_falls_back_when_the_data_folder_is_read_only(tmp_path, monkeypatch):
    caps = tmp_path / "data" / "train_caps.txt"
    caps.parent.mkdir()
    caps.write_text("a dog\n")
    assert phrase_cache_path(str(caps)) == str(tmp_path / "data" / "train_caps.phrases")
    import vsl_ext.harness.data.phrase_units as pu
    monkeypatch.setattr(pu, "_writable", lambda folder: "data" not in folder)
    assert phrase_cache_path(str(caps), str(tmp_path / "run")) == str(tmp_path / "run" / "train_caps.phrases")
    assert phrase_cache_path(str(caps)) is None


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    _parser_or_skip()
    return tmp_path_factory.mktemp("ssamt_demo")


def _demo(demo_dir, *extra):
    from vsl_ext.harness.train import main
    assert main(["--demo", "--seeds", "0", "--demo-epochs", "1", "--output", str(demo_dir), "--no-progress",
                 *extra]) == 0
    return json.loads((demo_dir / "results.json").read_text()), (demo_dir / "results.md").read_text()


def test_demo_ssamt_ci_size(demo_dir, capsys):
    summary, md = _demo(demo_dir, "--model", "ssamt")
    out = capsys.readouterr().out
    assert "| metric (test, 1 seeds) | triplet (baseline) | triplet + 10 VSL |" in out
    assert "model ssamt" in md and summary["train_config"]["model"] == "ssamt"
    for arm in ("baseline", "vsl"):
        assert summary["results"][arm][0]["rsum"] > 30      # chance is 3.0 on 1,000 test images
    assert os.path.isfile(demo_dir / "data" / "train_caps.phrases")   # parse cached beside the data
    # vsl-eval reads an ssamt checkpoint unchanged (phrase units attached on first use)
    from vsl_ext.harness.evaluate import main as eval_main
    ckpt = demo_dir / "vsl_seed0" / "model_best.pth"
    assert eval_main([str(ckpt), "--data", str(demo_dir / "data"), "--json", str(demo_dir / "e.json")]) == 0
    rsum = json.loads((demo_dir / "e.json").read_text())["results"]["full"]["rsum"]
    assert rsum == pytest.approx(summary["results"]["vsl"][0]["rsum"], abs=1e-6)


def test_demo_phrase_level_ci_size(demo_dir, capsys):
    # (the folder may hold the ssamt demo: a demo replaces an earlier one only with --overwrite)
    summary, md = _demo(demo_dir, "--semantic", "phrases", "--phrase-level", "--overwrite")
    out = capsys.readouterr().out
    assert "| triplet + 0.1 phrase (baseline) | triplet + 0.1 phrase + 10 VSL |" in out
    cfg = summary["train_config"]
    assert (cfg["model"], cfg["semantic"], cfg["phrase_level"]) == ("vse", "phrases", True)
    assert "VSL on phrases similarity" in md and "semantic similarity phrases" in md
    hist = [json.loads(line) for line in (demo_dir / "vsl_seed0" / "metrics.jsonl").read_text().splitlines()]
    assert hist[0]["train_phrase"] > 0 and hist[0]["train_vsl"] > 0
    for arm in ("baseline", "vsl"):
        assert summary["results"][arm][0]["rsum"] > 20      # 61 here after one epoch; chance is 3.0


def test_option_errors(tmp_path):
    from vsl_ext.harness.config import TrainConfig
    from vsl_ext.harness.trainer import validate_config
    base = TrainConfig(data=str(tmp_path), output=str(tmp_path / "o"))
    with pytest.raises(ValueError, match="--phrase-level"):
        validate_config(dataclasses.replace(base, model="sgr", phrase_level=True))
    with pytest.raises(ValueError, match="--phrase-weight"):
        validate_config(dataclasses.replace(base, phrase_level=True, phrase_weight=-1.0))
    with pytest.raises(ValueError, match="--text-side"):
        validate_config(dataclasses.replace(base, semantic="phrases", text_side=True))
    validate_config(dataclasses.replace(base, model="ssamt", phrase_level=True, semantic="phrases"))


def test_attach_phrases_parses_a_split(tmp_path, vocab):
    _parser_or_skip()
    from vsl_ext.harness.data import PrecompSplit
    from vsl_ext.harness.data.synthetic import SyntheticConfig, generate
    generate(str(tmp_path), SyntheticConfig(train_images=4, dev_images=2, test_images=2, regions=3, feat_dim=8))
    split = PrecompSplit(str(tmp_path), "train", Vocabulary.build(open(tmp_path / "train_caps.txt").read().split()))
    ph = attach_phrases(split)
    assert split.phrases is ph and len(ph) == 20 and ph.num_images == 4
    assert os.path.isfile(tmp_path / "train_caps.phrases")
    # every caption names its object
    assert all(any(u.startswith("entity\t") for u in ph.units_of(c)) for c in range(20))
