"""3shnet with the BERT text encoder: a tiny randomly initialised BERT saved to a temporary folder (no
download), WordPiece tokenisation against transformers' own tokenizer, training, checkpoints without
the BERT folder. Skipped when transformers is not installed."""
import inspect
import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch

from vsl_ext.harness.data.vocab import tokenize
from vsl_ext.harness.data.wordpiece import WordPieceVocabulary, basic_tokenize
from vsl_ext.harness.evaluate import load_checkpoint
from vsl_ext.harness.evaluate import main as eval_main
from vsl_ext.harness.models import build_model
from vsl_ext.harness.train import TrainConfig, Trainer, train

SPLIT_WORDS = {"elephant": ["ele", "##phant"], "motorcycle": ["motor", "##cycle"], "patiently": ["patient", "##ly"]}
UNKNOWN_WORDS = {"giraffe"}


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)



def wordpiece_words(data):
    words = set()
    for split in ("train", "dev", "test"):
        for line in open(os.path.join(data, f"{split}_caps.txt")):
            words.update(tokenize(line))
    pieces = [p for split in SPLIT_WORDS.values() for p in split]
    for w in sorted(words):
        if w in SPLIT_WORDS:
            pieces += SPLIT_WORDS[w]
        elif w not in UNKNOWN_WORDS:
            pieces.append(w)
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(pieces)) + [".", ",", "!", "x", "##x"]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory, tiny_data):
    transformers = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("tiny_bert_ckpt")
    words = wordpiece_words(tiny_data)
    config = transformers.BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=40)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(str(d))
    (d / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    (d / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    return str(d)


@pytest.mark.parametrize("lower", [True, False])
def test_wordpiece_matches_transformers_tokenizer(tiny_data, tmp_path, lower):
    transformers = pytest.importorskip("transformers")
    words = wordpiece_words(tiny_data) + ["Dog", "Élan", "élan", "中"]
    ours = WordPieceVocabulary(words, do_lower_case=lower)
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("\n".join(words) + "\n", encoding="utf-8")
    fast = transformers.BertTokenizerFast               # the Rust tokenizer (transformers 5: BertTokenizer too)
    if "vocab" in inspect.signature(fast.__init__).parameters:           # transformers >= 5
        theirs = fast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=lower)
    else:
        theirs = fast(vocab_file=str(vocab_file), do_lower_case=lower)
    texts = open(os.path.join(tiny_data, "train_caps.txt")).read().splitlines()
    texts += ["A Dog, an ELEPHANT and a motorcycle!", "giraffes\tand\u00a0x-x", "Élan élan e\u0301lan", "dogx 中文",
              "x" * 101, "dog\x00 \u200b.", "", "   "]
    for text in texts:
        assert ours.encode(text) == theirs(text)["input_ids"], text


def test_wordpiece_basics():
    v = WordPieceVocabulary(["[CLS]", "[SEP]", "[UNK]", "un", "##aff", "##able", "!"])
    assert v.tokenize("Unaffable!") == ["un", "##aff", "##able", "!"]
    assert v.tokenize("unaffx") == ["[UNK]"]
    assert basic_tokenize("Hello,world", do_lower_case=False) == ["Hello", ",", "world"]
    with pytest.raises(ValueError, match=r"\[SEP\]"):
        WordPieceVocabulary(["[CLS]", "[UNK]"])


def cfg(data, out, bert, **kw):
    base = dict(data=data, dataset="synthetic", output=str(out), model="3shnet", text_encoder="bert", bert_path=bert,
                embed_size=16, spatial_dim=8, batch_size=20, epochs=1, progress=False, tensorboard=False, seed=0,
                lr_update=1, lr=1e-3)
    base.update(kw)
    return TrainConfig(**base)


def test_bert_weights_come_from_the_folder(bert_dir):
    transformers = pytest.importorskip("transformers")
    model = build_model("3shnet", img_dim=12, vocab_size=1, num_classes=30, embed_size=16, text_encoder="bert",
                        bert_path=bert_dir)
    ref = transformers.BertModel.from_pretrained(bert_dir)
    for name, p in model.txt_enc.bert.named_parameters():
        assert torch.equal(p, ref.state_dict()[name]), name
    assert model.config["bert_config"]["hidden_size"] == 16
    with pytest.raises(FileNotFoundError, match="not a local BERT checkpoint"):
        build_model("3shnet", img_dim=12, vocab_size=1, num_classes=30, text_encoder="bert", bert_path="/nonexistent")


def test_train_evaluate_and_resume_without_the_bert_folder(tiny_data, bert_dir, tmp_path):
    quiet = dict(log=lambda m: None)
    bert = str(tmp_path / "bert")
    shutil.copytree(bert_dir, bert)
    trainer = Trainer(cfg(tiny_data, tmp_path / "run", bert, epochs=2), **quiet)
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [1e-3, 1e-3]
    with pytest.raises(KeyboardInterrupt):
        trainer.run(crash_after_steps=3)
    head, bert_group = trainer.optimizer.param_groups                  # epoch 2: lr 1e-4, BERT at 0.1 x lr
    assert (head["lr"], bert_group["lr"]) == (pytest.approx(1e-4), pytest.approx(1e-5))
    shutil.rmtree(bert)                     # the checkpoint alone must be enough from now on
    resumed = Trainer(TrainConfig(output=str(tmp_path / "run"), resume=True, epochs=0, progress=False,
                                  tensorboard=False), **quiet)
    summary = resumed.run()
    assert summary["epochs"] == 2 and summary["test"] is not None
    model, vocab, ckpt = load_checkpoint(str(tmp_path / "run" / "model_best.pth"))
    assert ckpt["tokenizer"] == {"kind": "wordpiece", "do_lower_case": True}
    assert isinstance(vocab, WordPieceVocabulary) and vocab.encode("an elephant")[1:-1] == \
        [vocab.word2idx[w] for w in ("an", "ele", "##phant")]
    # the uninterrupted run reaches the same weights
    train(cfg(tiny_data, tmp_path / "ref", bert_dir, epochs=2), **quiet)
    ref = torch.load(tmp_path / "ref" / "checkpoint.pth", weights_only=True)["model"]["state_dict"]
    got = torch.load(tmp_path / "run" / "checkpoint.pth", weights_only=True)["model"]["state_dict"]
    for k, v in ref.items():
        assert torch.equal(v, got[k]), k
    out = tmp_path / "sims.npy"
    assert eval_main([str(tmp_path / "run" / "model_best.pth"), "--data", tiny_data, "--save-sims", str(out)]) == 0
    np.testing.assert_allclose(np.load(out), resumed.test_sims, rtol=1e-6, atol=1e-6)


def test_long_captions_are_cut_to_bert_positions(bert_dir):
    model = build_model("3shnet", img_dim=12, vocab_size=1, num_classes=30, embed_size=16, text_encoder="bert",
                        bert_path=bert_dir).eval()
    tokens = torch.randint(5, 20, (2, 60))
    with torch.no_grad():
        emb = model.encode_captions(tokens, torch.tensor([60, 10]))
    assert emb.shape == (2, 16) and torch.isfinite(emb).all()


def test_missing_transformers_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match="pip install transformers"):
        build_model("3shnet", img_dim=12, vocab_size=1, num_classes=30, text_encoder="bert", bert_path="x")
