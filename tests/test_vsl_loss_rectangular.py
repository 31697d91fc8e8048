"""Rectangular VSL (issue 24, item 3): the row variant of vsl_loss on (r, c) S and C (e.g. N images x
N*K captions), against the float64 reference and the bad-input oracle on every device and
algorithm, values and gradients; the public-code variant keeps its square-only rule."""
import pytest
import torch

import bad_input
import vsl_ext
from helpers import KINDS, assert_close_grad, device_cases, make_input
from vsl_ext import reference

ALGORITHMS = ("dense", "sorted")
SHAPES = [(1, 5), (5, 1), (3, 7), (7, 3), (16, 80)]
EMULATED_SHAPES = [(1, 5), (5, 1), (3, 7), (7, 3), (6, 70)]


@pytest.mark.parametrize("device, shape", device_cases(SHAPES, emulated=EMULATED_SHAPES), indirect=["device"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_row_variant_matches_reference(device, shape, kind, dtype):
    s = make_input(kind, shape, dtype, seed=shape[0])
    # C of random values: a tied C can tie SR exactly (an integer rank of a saturated S row against a
    # tie's half-integer sum), where min/max has no derivative and precisions pick different sides.
    c = make_input("random" if kind != "constant" else "constant", shape, dtype, seed=shape[1] + 1)
    x64, y64 = s.double().requires_grad_(), c.double().requires_grad_()
    expected = reference.vsl_loss(x64, y64, 1e-3)
    expected_grads = torch.autograd.grad(expected, (x64, y64))
    for algorithm in ALGORITHMS:
        x, y = s.to(device).requires_grad_(), c.to(device).requires_grad_()
        loss = vsl_ext.vsl_loss(x, y, 1e-3, algorithm=algorithm)
        torch.testing.assert_close(loss.double().cpu(), expected.detach(), rtol=1e-5, atol=1e-6)
        for g, e in zip(torch.autograd.grad(loss, (x, y)), expected_grads):
            assert_close_grad(g.cpu(), e)


def test_images_against_their_captions():
    """N images x N*K captions, C[i, j] the semantic similarity of image i and caption j's image."""
    n, k = 6, 5
    g = torch.Generator().manual_seed(0)
    s = torch.randn(n, n * k, generator=g, dtype=torch.float64) * 0.05
    image_sem = torch.rand(n, n, generator=g, dtype=torch.float64)
    c = image_sem.repeat_interleave(k, dim=1)
    loss = vsl_ext.vsl_loss(s, c, 1e-2)
    assert loss.item() == pytest.approx(bad_input.loss(s, c, 1e-2), rel=1e-9)
    torch.testing.assert_close(vsl_ext.VSLLoss(tau=1e-2)(s, c), loss)


def test_the_loss_averages_over_all_r_c_entries():
    s = torch.tensor([[0.3, 0.1, 0.2]], dtype=torch.float64)
    c = torch.tensor([[0.3, 0.2, 0.1]], dtype=torch.float64)  # ranks 1,3,2 against 1,2,3
    assert vsl_ext.vsl_loss(s, c, 1e-6).item() == pytest.approx(1 - (1 + 2 / 3 + 2 / 3) / 3, abs=1e-9)


def test_compiled_and_eager_agree_on_a_rectangle():
    s = torch.randn(4, 9, generator=torch.Generator().manual_seed(1)) * 0.01
    c = torch.rand(4, 9, generator=torch.Generator().manual_seed(2))
    f = torch.compile(lambda a, b: vsl_ext.vsl_loss(a, b), fullgraph=True, backend="eager")
    torch.testing.assert_close(f(s, c), vsl_ext.vsl_loss(s, c))


def test_public_code_keeps_its_square_only_rule():
    with pytest.raises(ValueError, match=r"sims must be a square \(n, n\) matrix for variant='public-code'"):
        vsl_ext.vsl_loss(torch.zeros(3, 4), torch.zeros(3, 4), variant="public-code")
    with pytest.raises(ValueError, match="square"):
        vsl_ext.VSLLoss(variant="public-code")(torch.zeros(3, 4), torch.zeros(3, 4))
