"""smooth_ap_loss (Smooth-AP for any relevance) against the float64 brute force (tests/oracle.py), the
reference, the original Smooth-AP code (a transcription, below) and pytorch-metric-learning's
SmoothAPLoss where it is right (and a record of where it is not); every device and algorithm,
rectangular shapes, rows without positives, all-positive rows, infinities, gradcheck, opcheck,
vmap, compile, the module and the argument errors."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import oracle
import vsl_ext
from helpers import DEVICES, KINDS, assert_close_grad, device_cases, make_input, ops_making, tied_grids
from vsl_ext import reference
from vsl_ext.ops import smooth_ap_loss as sap

ALGORITHMS = ("dense", "sorted")


def _relevance(shape, seed, p=0.3):
    g = torch.Generator().manual_seed(seed)
    rel = torch.rand(shape, generator=g) < p
    rel[0] = False  # a query without a relevant reference: skipped
    if shape[0] > 2:
        rel[1] = True  # an all-relevant query: AP 1
        rel[2] = False
        rel[2, -1] = True  # a single relevant reference
    return rel


def _check(s, rel, tau, device, algorithms=ALGORITHMS):
    expected, expected_grad = oracle.brute_smooth_ap(s.double().tolist(), rel.tolist(), tau)
    expected_grad = torch.tensor(expected_grad, dtype=torch.float64)
    for algorithm in algorithms:
        x = s.to(device).requires_grad_()
        loss = vsl_ext.smooth_ap_loss(x, rel.to(device), tau, algorithm=algorithm)
        assert loss.dtype == s.dtype and loss.dim() == 0
        assert abs(loss.item() - expected) <= 1e-5 * max(1.0, abs(expected))
        (g,) = torch.autograd.grad(loss, x)
        assert g.dtype == s.dtype
        assert_close_grad(g.cpu(), expected_grad)


@pytest.mark.parametrize("device, shape",
                         device_cases([(1, 1), (3, 3), (4, 9), (9, 4), (6, 80)], emulated=[(1, 1), (4, 9), (5, 70)]),
                         indirect=["device"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_matches_brute_force(device, shape, kind, dtype):
    tau = 0.01
    s = make_input(kind, shape, dtype, seed=shape[1], tau=tau)
    rel = _relevance(shape, shape[0]) if shape != (1, 1) else torch.ones(1, 1, dtype=torch.bool)
    _check(s, rel, tau, device)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_infinities_follow_the_rule(device):
    tau = 0.01
    s = make_input("random", (6, 40), torch.float64, seed=3, tau=tau)
    s[1, :4] = -math.inf  # masked references, some relevant
    s[3, 5:9] = -math.inf
    s[4, 2] = math.inf
    rel = _relevance((6, 40), 8, 0.4)
    rel[3, 5:7] = True
    _check(s, rel, tau, device)


def test_matches_the_reference_and_memory_chunks(monkeypatch):
    s = make_input("random", (37, 50), torch.float64, seed=1, tau=0.01).requires_grad_()
    rel = _relevance((37, 50), 2)
    e = reference.smooth_ap_loss(s, rel, 0.01)
    (ge,) = torch.autograd.grad(e, s)
    for chunk in (sap.CHUNK_ELEMENTS, 50, 120):  # one call, one row per call, two rows per call
        monkeypatch.setattr(sap, "CHUNK_ELEMENTS", chunk)
        loss = vsl_ext.smooth_ap_loss(s, rel, 0.01)
        torch.testing.assert_close(loss, e)
        assert_close_grad(torch.autograd.grad(loss, s)[0], ge)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_gradcheck_float64(algorithm):
    s = make_input("random", (4, 7), torch.float64, seed=4, tau=0.5).requires_grad_()
    rel = _relevance((4, 7), 5, 0.5)
    assert torch.autograd.gradcheck(lambda x: vsl_ext.smooth_ap_loss(x, rel, 0.5, algorithm=algorithm), (s,))


def test_perfect_and_reversed_rankings():
    rel = torch.eye(5, dtype=torch.bool) | torch.eye(5, dtype=torch.bool).roll(1, 1)
    s = torch.where(rel, 1.0, 0.0)  # relevant references far above the rest
    assert vsl_ext.smooth_ap_loss(s, rel, 1e-3).item() == pytest.approx(0.0, abs=1e-6)
    # both relevant tied at the bottom: R_P = 1 + 1/2, R_all = 1 + 3 + 1/2, AP = 1/3
    worst = vsl_ext.smooth_ap_loss(-s, rel, 1e-3).item()
    assert worst == pytest.approx(2 / 3, abs=1e-6)


def test_nan_gives_nan():
    s = torch.randn(3, 5)
    s[1, 2] = math.nan
    assert torch.isnan(vsl_ext.smooth_ap_loss(s, torch.ones(3, 5, dtype=torch.bool)))


# ----------------------------------------------------------------------- the original Smooth-AP code
def _original_smooth_ap(preds, anneal, batch_size, num_id, feat_dims):
    """Transcription (test oracle only) of SmoothAP.forward in Andrew-Brown1/Smooth_AP src/losses.py,
    with its .cuda() calls dropped: classes of batch_size / num_id consecutive members, a query's
    positives its class (itself included)."""
    def sigmoid(tensor, temp=1.0):
        exponent = -tensor / temp
        exponent = torch.clamp(exponent, min=-50, max=50)
        y = 1.0 / (1.0 + torch.exp(exponent))
        return y

    mask = 1.0 - torch.eye(batch_size, dtype=preds.dtype)
    mask = mask.unsqueeze(dim=0).repeat(batch_size, 1, 1)
    sim_all = torch.mm(preds, preds.t())
    sim_all_repeat = sim_all.unsqueeze(dim=1).repeat(1, batch_size, 1)
    sim_diff = sim_all_repeat - sim_all_repeat.permute(0, 2, 1)
    sim_sg = sigmoid(sim_diff, temp=anneal) * mask
    sim_all_rk = torch.sum(sim_sg, dim=-1) + 1
    xs = preds.view(num_id, int(batch_size / num_id), feat_dims)
    pos_mask = 1.0 - torch.eye(int(batch_size / num_id), dtype=preds.dtype)
    pos_mask = pos_mask.unsqueeze(dim=0).unsqueeze(dim=0).repeat(num_id, int(batch_size / num_id), 1, 1)
    sim_pos = torch.bmm(xs, xs.permute(0, 2, 1))
    sim_pos_repeat = sim_pos.unsqueeze(dim=2).repeat(1, 1, int(batch_size / num_id), 1)
    sim_pos_diff = sim_pos_repeat - sim_pos_repeat.permute(0, 1, 3, 2)
    sim_pos_sg = sigmoid(sim_pos_diff, temp=anneal) * pos_mask
    sim_pos_rk = torch.sum(sim_pos_sg, dim=-1) + 1
    ap = torch.zeros(1, dtype=preds.dtype)
    group = int(batch_size / num_id)
    for ind in range(num_id):
        pos_divide = torch.sum(sim_pos_rk[ind] / (sim_all_rk[(ind * group):((ind + 1) * group),
                                                             (ind * group):((ind + 1) * group)]))
        ap = ap + ((pos_divide / group) / batch_size)
    return 1 - ap


@pytest.mark.parametrize("classes, members", [(6, 8), (8, 6), (4, 4), (10, 3)])
def test_the_original_code(classes, members):
    n, d = classes * members, 16
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    x = torch.nn.functional.normalize(x, dim=1).requires_grad_()
    labels = torch.arange(classes).repeat_interleave(members)
    expected = _original_smooth_ap(x, 0.01, n, classes, d)
    (ge,) = torch.autograd.grad(expected.sum(), x)
    loss = vsl_ext.smooth_ap_loss(x @ x.t(), labels[:, None] == labels[None, :], 0.01)
    torch.testing.assert_close(loss, expected[0], rtol=1e-7, atol=1e-9)
    assert_close_grad(torch.autograd.grad(loss, x)[0], ge, rtol=1e-6)


# ------------------------------------------------------------------- pytorch-metric-learning 2.9.0
def _pml_and_ours(classes, members, seed=0):
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    n = classes * members
    x = torch.randn(n, 32, generator=torch.Generator().manual_seed(seed))
    labels = torch.arange(classes).repeat_interleave(members)  # PML needs each class's members together
    pml = losses.SmoothAPLoss(temperature=0.01)(x, labels).item()
    xn = torch.nn.functional.normalize(x, dim=1)  # PML's default distance: cosine similarity
    ours = vsl_ext.smooth_ap_loss(xn @ xn.t(), labels[:, None] == labels[None, :], 0.01).item()
    return pml, ours


@pytest.mark.parametrize("classes", [4, 7, 16])
def test_pml_agrees_when_classes_equal_members(classes):
    pml, ours = _pml_and_ours(classes, classes)
    assert ours == pytest.approx(pml, abs=2e-5)


def test_pml_is_wrong_when_classes_and_members_differ():
    """PML 2.9.0 views the batch as (members per class, classes): 6 classes of 8 mix up the groups.
    The definition (ours, checked against the brute force and the original code above) differs."""
    pml, ours = _pml_and_ours(6, 8)
    assert abs(pml - ours) > 1e-3


# ------------------------------------------------------------------------------ op, module, errors
@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_opcheck(device):
    s = (torch.randn(2, 4, 9, generator=torch.Generator().manual_seed(4)) * 0.02).to(device).requires_grad_()
    rel = (torch.rand(2, 4, 9, generator=torch.Generator().manual_seed(0)) < 0.5).to(device)
    tau = torch.tensor(0.01, dtype=torch.float64)
    torch.library.opcheck(sap.smooth_ap_loss_op, (s, rel, tau, True, 0))
    torch.library.opcheck(sap.smooth_ap_loss_op, (s, rel, tau, False, 2))


def test_batches_vmap_and_func_grad_match_a_loop():
    s = torch.randn(3, 4, 10, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 0.02
    rel = torch.rand(3, 4, 10, generator=torch.Generator().manual_seed(1)) < 0.4
    rel[:, 0, 0] = True
    f = lambda x, p: vsl_ext.smooth_ap_loss(x, p)  # noqa: E731
    loop = torch.stack([f(x, p) for x, p in zip(s, rel)])
    torch.testing.assert_close(torch.func.vmap(f)(s, rel), loop)
    tau = torch.tensor(0.01, dtype=torch.float64)
    torch.testing.assert_close(sap.smooth_ap_loss_op(s, rel, tau, False, 0)[0], loop)
    grads = torch.func.vmap(torch.func.grad(f))(s, rel)
    for x, p, gv in zip(s, rel, grads):
        x = x.clone().requires_grad_()
        torch.testing.assert_close(gv, torch.autograd.grad(f(x, p), x)[0])


def test_torch_compile_fullgraph_and_backward():
    s = torch.randn(5, 12, generator=torch.Generator().manual_seed(7)) * 0.02
    rel = torch.rand(5, 12, generator=torch.Generator().manual_seed(1)) < 0.4
    rel[0, 0] = True
    x1, x2 = s.clone().requires_grad_(), s.clone().requires_grad_()
    compiled = torch.compile(lambda x, p: vsl_ext.smooth_ap_loss(x, p), fullgraph=True, backend="eager")
    a, b = compiled(x1, rel), vsl_ext.smooth_ap_loss(x2, rel)
    torch.testing.assert_close(a, b)
    a.backward()
    b.backward()
    torch.testing.assert_close(x1.grad, x2.grad)


def test_no_grad_forward_then_backward_recomputes():
    s = torch.randn(4, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.02
    rel = torch.rand(4, 6, generator=torch.Generator().manual_seed(3)) < 0.5
    rel[0, 0] = True
    tau = torch.tensor(0.01, dtype=torch.float64)
    x = s.clone().requires_grad_()
    loss, _ = sap.SmoothAPFunction.apply(x, rel, tau, False, 0)  # forward not asked for the gradient
    (g,) = torch.autograd.grad(loss, x)
    assert_close_grad(g, torch.autograd.grad(vsl_ext.smooth_ap_loss(x, rel), x)[0])


def test_module():
    s = torch.randn(4, 6, generator=torch.Generator().manual_seed(2)) * 0.02
    rel = torch.rand(4, 6, generator=torch.Generator().manual_seed(3)) < 0.5
    rel[0, 0] = True
    m = vsl_ext.SmoothAPLoss(tau=0.02, algorithm="dense")
    assert "tau=0.02" in repr(m)
    torch.testing.assert_close(m(s, rel), vsl_ext.smooth_ap_loss(s, rel, 0.02))
    with pytest.raises(ValueError, match="tau"):
        vsl_ext.SmoothAPLoss(tau=0.0)
    with pytest.raises(ValueError, match="algorithm"):
        vsl_ext.SmoothAPLoss(algorithm="fast")


def test_half_input_returns_a_half_loss_and_gradient():
    s = (torch.randn(4, 6, generator=torch.Generator().manual_seed(2)) * 0.05).half().requires_grad_()
    rel = torch.ones(4, 6, dtype=torch.bool).triu()
    loss = vsl_ext.smooth_ap_loss(s, rel)
    assert loss.dtype == torch.float32
    loss.backward()
    assert s.grad.dtype == torch.float16


@pytest.mark.parametrize("call, error, message", [
    (lambda: vsl_ext.smooth_ap_loss(torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.bool)), ValueError,
     "relevant marks no relevant reference"),
    (lambda: vsl_ext.smooth_ap_loss(torch.zeros(3, 4), torch.ones(3, 4)), TypeError, "relevant must be a bool"),
    (lambda: vsl_ext.smooth_ap_loss(torch.zeros(3, 4), torch.ones(4, 3, dtype=torch.bool)), ValueError,
     "relevant must have the shape of sims"),
    (lambda: vsl_ext.smooth_ap_loss(torch.zeros(3, 4), [[True]]), TypeError, "relevant must be a bool torch.Tensor"),
    (lambda: vsl_ext.smooth_ap_loss(torch.zeros(4), torch.ones(4, dtype=torch.bool)), ValueError, "sims must be a 2-D"),
    (lambda: vsl_ext.smooth_ap_loss(torch.zeros(0, 4), torch.ones(0, 4, dtype=torch.bool)), ValueError,
     "sims must be non-empty"),
    (lambda: vsl_ext.smooth_ap_loss(torch.zeros(3, 4, dtype=torch.int64), torch.ones(3, 4, dtype=torch.bool)),
     TypeError, "sims must be a floating-point"),
    (lambda: vsl_ext.smooth_ap_loss(torch.zeros(3, 4), torch.ones(3, 4, dtype=torch.bool), tau=-1.0), ValueError,
     "tau"),
    (lambda: vsl_ext.smooth_ap_loss(torch.zeros(3, 4), torch.ones(3, 4, dtype=torch.bool), algorithm="x"), ValueError,
     "algorithm"),
])
def test_bad_input_names_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("relevant, error, message", [
    (torch.ones(3, 4), TypeError, "vsl_ext::smooth_ap_loss: relevant must be a bool tensor"),
    (torch.ones(3, 5, dtype=torch.bool), ValueError, "relevant must have the shape of sims"),
    (torch.zeros(3, 4, dtype=torch.bool), ValueError, "relevant marks no relevant reference"),
    (torch.zeros(2, 3, 4, dtype=torch.bool), ValueError, "relevant must have the shape of sims"),
])
def test_the_op_checks_its_inputs(relevant, error, message):
    tau = torch.tensor(0.01, dtype=torch.float64)
    with pytest.raises(error, match=message):
        torch.ops.vsl_ext.smooth_ap_loss(torch.zeros(3, 4), relevant, tau, True, 0)


def test_a_batch_with_one_matrix_without_relevance_is_rejected():
    rel = torch.ones(2, 3, 4, dtype=torch.bool)
    rel[1] = False
    with pytest.raises(ValueError, match="relevant marks no relevant reference"):
        torch.ops.vsl_ext.smooth_ap_loss(torch.zeros(2, 3, 4), rel, torch.tensor(0.01, dtype=torch.float64), True, 0)


class _Family(torch.nn.Module):
    def forward(self, sims, relevant):
        return vsl_ext.smooth_ap_loss(sims, relevant) + vsl_ext.sigmoid_rank(sims, 0.01, among=relevant).mean()


def test_torch_export():
    s = torch.randn(6, 9, generator=torch.Generator().manual_seed(1)) * 0.02
    rel = torch.rand(6, 9, generator=torch.Generator().manual_seed(2)) < 0.4
    rel[:, 0] = True
    exported = torch.export.export(_Family(), (s, rel))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert "vsl_ext.smooth_ap_loss.default" in targets and "vsl_ext.sigmoid_rank_among.default" in targets
    s2 = torch.randn(6, 9, generator=torch.Generator().manual_seed(3)) * 0.02
    torch.testing.assert_close(exported.module()(s2, rel), _Family()(s2, rel))


def test_torch_export_rejects_what_the_op_rejects():
    class Direct(torch.nn.Module):
        def forward(self, sims, relevant):
            return torch.ops.vsl_ext.smooth_ap_loss(sims, relevant, torch.tensor(0.01, dtype=torch.float64), True,
                                                    0)[0]

    with pytest.raises(Exception, match=r"relevant must have the shape of sims \(6, 6\), got \(3, 2\)"):
        torch.export.export(Direct(), (torch.randn(6, 6), torch.ones(3, 2, dtype=torch.bool)))
    with pytest.raises(Exception, match="relevant must be a bool tensor"):
        torch.export.export(Direct(), (torch.randn(6, 6), torch.ones(6, 6)))


@settings(max_examples=25, deadline=None)
@given(tied_grids(max_rows=4), st.integers(0, 2 ** 16))
def test_hypothesis_tied_grids_match_the_brute_force(grid, seed):
    """Few distinct values, ties and pairs on the +-30 tau window's edges (tau = 1e-3), random relevance."""
    m, _ = grid
    rel = torch.rand(m.shape, generator=torch.Generator().manual_seed(seed)) < 0.5
    rel[0, 0] = True
    expected, expected_grad = oracle.brute_smooth_ap(m.tolist(), rel.tolist(), 1e-3)
    for algorithm in ALGORITHMS:
        x = m.clone().requires_grad_()
        loss = vsl_ext.smooth_ap_loss(x, rel, 1e-3, algorithm=algorithm)
        assert abs(loss.item() - expected) <= 1e-9
        assert_close_grad(torch.autograd.grad(loss, x)[0], torch.tensor(expected_grad, dtype=torch.float64))
        ranks = vsl_ext.sigmoid_rank(m, 1e-3, algorithm=algorithm, among=rel)
        torch.testing.assert_close(ranks, torch.tensor(oracle.brute_rank_among(m.tolist(), rel.tolist(), 1e-3),
                                                      dtype=torch.float64))


def test_masks_made_under_inference_mode():
    """A cached relevance made under torch.inference_mode: autograd saves a copy, not the inference tensor."""
    s = torch.randn(4, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.02
    with torch.inference_mode():
        rel = torch.rand(4, 6, generator=torch.Generator().manual_seed(3)) < 0.5
        rel[:, 0] = True
    x = s.clone().requires_grad_()
    (g1,) = torch.autograd.grad(vsl_ext.sigmoid_rank(x, 0.01, among=rel).sum(), x)
    (g2,) = torch.autograd.grad(vsl_ext.smooth_ap_loss(x, rel), x)
    loss, _ = sap.SmoothAPFunction.apply(x, rel, torch.tensor(0.01, dtype=torch.float64), False, 0)
    (g3,) = torch.autograd.grad(loss, x)
    torch.testing.assert_close(g3, g2)
    assert torch.isfinite(g1).all()


def test_backward_makes_no_zeros_for_the_gradient_output():
    """The op's second output (the gradient) takes no gradient: the backward gets None for it, not an
    (r, c) tensor of zeros (as much memory as the gradient itself)."""
    x = make_input("random", (7, 9), torch.float64, seed=2, tau=0.01).requires_grad_()
    rel = _relevance((7, 9), 3)
    ops = ops_making((7, 9), lambda: torch.autograd.grad(vsl_ext.smooth_ap_loss(x, rel), x))
    assert not [op for op in ops if "zeros" in op], ops
    assert ops.count("aten.mul.Tensor") == 1, ops  # the gradient times the incoming one, once


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_skipped_row_with_nan_gets_gradient_0_and_the_loss_is_never_negative(algorithm):
    s = torch.tensor([[1.0, 2.0, 0.0], [math.nan, 0.0, 1.0]], requires_grad=True)
    rel = torch.tensor([[True, False, False], [False, False, False]])
    loss = vsl_ext.smooth_ap_loss(s, rel, 0.5, algorithm=algorithm)
    (g,) = torch.autograd.grad(loss, s)
    assert torch.equal(g[1], torch.zeros(3)) and torch.isfinite(g[0]).all()
    everything = torch.ones(1, 1000, dtype=torch.bool)  # AP 1 in every rounding: the sum may exceed 1
    for q in (1, 13):
        x = torch.randn(q, 1000, generator=torch.Generator().manual_seed(q), dtype=torch.float64)
        assert vsl_ext.smooth_ap_loss(x, everything.expand(q, -1), algorithm=algorithm).item() >= 0.0


def test_a_second_derivative_through_a_product_raises():
    """The loss of E E^T: the gradient's own derivative is not computed, and saying so beats treating
    the gradient as a constant (a gradient penalty would be silently wrong)."""
    e = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    rel = torch.eye(4, dtype=torch.bool)
    (g,) = torch.autograd.grad(vsl_ext.smooth_ap_loss(e @ e.T, rel, 0.5), e, create_graph=True)
    with pytest.raises(RuntimeError, match="no second derivative"):
        (g ** 2).sum().backward()
