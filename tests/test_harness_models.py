"""Model heads: batching/chunking does not change the scores; padding does not leak into them."""
import pytest
import torch

from vsl_ext.harness.models import build_model
from vsl_ext.harness.models.encoders import GPO


def inputs(n_img=5, n_cap=7, regions=6, dim=10, vocab=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n_img, regions, dim, generator=g)
    lengths = torch.randint(2, 9, (n_cap,), generator=g)
    lengths[0] = 8
    tokens = torch.randint(4, vocab, (n_cap, 8), generator=g)
    tokens[torch.arange(8).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
    return images, tokens, lengths


@pytest.mark.parametrize("name", ["sgr", "saf"])
def test_sgraf_equals_caption_by_caption_evaluation(name):
    torch.manual_seed(0)
    model = build_model(name, img_dim=10, vocab_size=30, embed_size=16, word_dim=8, sim_dim=8, num_regions=6).eval()
    images, tokens, lengths = inputs()
    with torch.no_grad():
        batched = model(images, tokens, lengths)
        img = model.encode_images(images)
        single = torch.stack([
            model.similarity(img, model.encode_captions(tokens[c:c + 1, :lengths[c]], lengths[c:c + 1]),
                             lengths[c:c + 1])[:, 0] for c in range(len(lengths))], dim=1)
        model.pair_chunk_elements = 1                      # one caption per chunk
        chunked = model(images, tokens, lengths)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batched, chunked, rtol=1e-5, atol=1e-6)
    assert batched.shape == (5, 7) and (batched > 0).all() and (batched < 1).all()


@pytest.mark.parametrize("pooling", ["mean", "gpo"])
def test_vse_ignores_padding_and_is_cosine(pooling):
    torch.manual_seed(0)
    model = build_model("vse", img_dim=10, vocab_size=30, embed_size=16, word_dim=8, pooling=pooling).eval()
    images, tokens, lengths = inputs()
    with torch.no_grad():
        s = model(images, tokens, lengths)
        padded = torch.cat([tokens, torch.zeros(7, 4, dtype=tokens.dtype)], 1)
        torch.testing.assert_close(model(images, padded, lengths), s)
        assert s.abs().max() <= 1 + 1e-5
        cap = model.encode_captions(tokens, lengths)
        torch.testing.assert_close(cap.norm(dim=1), torch.ones(7))


def test_gpo_interpolates_between_max_and_mean():
    gpo = GPO()
    x = torch.randn(3, 5, 4)
    out = gpo(x, torch.tensor([5, 3, 1]))
    assert torch.allclose(out[2], x[2, 0])                       # a single valid element is returned as is
    for i, n in enumerate([5, 3]):
        valid = x[i, :n]
        assert (out[i] <= valid.max(0).values + 1e-6).all() and (out[i] >= valid.min(0).values - 1e-6).all()


def test_unknown_model_and_region_mismatch():
    with pytest.raises(ValueError, match="model must be one of"):
        build_model("clip", img_dim=4, vocab_size=10)
    model = build_model("sgr", img_dim=10, vocab_size=30, embed_size=16, word_dim=8, sim_dim=8, num_regions=6)
    with pytest.raises(ValueError, match="6 regions"):
        model.encode_images(torch.randn(2, 4, 10))
