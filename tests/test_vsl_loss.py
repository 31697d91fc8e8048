"""vsl_loss vs the reference (both variants), the published formula, autograd, torch.library and compile."""
import itertools
import math

import pytest
import torch

import vsl_ext
from vsl_ext import reference
from vsl_ext.loss import _vsl_ratio_sum
from vsl_ext.rank import _sigmoid_rank, _sigmoid_rank_backward

from conftest import assert_close_grad, make_input, requires_cuda

KINDS = ["random", "wide", "tied", "constant", "adversarial"]
SIZES = [1, 2, 3, 17, 128, 300]
REFERENCE = {"row": reference.vsl_loss, "public-code": reference.public_code_vsl_loss}


def _pair(kind, n, dtype, seed=0):
    s = make_input(kind, (n, n), dtype, seed=seed)
    c = make_input("tied" if kind != "constant" else "constant", (n, n), dtype, seed=seed + 1)
    return s, (c + c.t()) / 2  # semantic similarities are symmetric in practice (TF-IDF); not required


def _check(s, c, variant, algorithms=("auto",), device="cpu", semantic_grad=True, tau=1e-3):
    """Loss and gradients of every algorithm vs the float64 reference (computed once)."""
    x64 = s.double().requires_grad_()
    y64 = c.double().requires_grad_()
    expected = REFERENCE[variant](x64, y64, tau)
    expected_grads = torch.autograd.grad(expected, (x64, y64))
    for algorithm in algorithms:
        x = s.to(device).requires_grad_()
        y = c.to(device).requires_grad_(semantic_grad)
        loss = vsl_ext.vsl_loss(x, y, tau, variant, algorithm=algorithm)
        torch.testing.assert_close(loss.double().cpu(), expected.detach(), rtol=1e-5, atol=1e-6)
        inputs = (x, y) if semantic_grad else (x,)
        for g, e in zip(torch.autograd.grad(loss, inputs), expected_grads):
            assert g.dtype == s.dtype
            assert_close_grad(g.cpu(), e)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", ["row", "public-code"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_matches_reference(n, kind, variant, dtype):
    s, c = _pair(kind, n, dtype)
    _check(s, c, variant, ("dense", "sorted"))


@pytest.mark.parametrize("variant", ["row", "public-code"])
def test_asymmetric_semantic_matrix_and_no_semantic_grad(variant):
    s = make_input("random", (23, 23), torch.float64, seed=5)
    c = make_input("random", (23, 23), torch.float64, seed=6)
    _check(s, c, variant, semantic_grad=False)
    _check(s, c, variant, semantic_grad=True)


def _published_formula_loss(S, C, tau):
    """Verbatim transcription of the published ranking, one scalar at a time."""
    n = len(S)

    def sig(x):
        e = min(max(-x / tau, -50.0), 50.0)
        return 1.0 / (1.0 + math.exp(e))

    def rank(M):
        return [[1.0 + sum(sig(M[a][b] - M[b][c]) for a in range(n) if a != c) for c in range(n)] for b in range(n)]

    SR, CR = rank(S), rank(C)
    total = sum(min(SR[b][c], CR[b][c]) / max(SR[b][c], CR[b][c]) for b in range(n) for c in range(n))
    return 1.0 - total / (n * n)


@pytest.mark.parametrize("n", [1, 2, 3, 6])
@pytest.mark.parametrize("kind", ["random", "tied", "adversarial"])
def test_public_code_reference_is_the_published_formula(n, kind):
    s, c = _pair(kind, n, torch.float64, seed=n)
    c = make_input("random", (n, n), torch.float64, seed=n + 7)  # asymmetric C checks the column convention
    expected = _published_formula_loss(s.tolist(), c.tolist(), 1e-3)
    assert reference.public_code_vsl_loss(s, c, 1e-3).item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert vsl_ext.vsl_loss(s, c, variant="public-code").item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_variants_differ_on_asymmetric_sims():
    s = make_input("random", (8, 8), torch.float64, seed=2)
    c = make_input("tied", (8, 8), torch.float64, seed=3)
    assert vsl_ext.vsl_loss(s, c).item() != pytest.approx(vsl_ext.vsl_loss(s, c, variant="public-code").item())


@pytest.mark.parametrize("variant", ["row", "public-code"])
@pytest.mark.parametrize("algorithm", ["dense", "sorted"])
def test_gradcheck_float64(variant, algorithm):
    s = make_input("random", (7, 7), torch.float64, seed=11) * 10
    c = make_input("random", (7, 7), torch.float64, seed=12) * 10
    f = lambda a, b: vsl_ext.vsl_loss(a, b, 0.05, variant, algorithm=algorithm)
    assert torch.autograd.gradcheck(f, (s.requires_grad_(), c.requires_grad_()))


def test_identical_rankings_give_zero_loss_and_n1_gives_zero():
    s = make_input("random", (10, 10), torch.float32)
    assert vsl_ext.vsl_loss(s, s).item() == 0.0
    assert vsl_ext.vsl_loss(torch.tensor([[0.3]]), torch.tensor([[0.9]])).item() == 0.0


def test_reversed_rankings_give_large_loss():
    s = torch.arange(6.0).repeat(6, 1)
    loss = vsl_ext.vsl_loss(s, -s).item()
    assert loss == pytest.approx(reference.vsl_loss(s, -s).item(), rel=1e-6)
    assert loss > 0.4


def test_nan_in_sims_gives_nan_loss():
    s = make_input("random", (5, 5), torch.float32)
    s[2, 3] = float("nan")
    assert math.isnan(vsl_ext.vsl_loss(s, torch.rand(5, 5)).item())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_return_half_gradients(dtype):
    s = make_input("random", (12, 12), torch.float32).to(dtype).requires_grad_()
    c = make_input("tied", (12, 12), torch.float32)
    loss = vsl_ext.vsl_loss(s, c)
    assert loss.dtype == torch.float32
    expected = reference.vsl_loss(s.detach().double(), c.double())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert s.grad.dtype == dtype


def test_opcheck_every_op():
    s = make_input("random", (9, 9), torch.float64).requires_grad_()
    c = make_input("tied", (9, 9), torch.float64).requires_grad_()
    g = torch.randn(9, 9, dtype=torch.float64)
    for args in [(s, 1e-3, True, 0), (s, 0.01, False, 2)]:
        torch.library.opcheck(_sigmoid_rank, args)
    for args in [(s.detach(), g, 1e-3, True, False, 0.0, 0), (s.detach(), g, 1e-3, True, True, 50.0, 2)]:
        torch.library.opcheck(_sigmoid_rank_backward, args)
    for args in [(s, c, 1e-3, False, True, 0), (s, c.detach(), 1e-3, True, False, 2)]:
        torch.library.opcheck(_vsl_ratio_sum, args)


def test_torch_compile_fullgraph():
    torch._dynamo.reset()

    @torch.compile(fullgraph=True, backend="aot_eager")
    def step(img, txt, sem):
        sims = img @ txt.t()
        return vsl_ext.vsl_loss(sims, sem) + vsl_ext.sigmoid_rank(sims).mean() * 0

    img = torch.randn(16, 8, requires_grad=True)
    txt = torch.randn(16, 8)
    sem = make_input("tied", (16, 16), torch.float32)
    loss = step(img, txt, sem)
    loss.backward()
    img2 = img.detach().clone().requires_grad_()
    eager = vsl_ext.vsl_loss(img2 @ txt.t(), sem)
    eager.backward()
    torch.testing.assert_close(loss, eager)
    torch.testing.assert_close(img.grad, img2.grad)


BAD_INPUTS = [
    (lambda: vsl_ext.vsl_loss(torch.rand(3), torch.rand(3)), ValueError, "sims must be a 2-D"),
    (lambda: vsl_ext.vsl_loss(torch.rand(2, 3, 3), torch.rand(3, 3)), ValueError, "sims must be a 2-D"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 4), torch.rand(3, 4)), ValueError, r"sims must be a square \(n, n\)"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 3), torch.rand(4, 4)), ValueError, r"semantic_sims must have the shape"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 3), torch.rand(3, 3), tau=0.0), ValueError, "tau must be a finite number > 0"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 3), torch.rand(3, 3), tau=-1), ValueError, "tau"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 3), torch.rand(3, 3), tau=float("nan")), ValueError, "tau"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 3), torch.rand(3, 3), tau="0.1"), TypeError, "tau must be a real number"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 3), torch.rand(3, 3), tau=5e-324), ValueError,
     r"tau = 5e-324 is too small for float32 computation: 1 / tau overflows float32"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 3).double(), torch.rand(3, 3).double(), tau=5e-324), ValueError,
     r"tau = 5e-324 is too small for float64 computation: 1 / tau overflows float64"),
    (lambda: vsl_ext.sigmoid_rank(torch.rand(3, 3).half(), tau=1e-39), ValueError, r"tau = 1e-39 .* overflows float32"),
    (lambda: vsl_ext.vsl_loss(torch.ones(3, 3, dtype=torch.int64), torch.rand(3, 3)), TypeError, "sims must be a floating-point"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 3), torch.ones(3, 3, dtype=torch.int32)), TypeError, "semantic_sims must be a floating-point"),
    (lambda: vsl_ext.vsl_loss(torch.rand(0, 0), torch.rand(0, 0)), ValueError, "sims must be non-empty"),
    (lambda: vsl_ext.vsl_loss([[1.0]], torch.rand(1, 1)), TypeError, "sims must be a torch.Tensor"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 3), torch.rand(3, 3), variant="rows"), ValueError, "variant must be one of"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 3), torch.rand(3, 3), algorithm="fast"), ValueError, "algorithm must be one of"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 3), torch.rand(3, 3, device="meta")), ValueError, "semantic_sims is on meta"),
    (lambda: vsl_ext.sigmoid_rank(torch.rand(4)), ValueError, "M must be a 2-D"),
    (lambda: vsl_ext.sigmoid_rank(torch.rand(2, 2), descending="yes"), TypeError, "descending must be a bool"),
    (lambda: vsl_ext.sigmoid_rank(torch.rand(0, 3)), ValueError, "M must be non-empty"),
]


@pytest.mark.parametrize("call,error,message", BAD_INPUTS, ids=[b[2] for b in BAD_INPUTS])
def test_bad_input_names_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()


@requires_cuda
@pytest.mark.parametrize("n", [1, 3, 17, 300, 1100])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", ["row", "public-code"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_cuda_matches_reference(n, kind, variant, dtype):
    if n > 300 and dtype == torch.float64:
        pytest.skip("the float64 reference at n > 300 is slow")
    s, c = _pair(kind, n, dtype)
    _check(s, c, variant, ("dense", "sorted", "auto"), device="cuda")


@requires_cuda
def test_cuda_matches_cpu_at_large_n():
    s, c = _pair("random", 2500, torch.float32)
    for variant, algorithm in itertools.product(("row", "public-code"), ("dense", "sorted")):
        xs = [s.clone().requires_grad_(), s.cuda().requires_grad_()]
        losses = [vsl_ext.vsl_loss(x, c.to(x.device), variant=variant, algorithm=algorithm) for x in xs]
        torch.testing.assert_close(losses[1].cpu(), losses[0], rtol=1e-5, atol=1e-6)
        grads = [torch.autograd.grad(l, x)[0].cpu() for l, x in zip(losses, xs)]
        assert_close_grad(grads[1], grads[0])


@requires_cuda
def test_cuda_mixed_devices_error():
    with pytest.raises(ValueError, match="semantic_sims is on cpu but sims is on cuda"):
        vsl_ext.vsl_loss(torch.rand(3, 3, device="cuda"), torch.rand(3, 3))
