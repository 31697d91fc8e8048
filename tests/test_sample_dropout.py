"""Per-sample dropout masks: the same for a caption however its batch is split."""
import numpy as np
import pytest
import torch

from vsl_ext.harness.models import build_model
from vsl_ext.harness.models.dropout import SampleDropout, sample_seeds


def test_masks_do_not_depend_on_the_split_of_the_batch():
    torch.manual_seed(0)
    drop = SampleDropout(0.4).train()
    lengths = torch.tensor([5, 2, 7, 3, 7, 1])
    x = torch.randn(6, 7, 16)
    seeds = sample_seeds(3, 11, np.arange(6))
    full = drop(x, lengths, seeds)
    for lo, hi in ((0, 2), (2, 5), (5, 6)):
        width = int(lengths[lo:hi].max())                      # a shard pads to its own longest caption
        part = drop(x[lo:hi, :width], lengths[lo:hi], seeds[lo:hi])
        torch.testing.assert_close(part, full[lo:hi, :width], rtol=0, atol=0)


def test_mask_statistics_and_scaling():
    p = 0.4
    drop = SampleDropout(p).train()
    lengths = torch.full((64,), 50)
    x = torch.ones(64, 50, 32)
    y = drop(x, lengths, sample_seeds(0, 0, np.arange(64)))
    kept = y != 0
    assert torch.unique(y).tolist() == [0.0, pytest.approx(1 / (1 - p))]
    # 102,400 Bernoulli(0.6) draws: 6 standard deviations are 0.009
    assert abs(kept.float().mean().item() - (1 - p)) < 0.01
    # different samples, steps and runs get different masks
    assert not torch.equal(kept[0], kept[1])
    other_step = drop(x, lengths, sample_seeds(0, 1, np.arange(64))) != 0
    other_run = drop(x, lengths, sample_seeds(1, 0, np.arange(64))) != 0
    assert not torch.equal(kept, other_step) and not torch.equal(kept, other_run)


def test_eval_mode_zero_p_and_no_seeds():
    x = torch.randn(3, 4, 5)
    lengths = torch.tensor([4, 2, 1])
    seeds = sample_seeds(0, 0, range(3))
    assert torch.equal(SampleDropout(0.4).eval()(x, lengths, seeds), x)
    assert torch.equal(SampleDropout(0.0).train()(x, lengths, seeds), x)
    assert torch.equal(SampleDropout(1.0).train()(x, lengths, seeds), torch.zeros_like(x))
    torch.manual_seed(1)
    a = SampleDropout(0.4).train()(x, lengths)                # torch's generator, like nn.Dropout
    torch.manual_seed(1)
    torch.testing.assert_close(a, torch.nn.functional.dropout(x, 0.4, True))
    with pytest.raises(ValueError, match="one seed per sample"):
        SampleDropout(0.4).train()(x, lengths, seeds[:2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SampleDropout(1.5)


def test_seeds_are_a_pure_function_of_run_step_and_position():
    a = sample_seeds(7, 123, [0, 1, 2, 3])
    assert a.dtype == np.uint64 and len(set(a.tolist())) == 4
    np.testing.assert_array_equal(sample_seeds(7, 123, [2, 3]), a[2:])
    assert not np.array_equal(sample_seeds(7, 124, [0, 1, 2, 3]), a)
    with pytest.raises(ValueError, match="positions"):
        sample_seeds(0, 0, [-1])


def test_caption_encoder_shards_equal_the_whole_batch_with_dropout():
    torch.manual_seed(0)
    model = build_model("vse", img_dim=6, vocab_size=30, embed_size=12, word_dim=8, dropout=0.4).train()
    lengths = torch.tensor([6, 3, 5, 2, 6, 4])
    tokens = torch.zeros(6, 6, dtype=torch.int64)
    for b, n in enumerate(lengths.tolist()):
        tokens[b, :n] = torch.randint(4, 30, (n,))
    seeds = sample_seeds(0, 5, np.arange(6))
    whole = model.encode_captions(tokens, lengths, seeds)
    for lo, hi in ((0, 3), (3, 6)):
        width = int(lengths[lo:hi].max())
        part = model.encode_captions(tokens[lo:hi, :width], lengths[lo:hi], seeds[lo:hi])
        torch.testing.assert_close(part, whole[lo:hi], rtol=1e-5, atol=1e-6)
    # dropout is really on: other seeds give other embeddings
    assert not torch.allclose(model.encode_captions(tokens, lengths, sample_seeds(0, 6, np.arange(6))), whole)
