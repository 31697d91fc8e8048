"""VSLCriterion and VSLLoss against a hand-computed 3 x 3 case and the reference implementation."""
import pytest
import torch

import vsl_ext
from vsl_ext import VSLCriterion, VSLLoss, reference
from vsl_ext.criterion import triplet_loss

# images x captions, positives on the diagonal; values 0.05 apart so tau = 1e-3 gives hard ranks
S = torch.tensor([[0.90, 0.50, 0.10],
                  [0.30, 0.80, 0.70],
                  [0.35, 0.70, 0.40]], dtype=torch.float64)
C = torch.tensor([[1.0, 0.2, 0.6],
                  [0.2, 1.0, 0.5],
                  [0.6, 0.5, 1.0]], dtype=torch.float64)

# Hand computation (margin 0.2):
#   image rows, hardest negative caption:  row0 0 | row1 0.2+0.7-0.8 = 0.1 | row2 max(0.15, 0.5) = 0.5
#   caption columns, hardest negative image: col0 0 | col1 0.2+0.7-0.8 = 0.1 | col2 0.2+0.7-0.4 = 0.5
#   -> max_violation 1.2; summing all negatives adds row2's 0.15 -> 1.35
#   SR (descending row ranks of S): [1,2,3] [3,1,2] [3,1,2];  CR of C: [1,3,2] [3,1,2] [2,3,1]
#   sum min/max = (1 + 2/3 + 2/3) + 3 + (2/3 + 1/3 + 1/2) = 41/6  ->  L_vs = 1 - 41/54 = 13/54
#   text side on S^T: SR [1,3,2] [3,1,2] [3,1,2] vs CR -> 3 + 3 + 3/2 -> L_ts = 1 - 7.5/9 = 1/6
TRIPLET_HARDEST, TRIPLET_SUM = 1.2, 1.35
L_VS, L_TS = 13 / 54, 1 / 6


def test_hand_computed_case():
    out = VSLCriterion()(S, C)
    assert set(out) == {"loss", "triplet", "vsl"}
    assert out["triplet"].item() == pytest.approx(TRIPLET_HARDEST, abs=1e-12)
    assert out["vsl"].item() == pytest.approx(L_VS, abs=1e-9)
    assert out["loss"].item() == pytest.approx(TRIPLET_HARDEST + 10 * L_VS, abs=1e-8)


def test_sum_of_all_negatives_and_weights():
    out = VSLCriterion(max_violation=False, alpha=0.5, beta=2.0)(S, C)
    assert out["triplet"].item() == pytest.approx(TRIPLET_SUM, abs=1e-12)
    assert out["loss"].item() == pytest.approx(0.5 * TRIPLET_SUM + 2.0 * L_VS, abs=1e-8)


def test_text_side():
    out = VSLCriterion(text_side=True)(S, C, C)
    assert out["vsl_text"].item() == pytest.approx(L_TS, abs=1e-9)
    assert out["loss"].item() == pytest.approx(TRIPLET_HARDEST + 10 * (L_VS + L_TS), abs=1e-8)
    with pytest.raises(ValueError, match="caption_sem"):
        VSLCriterion(text_side=True)(S, C)


def test_baseline_needs_no_semantics():
    out = VSLCriterion(beta=0.0)(S)
    assert out["vsl"].item() == 0.0
    assert out["loss"].item() == pytest.approx(TRIPLET_HARDEST)


def test_rank_direction_agreeing_orders_give_zero_loss():
    # every row of S orders the captions exactly as C orders the images: no VSL penalty
    c = torch.rand(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    c = (c + c.t()) / 2 + torch.eye(6, dtype=torch.float64)
    s = c - 0.3                              # same order and gaps, shifted
    assert VSLCriterion()(s, c)["vsl"].item() == pytest.approx(0.0, abs=1e-9)
    assert VSLCriterion()(-s, c)["vsl"].item() > 0.3   # reversed order is penalised


def test_matches_reference_and_gradients_flow():
    g = torch.Generator().manual_seed(1)
    s = (torch.rand(16, 16, generator=g, dtype=torch.float64) * 0.02).requires_grad_()
    c = torch.rand(16, 16, generator=g, dtype=torch.float64)
    crit = VSLCriterion(tau=1e-2)
    out = crit(s, c)
    expected = triplet_loss(s) + 10 * reference.vsl_loss(s, c, 1e-2)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-9)
    (g1,) = torch.autograd.grad(out["loss"], s)
    (g2,) = torch.autograd.grad(expected, s)
    torch.testing.assert_close(g1, g2, rtol=1e-6, atol=1e-9)


def test_public_code_variant():
    out = VSLCriterion(variant="public-code")(S, C)
    assert out["vsl"].item() == pytest.approx(reference.public_code_vsl_loss(S, C).item(), abs=1e-9)


def test_a_gradient_step_on_vsl_moves_ranks_towards_semantics():
    g = torch.Generator().manual_seed(2)
    c = torch.rand(8, 8, generator=g)
    s = torch.rand(8, 8, generator=g).requires_grad_()
    crit = VSLCriterion(alpha=0.0, beta=1.0, tau=0.05)
    before = crit(s, c)["loss"]
    before.backward()
    with torch.no_grad():
        after = crit(s - 0.5 * s.grad / s.grad.norm(), c)["loss"]
    assert after.item() < before.item()


def test_bad_inputs():
    with pytest.raises(ValueError, match="square"):
        VSLCriterion()(torch.zeros(3, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="image_sem"):
        VSLCriterion()(S)
    with pytest.raises(ValueError, match="shape"):
        VSLCriterion()(S, torch.zeros(4, 4))
    with pytest.raises(ValueError, match="variant"):
        VSLCriterion(variant="columns")
    with pytest.raises(ValueError, match="tau"):
        VSLCriterion(tau=0)
    with pytest.raises(ValueError, match="beta"):
        VSLCriterion(beta=-1)


def test_vsl_loss_module_is_the_function():
    """VSLLoss(tau, variant) is vsl_loss as an nn.Module: the hand-computed L_vs, the reference on
    random input for both variants, and the same gradients."""
    assert VSLLoss()(S, C).item() == pytest.approx(L_VS, abs=1e-9)
    g = torch.Generator().manual_seed(3)
    s = (torch.rand(9, 9, generator=g, dtype=torch.float64) * 0.05).requires_grad_()
    c = torch.rand(9, 9, generator=g, dtype=torch.float64)
    for variant, ref in (("row", reference.vsl_loss), ("public-code", reference.public_code_vsl_loss)):
        module = VSLLoss(tau=0.01, variant=variant, algorithm="dense")
        out = module(s, c)
        want = ref(s, c, 0.01)
        assert out.item() == pytest.approx(want.item(), rel=1e-9)
        torch.testing.assert_close(torch.autograd.grad(out, s)[0], torch.autograd.grad(want, s)[0], rtol=1e-6,
                                   atol=1e-9)
        assert out.item() == vsl_ext.vsl_loss(s, c, 0.01, variant, algorithm="dense").item()
    assert "variant='public-code'" in repr(module) and isinstance(module, torch.nn.Module)


def test_vsl_loss_module_rejects_bad_settings():
    with pytest.raises(ValueError, match="variant must be one of"):
        VSLLoss(variant="columns")
    with pytest.raises(ValueError, match="algorithm must be one of"):
        VSLLoss(algorithm="fast")
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        VSLLoss(tau=0.0)
    with pytest.raises(ValueError, match=r"semantic_sims must have the shape"):
        VSLLoss()(S, torch.zeros(4, 4))
