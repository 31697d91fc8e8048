"""vsl_loss vs the reference (both variants) on every device, the published formula, autograd, and the
public function's argument errors. (The registered op's own checks, opcheck, torch.compile and
torch.export: test_op_checks.py.)"""
import itertools
import math

import pytest
import torch

import vsl_ext
from helpers import (
    DEVICES,
    DTYPE_IDS,
    DTYPES,
    KINDS,
    assert_close_grad,
    check_loss,
    device_cases,
    make_input,
    make_pair,
    ops_making,
    requires_cuda,
)
from vsl_ext import reference

SIZES = [1, 2, 3, 17, 128, 300]
EMULATED_SIZES = [1, 2, 3, 17, 64]  # the emulator runs every CUDA thread on the CPU
CUDA_SIZES = [1, 3, 17, 300, 1100]
ALGORITHMS = {"cpu": ("dense", "sorted"), "cuda": ("dense", "sorted", "auto"),
              "cuda-emulated": ("dense", "sorted")}


@pytest.mark.parametrize("device, n", device_cases(SIZES, emulated=EMULATED_SIZES, cuda=CUDA_SIZES),
                         indirect=["device"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", ["row", "public-code"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_matches_reference(request, device, n, kind, variant, dtype):
    if n > 300 and dtype == torch.float64:
        pytest.skip("the float64 reference at n > 300 is slow")
    s, c = make_pair(kind, n, dtype)
    check_loss(s, c, variant, ALGORITHMS[request.node.callspec.params["device"]], device)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("variant", ["row", "public-code"])
def test_asymmetric_semantic_matrix_and_no_semantic_grad(device, variant):
    s = make_input("random", (23, 23), torch.float64, seed=5)
    c = make_input("random", (23, 23), torch.float64, seed=6)
    check_loss(s, c, variant, device=device, semantic_grad=False)
    check_loss(s, c, variant, device=device, semantic_grad=True)


def _public_code_loss_by_hand(S, C, tau):
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


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("n", [1, 2, 3, 6])
@pytest.mark.parametrize("kind", ["random", "tied", "adversarial"])
def test_public_code_reference_is_the_published_formula(device, n, kind):
    s, c = make_pair(kind, n, torch.float64, seed=n)
    c = make_input("random", (n, n), torch.float64, seed=n + 7)  # asymmetric C checks the column convention
    expected = _public_code_loss_by_hand(s.tolist(), c.tolist(), 1e-3)
    assert reference.public_code_vsl_loss(s, c, 1e-3).item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    for algorithm in ("dense", "sorted"):
        loss = vsl_ext.vsl_loss(s.to(device), c.to(device), variant="public-code", algorithm=algorithm)
        assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_variants_differ_on_asymmetric_sims():
    s = make_input("random", (8, 8), torch.float64, seed=2)
    c = make_input("tied", (8, 8), torch.float64, seed=3)
    assert vsl_ext.vsl_loss(s, c).item() != pytest.approx(vsl_ext.vsl_loss(s, c, variant="public-code").item())


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("variant", ["row", "public-code"])
@pytest.mark.parametrize("algorithm", ["dense", "sorted"])
def test_gradcheck_float64(device, variant, algorithm):
    s = make_input("random", (7, 7), torch.float64, seed=11).to(device) * 10
    c = make_input("random", (7, 7), torch.float64, seed=12).to(device) * 10

    def loss(a, b):
        return vsl_ext.vsl_loss(a, b, 0.05, variant, algorithm=algorithm)

    assert torch.autograd.gradcheck(loss, (s.requires_grad_(), c.requires_grad_()))


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_identical_rankings_give_zero_loss_and_n1_gives_zero(device):
    s = make_input("random", (10, 10), torch.float32).to(device)
    assert vsl_ext.vsl_loss(s, s).item() == 0.0
    assert vsl_ext.vsl_loss(torch.tensor([[0.3]], device=device), torch.tensor([[0.9]], device=device)).item() == 0.0


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_reversed_rankings_give_large_loss(device):
    s = torch.arange(6.0).repeat(6, 1)
    loss = vsl_ext.vsl_loss(s.to(device), -s.to(device)).item()
    assert loss == pytest.approx(reference.vsl_loss(s, -s).item(), rel=1e-6)
    assert loss > 0.4


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_nan_in_sims_gives_nan_loss(device):
    s = make_input("random", (5, 5), torch.float32)
    s[2, 3] = float("nan")
    for algorithm in ("dense", "sorted", "auto"):
        assert math.isnan(vsl_ext.vsl_loss(s.to(device), torch.rand(5, 5, device=device), algorithm=algorithm).item())


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_return_half_gradients(device, dtype):
    s = make_input("random", (12, 12), torch.float32).to(dtype).to(device).requires_grad_()
    c = make_input("tied", (12, 12), torch.float32).to(device)
    loss = vsl_ext.vsl_loss(s, c)
    assert loss.dtype == torch.float32
    expected = reference.vsl_loss(s.detach().cpu().double(), c.cpu().double())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert s.grad.dtype == dtype


BAD_INPUTS = [
    (lambda: vsl_ext.vsl_loss(torch.rand(3), torch.rand(3)), ValueError, "sims must be a 2-D"),
    (lambda: vsl_ext.vsl_loss(torch.rand(2, 3, 3), torch.rand(3, 3)), ValueError, "sims must be a 2-D"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 4), torch.rand(3, 4), variant="public-code"), ValueError,
     r"sims must be a square \(n, n\) matrix for variant='public-code'"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 3), torch.rand(4, 4)), ValueError, r"semantic_sims must have the shape"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 3), torch.rand(3, 3), tau=0.0), ValueError,
     "tau must be a finite number > 0"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 3), torch.rand(3, 3), tau=-1), ValueError, "tau"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 3), torch.rand(3, 3), tau=float("nan")), ValueError, "tau"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 3), torch.rand(3, 3), tau="0.1"), TypeError, "tau must be a real number"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 3), torch.rand(3, 3), tau=5e-324), ValueError,
     r"tau = 5e-324 is too small for float32 computation: 1 / tau overflows float32"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 3).double(), torch.rand(3, 3).double(), tau=5e-324), ValueError,
     r"tau = 5e-324 is too small for float64 computation: 1 / tau overflows float64"),
    (lambda: vsl_ext.sigmoid_rank(torch.rand(3, 3).half(), tau=1e-39), ValueError, r"tau = 1e-39 .* overflows float32"),
    (lambda: vsl_ext.vsl_loss(torch.ones(3, 3, dtype=torch.int64), torch.rand(3, 3)), TypeError,
     "sims must be a floating-point"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 3), torch.ones(3, 3, dtype=torch.int32)), TypeError,
     "semantic_sims must be a floating-point"),
    (lambda: vsl_ext.vsl_loss(torch.rand(0, 0), torch.rand(0, 0)), ValueError, "sims must be non-empty"),
    (lambda: vsl_ext.vsl_loss([[1.0]], torch.rand(1, 1)), TypeError, "sims must be a torch.Tensor"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 3), torch.rand(3, 3), variant="rows"), ValueError,
     "variant must be one of"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 3), torch.rand(3, 3), algorithm="fast"), ValueError,
     "algorithm must be one of"),
    (lambda: vsl_ext.vsl_loss(torch.rand(3, 3), torch.rand(3, 3, device="meta")), ValueError,
     "semantic_sims is on meta"),
    (lambda: vsl_ext.sigmoid_rank(torch.rand(4)), ValueError, "M must be a 2-D"),
    (lambda: vsl_ext.sigmoid_rank(torch.rand(2, 2), descending="yes"), TypeError, "descending must be a bool"),
    (lambda: vsl_ext.sigmoid_rank(torch.rand(0, 3)), ValueError, "M must be non-empty"),
]


@pytest.mark.parametrize("call,error,message", BAD_INPUTS, ids=[b[2] for b in BAD_INPUTS])
def test_bad_input_names_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()


@requires_cuda
def test_cuda_matches_cpu_at_large_n():
    s, c = make_pair("random", 2500, torch.float32)
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


class _NoOpFunctionMode(torch.overrides.TorchFunctionMode):
    """Any active torch function mode makes vsl_loss take the registered op instead of its eager path."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("variant", ["row", "public-code"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("semantic_grad", [False, True])
def test_eager_path_and_registered_op_agree(variant, dtype, semantic_grad):
    s = make_input("random", (16, 16), dtype, seed=4)
    c = make_input("tied", (16, 16), dtype, seed=5)

    def run():
        x, y = s.clone().requires_grad_(), c.clone().requires_grad_(semantic_grad)
        loss = vsl_ext.vsl_loss(x, y, variant=variant)
        loss.backward()
        return loss.detach(), x.grad, y.grad

    from vsl_ext.ops import _eager

    assert _eager.plain(s, c)
    eager = run()
    with _NoOpFunctionMode():
        assert not _eager.plain(s, c)
        op = run()
    tol = dict(rtol=1e-6, atol=1e-9) if dtype == torch.float32 else dict(rtol=1e-13, atol=1e-16)
    torch.testing.assert_close(eager[0], op[0], **tol)
    torch.testing.assert_close(eager[1], op[1], **tol)
    if semantic_grad:
        torch.testing.assert_close(eager[2], op[2], **tol)
    else:
        assert eager[2] is None and op[2] is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backward_scaling_on_the_pool_is_torchs_product_bit_for_bit(dtype):
    """The eager CPU backward scales dL/dS on the package's pool (kernels.cpu.scale) instead of a torch
    product; it must give the product's bits: the factor rounded to the dtype, one multiply each,
    any thread count (3 x 2^18 elements: blocks on 2 threads), inf and NaN propagated."""
    from vsl_ext.kernels import cpu

    g = torch.Generator().manual_seed(0)
    t = torch.randn(3 << 18, generator=g, dtype=dtype) * 1e3
    t[:4] = torch.tensor([math.inf, -math.inf, math.nan, 0.0], dtype=dtype)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for factor in (-1.0 / 9, 0.37, 3.0e-7):
                want = t * torch.tensor(factor, dtype=torch.float32).to(dtype)
                got = cpu.scale(t, float(torch.tensor(factor, dtype=torch.float32).to(dtype)))
                assert torch.equal(got.view(torch.int64 if dtype == torch.float64 else torch.int32)[3:],
                                   want.view(torch.int64 if dtype == torch.float64 else torch.int32)[3:])
                assert got[:3].isnan().tolist() == [False, False, True] and got[0] == want[0]
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("variant", ["row", "public-code"])
def test_registered_ops_backward_makes_no_zeros_for_the_gradient_outputs(variant):
    """The ratio-sum op's gradient outputs take no gradient: its backward gets None for them, not two
    (n, n) tensors of zeros. (A dispatch mode makes vsl_loss take the registered op.)"""
    s = make_input("random", (6, 6), torch.float64, seed=1).requires_grad_()
    c = make_input("tied", (6, 6), torch.float64, seed=2).requires_grad_()
    ops = ops_making((6, 6), lambda: torch.autograd.grad(vsl_ext.vsl_loss(s, c, variant=variant), (s, c)))
    assert not [op for op in ops if "zeros" in op], ops
