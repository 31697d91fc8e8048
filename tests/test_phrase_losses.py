"""Phrase-level losses (vsl_ext.harness.phrase_losses): values on hand-computed batches, against an
independent float64 loop implementation of the docstring's formulas, label positives, masks and
finite gradients."""
import itertools

import numpy as np
import pytest
import torch

from vsl_ext.harness.data.phrase_units import CaptionPhrases
from vsl_ext.harness.data.vocab import Vocabulary
from vsl_ext.harness.phrase_losses import (
    PhraseLevelLoss,
    batch_positives,
    mismatched_phrase_penalty,
    phrase_ranking_loss,
)
from vsl_ext.phrases import PhraseLabels

M = 0.2


def hinge(x):
    return max(0.0, x)


# ------------------------------------------------------------------ hand-computed values
def test_ranking_loss_hand_computed():
    s = torch.tensor([[0.7, 0.65, 0.6, 0.1],
                      [0.2, 0.8, 0.65, 0.7]], dtype=torch.float64)
    pos = torch.tensor([[True, False, False, False],
                        [False, True, False, True]])
    valid = torch.ones(4, dtype=torch.bool)
    # image 0: P = {0}, N = {1, 2, 3}, hardest negative 0.65: [0.2 + 0.65 - 0.7] = 0.15
    # image 1: P = {1, 3}, N = {0, 2}, hardest 0.65: ([0.2+0.65-0.8] + [0.2+0.65-0.7]) / 2 = (0.05 + 0.15) / 2
    assert phrase_ranking_loss(s, pos, valid, M).item() == pytest.approx(0.15 + 0.10)
    # all negatives summed: image 0: 0.15 + 0.10 + 0 ; image 1: ((0 + 0.05) + (0 + 0.15)) / 2
    assert phrase_ranking_loss(s, pos, valid, M, max_violation=False).item() == pytest.approx(0.25 + 0.10)
    # phrase 2 is padding: image 0's hardest stays 0.65; image 1 keeps only negative 0 (0.2): 0
    valid[2] = False
    assert phrase_ranking_loss(s, pos, valid, M).item() == pytest.approx(0.15)


def test_ranking_loss_images_without_positives_or_negatives_add_nothing():
    s = torch.tensor([[0.9, 0.1], [0.3, 0.4], [0.0, 0.5]], dtype=torch.float64)
    pos = torch.tensor([[False, False], [True, True], [True, False]])
    # image 0: no positive; image 1: no negative; image 2: [0.2 + 0.5 - 0.0] = 0.7
    assert phrase_ranking_loss(s, pos, torch.ones(2, dtype=torch.bool), M).item() == pytest.approx(0.7)


def test_mismatch_penalty_hand_computed():
    s = torch.zeros(2, 2, 3, dtype=torch.float64)
    s[0, 1] = torch.tensor([0.5, 0.6, 0.9])
    s[1, 0] = torch.tensor([0.4, 0.1, 0.3])
    s[0, 0] = torch.tensor([0.0, 1.0, 1.0])   # matched pair: ignored whatever its values
    positive = torch.zeros(2, 2, 3, dtype=torch.bool)
    positive[0, 1] = torch.tensor([True, False, False])
    positive[1, 0] = torch.tensor([True, True, False])
    positive[0, 0] = torch.tensor([True, False, False])
    valid = torch.tensor([[True, True, True], [True, True, False]])
    matched = torch.eye(2, dtype=torch.bool)
    # image 0, caption 1: K = {0}, M = {1} (phrase 2 is padding): [0.2 + 0.6 - 0.5] = 0.3
    # image 1, caption 0: K = {0, 1}, M = {2}: ([0.2 + 0.3 - 0.4] + [0.2 + 0.3 - 0.1]) / 2 = 0.25
    got = mismatched_phrase_penalty(s, positive, valid, matched, M)
    assert got.item() == pytest.approx(0.3 + 0.25)


def test_mismatch_penalty_averages_over_partly_matching_captions():
    # image 0 against captions 1 (K={0}, M={1}), 2 (no K: skipped) and 3 (K={1}, M={0})
    s = torch.zeros(1, 4, 2, dtype=torch.float64)
    s[0, 1] = torch.tensor([0.3, 0.4])
    s[0, 2] = torch.tensor([0.9, 0.9])
    s[0, 3] = torch.tensor([0.6, 0.5])
    positive = torch.tensor([[[True, False], [True, False], [False, False], [False, True]]])
    valid = torch.ones(4, 2, dtype=torch.bool)
    matched = torch.tensor([[True, False, False, False]])
    # caption 1: [0.2 + 0.4 - 0.3] = 0.3 ; caption 3: [0.2 + 0.6 - 0.5] = 0.3 -> mean 0.3
    assert mismatched_phrase_penalty(s, positive, valid, matched, M).item() == pytest.approx(0.3)
    s[0, 3] = torch.tensor([0.0, 0.5])   # caption 3 now satisfied: (0.3 + 0) / 2
    assert mismatched_phrase_penalty(s, positive, valid, matched, M).item() == pytest.approx(0.15)


# ------------------------------------------------------------------ independent loop oracle
def oracle(img, units, unit_mask, phr, phr_mask, positive, matched, margin, max_violation):
    """The docstring's formulas, float64, with Python loops."""
    img, units, phr = img.double().numpy(), units.double().numpy(), phr.double().numpy()
    B, C, P = positive.shape
    glob = {(i, c, p): float(img[i] @ phr[c, p]) for i in range(B) for c in range(C) for p in range(P)}
    loc = {}
    for i, c, p in glob:
        vals = [float(units[i, u] @ phr[c, p]) for u in range(units.shape[1]) if unit_mask[i, u]]
        loc[(i, c, p)] = max(vals) if vals else 0.0

    def ranking(score):
        total = 0.0
        for i in range(B):
            ps = [(c, p) for c in range(C) for p in range(P) if phr_mask[c, p] and positive[i, c, p]]
            ns = [(c, p) for c in range(C) for p in range(P) if phr_mask[c, p] and not positive[i, c, p]]
            if not ps or not ns:
                continue
            if max_violation:
                hard = max(score[(i,) + n] for n in ns)
                total += sum(hinge(margin + hard - score[(i,) + q]) for q in ps) / len(ps)
            else:
                total += sum(hinge(margin + score[(i,) + n] - score[(i,) + q]) for q in ps for n in ns) / len(ps)
        return total

    mism = 0.0
    for i in range(B):
        vals = []
        for c in range(C):
            if matched[i, c]:
                continue
            K = [p for p in range(P) if phr_mask[c, p] and positive[i, c, p]]
            Mi = [p for p in range(P) if phr_mask[c, p] and not positive[i, c, p]]
            if K and Mi:
                vals.append(sum(hinge(margin + glob[(i, c, q)] - glob[(i, c, k)]) for q in Mi for k in K)
                            / (len(K) * len(Mi)))
        if vals:
            mism += sum(vals) / len(vals)
    return ranking(glob), ranking(loc), mism


@pytest.mark.parametrize("seed,max_violation", list(itertools.product(range(4), (True, False))))
def test_phrase_level_loss_matches_loop_oracle(seed, max_violation):
    g = torch.Generator().manual_seed(seed)
    B, U, P, D = 5, 4, 3, 6

    def unit(*shape):
        x = torch.randn(*shape, D, generator=g, dtype=torch.float64)
        return x / x.norm(dim=-1, keepdim=True)

    img, units, phr = unit(B), unit(B, U), unit(B, P)
    unit_mask = torch.rand(B, U, generator=g) > 0.3
    unit_mask[0] = False                                  # an image without local units
    phr_mask = torch.rand(B, P, generator=g) > 0.3
    phr_mask[1] = False                                   # a caption without phrases
    phr = phr * phr_mask.unsqueeze(-1)
    positive = torch.rand(B, B, P, generator=g) > 0.5
    image_ids = torch.tensor([0, 1, 2, 1, 3])             # captions 1 and 3 share an image
    matched = image_ids[:, None] == image_ids[None, :]
    out = PhraseLevelLoss(M, max_violation)(img, units, unit_mask, phr, phr_mask, positive, matched)
    want = oracle(img, units, unit_mask, phr, phr_mask, positive, matched, M, max_violation)
    got = (out["phrase_global"].item(), out["phrase_local"].item(), out["phrase_mismatch"].item())
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert out["phrase"].item() == pytest.approx(sum(want), rel=1e-12, abs=1e-12)
    assert sum(want) > 0                                   # the case exercises the losses


def test_gradients_are_finite_and_zero_for_padding():
    g = torch.Generator().manual_seed(0)
    B, U, P, D = 4, 3, 3, 5
    img = torch.nn.functional.normalize(torch.randn(B, D, generator=g), dim=-1).requires_grad_()
    units = torch.nn.functional.normalize(torch.randn(B, U, D, generator=g), dim=-1).requires_grad_()
    phr = torch.nn.functional.normalize(torch.randn(B, P, D, generator=g), dim=-1).requires_grad_()
    unit_mask = torch.ones(B, U, dtype=torch.bool)
    unit_mask[1] = False
    phr_mask = torch.ones(B, P, dtype=torch.bool)
    phr_mask[2] = False
    phr_mask[3, 2] = False
    positive = torch.rand(B, B, P, generator=g) > 0.5
    positive[0] = False                                   # image 0: no positive at all
    matched = torch.eye(B, dtype=torch.bool)
    out = PhraseLevelLoss(M)(img, units, unit_mask, phr, phr_mask, positive, matched)
    out["phrase"].backward()
    for t in (img, units, phr):
        assert torch.isfinite(t.grad).all()
    assert torch.all(phr.grad[2] == 0) and torch.all(phr.grad[3, 2] == 0)
    assert torch.all(units.grad[1] == 0)
    assert out["phrase"].item() > 0


def test_argument_errors():
    s = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="positive"):
        phrase_ranking_loss(s, torch.zeros(2, 3), torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="valid"):
        phrase_ranking_loss(s, torch.zeros(2, 3, dtype=torch.bool), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="matched"):
        mismatched_phrase_penalty(torch.zeros(2, 2, 1), torch.zeros(2, 2, 1, dtype=torch.bool),
                                  torch.ones(2, 1, dtype=torch.bool), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="margin"):
        PhraseLevelLoss(-1.0)


# ------------------------------------------------------------------ positives from labels
def test_batch_positives_follow_the_label_sets_of_all_captions():
    # image 0: captions "red dog" / "dog on grass"; image 1: "cat" / "black cat on grass"
    labels = [PhraseLabels(("dog",), (("dog", "red"),)), PhraseLabels(("dog", "grass"), (), (("dog", "on", "grass"),)),
              PhraseLabels(("cat",)), PhraseLabels(("cat", "grass"), (("cat", "black"),), (("cat", "on", "grass"),))]
    vocab = Vocabulary("dog red grass on cat black".split())
    ph = CaptionPhrases(labels, vocab, 2)
    caption_ids = np.array([0, 3])                        # a batch: caption 0 of image 0, caption 1 of image 1
    batch = ph.batch(caption_ids)
    positive, matched = batch_positives(ph, caption_ids // 2, batch.labels)
    names = [ph.units_of(c) for c in caption_ids]
    assert names[1] == ["entity\tcat", "entity\tgrass", "attribute\tcat\tblack", "triple\tcat\ton\tgrass"]
    # image 0 against caption 3's units: only "grass" occurs in image 0's captions (its other caption)
    assert positive[0, 1].tolist() == [False, True, False, False]
    # image 1 against caption 0's units (entity dog, attribute red dog; one padding slot)
    assert positive[1, 0].tolist() == [False, False, False, False]
    assert positive[0, 0].tolist()[:2] == [True, True] and positive[1, 1].all()
    assert matched.tolist() == [[True, False], [False, True]]
