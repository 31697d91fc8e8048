"""The registered ops check their own inputs (issue 12, item 1).

``torch.ops.vsl_ext.*`` are public: torch.compile graphs, torch.export and other libraries call them
without vsl_ext's public functions, and their native kernels trust raw pointers. Every op must
reject a wrong dtype, device, rank, shape or scalar with an error naming the argument, before any
native call (in its fake kernel too, for fake tensors), and compute right on any layout. Also
here: torch.library.opcheck of every op, torch.compile(fullgraph=True) and torch.export of the
public functions, and the private native entry points' documentation.
"""
import math
import subprocess
import sys
import textwrap

import pytest
import torch

import vsl_ext
from helpers import DEVICES, assert_close_grad, make_input, requires_cuda
from vsl_ext import reference
from vsl_ext._native import _C
from vsl_ext.ops.sigmoid_rank import sigmoid_rank_backward_op, sigmoid_rank_op
from vsl_ext.ops.vsl_loss import vsl_loss_ratio_sum_op

OPS = torch.ops.vsl_ext
DENSE, SORTED, AUTO = (_C.ALGORITHMS[k] for k in ("dense", "sorted", "auto"))


def T(tau: float) -> torch.Tensor:
    """tau as the registered ops take it: a 0-d float64 CPU tensor."""
    return torch.tensor(tau, dtype=torch.float64)


TAU = T(1e-3)


def _m(*shape, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(dtype).to(device)


# Each op called directly with one bad tensor argument: (call given a bad tensor, the argument's name).
def _rank(t):
    return OPS.sigmoid_rank(t, TAU, True, AUTO)


def _backward_m(t):
    return OPS.sigmoid_rank_backward(t, _m(4, 4), TAU, True, False, AUTO)


def _backward_grad(t):
    return OPS.sigmoid_rank_backward(_m(4, 4), t, TAU, True, False, AUTO)


def _ratio_sims(t):
    return OPS.vsl_loss_ratio_sum(t, _m(4, 4), TAU, False, True, AUTO)


def _ratio_semantic(t):
    return OPS.vsl_loss_ratio_sum(_m(4, 4), t, TAU, False, True, AUTO)


CALLS = {"sigmoid_rank(m)": (_rank, "m"), "sigmoid_rank_backward(m)": (_backward_m, "m"),
         "sigmoid_rank_backward(grad)": (_backward_grad, "grad"), "vsl_loss_ratio_sum(sims)": (_ratio_sims, "sims"),
         "vsl_loss_ratio_sum(semantic)": (_ratio_semantic, "semantic")}

BAD_DTYPES = {
    "float16": _m(4, 4, dtype=torch.float16), "bfloat16": _m(4, 4, dtype=torch.bfloat16),
    "int64": torch.ones(4, 4, dtype=torch.int64), "bool": torch.ones(4, 4, dtype=torch.bool),
    "complex64": torch.ones(4, 4, dtype=torch.complex64),
}
BAD_RANKS = {"0-dim": torch.tensor(1.0), "1-D": _m(4)}  # (..., rows, cols) batches are valid


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("bad", sorted(BAD_DTYPES))
def test_wrong_dtype_is_rejected(call, bad):
    fn, name = CALLS[call]
    with pytest.raises(TypeError, match=rf"{name} must be float32 or float64, got torch\.{bad}"):
        fn(BAD_DTYPES[bad])


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("bad", sorted(BAD_RANKS))
def test_wrong_rank_is_rejected(call, bad):
    fn, name = CALLS[call]
    with pytest.raises(ValueError, match=rf"{name} must be a 2-D \(rows, cols\) matrix or a \(\.\.\., rows, cols\) "
                                         rf"batch of them, got {bad[0]}-D"):
        fn(BAD_RANKS[bad])


@pytest.mark.parametrize("call", ["sigmoid_rank_backward(grad)", "vsl_loss_ratio_sum(semantic)"])
def test_mismatched_second_matrix_is_rejected(call):
    fn, name = CALLS[call]
    first = "m" if name == "grad" else "sims"
    for shape in ((3, 2), (4, 5), (5, 4), (2, 8)):
        with pytest.raises(ValueError, match=rf"{name} must have the shape of {first} \(4, 4\), got \({shape[0]}, "):
            fn(_m(*shape))
    with pytest.raises(TypeError, match=rf"{name} must have the dtype of {first} \(torch.float32\), got torch.float64"):
        fn(_m(4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=rf"{name} is on meta but {first} is on cpu"):
        fn(_m(4, 4, device="meta"))


def test_the_issues_mismatched_shapes_are_rejected():
    """S 6x6 with C 3x2, and a gradient of the wrong shape: both read past C before."""
    s, c = _m(6, 6), _m(3, 2)
    with pytest.raises(ValueError, match=r"semantic must have the shape of sims \(6, 6\), got \(3, 2\)"):
        OPS.vsl_loss_ratio_sum(s, c, TAU, True, True, DENSE)
    with pytest.raises(ValueError, match=r"grad must have the shape of m \(6, 6\), got \(3, 2\)"):
        OPS.sigmoid_rank_backward(s, c, TAU, True, True, DENSE)


def test_first_argument_on_meta_and_second_on_cpu_is_rejected():
    with pytest.raises(ValueError, match="semantic is on cpu but sims is on meta"):
        OPS.vsl_loss_ratio_sum(_m(4, 4, device="meta"), _m(4, 4), TAU, False, True, AUTO)
    with pytest.raises(ValueError, match="grad is on cpu but m is on meta"):
        OPS.sigmoid_rank_backward(_m(4, 4, device="meta"), _m(4, 4), TAU, True, False, AUTO)


@requires_cuda
def test_cpu_and_cuda_in_one_call_is_rejected():
    with pytest.raises(ValueError, match="semantic is on cpu but sims is on cuda"):
        OPS.vsl_loss_ratio_sum(_m(4, 4, device="cuda"), _m(4, 4), TAU, False, True, AUTO)
    with pytest.raises(ValueError, match="grad is on cuda:0 but m is on cpu"):
        OPS.sigmoid_rank_backward(_m(4, 4), _m(4, 4, device="cuda"), TAU, True, False, AUTO)


def test_public_code_needs_square_matrices():
    with pytest.raises(ValueError, match=r"sims must be a square \(n, n\) matrix for the public-code variant"):
        OPS.vsl_loss_ratio_sum(_m(3, 5), _m(3, 5), TAU, True, True, AUTO)
    with pytest.raises(ValueError, match=r"m must be a square \(n, n\) matrix for the public-code variant"):
        OPS.sigmoid_rank_backward(_m(3, 5), _m(3, 5), TAU, True, True, AUTO)
    OPS.vsl_loss_ratio_sum(_m(3, 5), _m(3, 5), TAU, False, True, AUTO)  # the row variant takes row blocks


BAD_TAUS = [(0.0, "tau must be a finite number > 0"), (-1.0, "tau must be a finite number > 0"),
            (math.nan, "tau must be a finite number > 0"), (math.inf, "tau must be a finite number > 0"),
            (1e-39, r"1 / tau overflows float32"), (1e39, "overflows float32, the computation dtype")]


@pytest.mark.parametrize("tau, message", BAD_TAUS, ids=[str(t) for t, _ in BAD_TAUS])
def test_bad_tau_is_rejected(tau, message):
    m = _m(4, 4)
    for call in (lambda: OPS.sigmoid_rank(m, T(tau), True, AUTO),
                 lambda: OPS.sigmoid_rank_backward(m, m, T(tau), True, False, AUTO),
                 lambda: OPS.vsl_loss_ratio_sum(m, m, T(tau), False, True, AUTO)):
        with pytest.raises(ValueError, match=message):
            call()
    # tau = 1e-39 is fine in float64
    OPS.sigmoid_rank(m.double(), T(1e-39), True, AUTO)


BAD_TAU_TENSORS = [(None, TypeError, "tau must be a 0-d float64 CPU tensor, got NoneType"),
                   (T(1e-3).float(), TypeError, "tau must be a 0-d float64 CPU tensor, got torch.float32"),
                   (T(1e-3).view(1), ValueError, r"tau must be a 0-d float64 CPU tensor, got 1-D shape \(1,\)")]


@pytest.mark.parametrize("tau, error, message", BAD_TAU_TENSORS, ids=["None", "float32", "1-D"])
def test_bad_tau_tensor_is_rejected(tau, error, message):
    """tau is a 0-d float64 CPU tensor: data a compiled graph carries, read on the host."""
    m = _m(4, 4)
    for call in (lambda: OPS.sigmoid_rank(m, tau, True, AUTO),
                 lambda: OPS.sigmoid_rank_backward(m, m, tau, True, False, AUTO),
                 lambda: OPS.vsl_loss_ratio_sum(m, m, tau, False, True, AUTO)):
        with pytest.raises(error, match=message):
            call()
    with pytest.raises(RuntimeError, match="Expected a value of type 'Tensor' for argument 'tau'"):
        OPS.sigmoid_rank(m, 1e-3, True, AUTO)  # the schema takes no float


@requires_cuda
def test_cuda_tau_is_rejected():
    m = _m(4, 4, device="cuda")
    with pytest.raises(ValueError, match="tau must be a 0-d float64 CPU tensor, got one on cuda"):
        OPS.sigmoid_rank(m, TAU.cuda(), True, AUTO)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_a_batch_of_matrices_is_each_matrix(device):
    """(..., r, c) inputs are a batch (torch.func.vmap's batching rules use it): each matrix's ranks,
    gradients and ratio sum, public-code transposes per matrix."""
    batch = make_input("random", (2 * 3 * 5, 5), torch.float64).view(2, 3, 5, 5).to(device)
    sem = make_input("tied", (2 * 3 * 5, 5), torch.float64, seed=1).view(2, 3, 5, 5).to(device)
    grad = make_input("random", (2 * 3 * 5, 5), torch.float64, seed=2).view(2, 3, 5, 5).to(device)
    ranks = OPS.sigmoid_rank(batch, TAU, False, AUTO)
    for public_code in (False, True):
        back = OPS.sigmoid_rank_backward(batch, grad, TAU, True, public_code, DENSE)
        total, grad_s, grad_c = OPS.vsl_loss_ratio_sum(batch, sem, TAU, public_code, True, DENSE)
        assert total.shape == (2, 3) and grad_s.shape == grad_c.shape == (2, 3, 5, 5)
        for i in range(2):
            for j in range(3):
                m, c, g = batch[i, j].cpu(), sem[i, j].cpu(), grad[i, j].cpu()
                assert_close_grad(ranks[i, j].cpu(), reference.sigmoid_rank(m, 1e-3, False))
                one = OPS.sigmoid_rank_backward(m, g, TAU, True, public_code, DENSE)
                torch.testing.assert_close(back[i, j].cpu(), one, rtol=1e-12, atol=1e-12)
                loss = (reference.public_code_vsl_loss if public_code else reference.vsl_loss)(m, c)
                assert 1 - total[i, j].item() / 25 == pytest.approx(loss.item(), rel=1e-12, abs=1e-12)
                mr, cr = m.clone().requires_grad_(), c.clone().requires_grad_()
                want = torch.autograd.grad((reference.public_code_vsl_loss if public_code else reference.vsl_loss)(
                    mr, cr), (mr, cr))
                assert_close_grad(grad_s[i, j].cpu() / -25, want[0])
                assert_close_grad(grad_c[i, j].cpu() / -25, want[1])


@pytest.mark.parametrize("algorithm", [-1, 3, 100])
def test_unknown_algorithm_code_is_rejected(algorithm):
    m = _m(4, 4)
    for call in (lambda: OPS.sigmoid_rank(m, TAU, True, algorithm),
                 lambda: OPS.sigmoid_rank_backward(m, m, TAU, True, False, algorithm),
                 lambda: OPS.vsl_loss_ratio_sum(m, m, TAU, False, True, algorithm)):
        with pytest.raises(ValueError, match=r"algorithm must be one of the codes \{'auto': 0"):
            call()


@pytest.mark.parametrize("bad", ["float16", "bfloat16", "int64"])
def test_fake_kernels_check_the_same(bad):
    """Meta tensors reach the fake kernels, whose torch._check raises what the real kernels raise."""
    t = BAD_DTYPES[bad].to("meta")
    with pytest.raises(TypeError, match=rf"m must be float32 or float64, got torch\.{bad}"):
        OPS.sigmoid_rank(t, TAU, True, AUTO)
    with pytest.raises(ValueError, match="m must be a 2-D"):
        OPS.sigmoid_rank(_m(4, device="meta"), TAU, True, AUTO)
    with pytest.raises(ValueError, match=r"semantic must have the shape of sims \(6, 6\), got \(3, 2\)"):
        OPS.vsl_loss_ratio_sum(_m(6, 6, device="meta"), _m(3, 2, device="meta"), TAU, True, True, AUTO)
    # fake kernels see no values: they check what tau is (a 0-d float64 CPU tensor), the real ones its value
    with pytest.raises(TypeError, match="tau must be a 0-d float64 CPU tensor, got torch.float32"):
        OPS.sigmoid_rank_backward(_m(4, 4, device="meta"), _m(4, 4, device="meta"), TAU.float(), True, False, AUTO)
    with pytest.raises(ValueError, match=r"tau must be a 0-d float64 CPU tensor, got 1-D shape \(1,\)"):
        OPS.vsl_loss_ratio_sum(_m(4, 4, device="meta"), _m(4, 4, device="meta"), TAU.view(1), False, True, AUTO)
    out = OPS.sigmoid_rank(_m(3, 5, device="meta"), TAU, True, AUTO)
    assert out.device.type == "meta" and out.shape == (3, 5) and out.is_contiguous()


def test_fake_tensor_mode_raises_too():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        fake = torch.empty(4, 4, dtype=torch.float16)
        tau = torch.empty((), dtype=torch.float64)
        with pytest.raises(TypeError, match="m must be float32 or float64"):
            OPS.sigmoid_rank(fake, tau, True, AUTO)
        s, c = torch.empty(6, 6), torch.empty(3, 2)
        with pytest.raises(ValueError, match="semantic must have the shape of sims"):
            OPS.vsl_loss_ratio_sum(s, c, tau, False, True, AUTO)


def test_the_issues_crashes_raise_in_a_fresh_process():
    """The issue's inputs, each in a process of its own: a check that fired too late could only abort
    the process ("double free or corruption"), so the test runs them where that shows as an exit
    code instead of ending pytest."""
    script = textwrap.dedent("""
        import sys, torch, vsl_ext
        ops = torch.ops.vsl_ext
        tau = torch.tensor(1e-3, dtype=torch.float64)
        m16 = torch.randn(4, 4, dtype=torch.float16)
        cases = {
            "float16": lambda: ops.sigmoid_rank(m16, tau, True, 0),
            "int64": lambda: ops.sigmoid_rank(torch.ones(4, 4, dtype=torch.int64), tau, True, 0),
            "backward float16": lambda: ops.sigmoid_rank_backward(m16, m16, tau, True, False, 0),
            "backward shapes": lambda: ops.sigmoid_rank_backward(torch.randn(6, 6), torch.randn(3, 2), tau, True,
                                                                 True, 0),
            "ratio shapes": lambda: ops.vsl_loss_ratio_sum(torch.randn(6, 6), torch.randn(3, 2), tau, True,
                                                           True, 0),
            "ratio float16": lambda: ops.vsl_loss_ratio_sum(m16, m16, tau, False, True, 0),
        }
        for name, call in cases.items():
            try:
                call()
            except (TypeError, ValueError) as exc:
                print(name, "->", type(exc).__name__)
            else:
                sys.exit(f"{name}: no error")
        print("all raised")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "all raised" in done.stdout and done.stdout.count("->") == 6


# -------------------------------------------------------------------------------------- layouts
def _layouts(base: torch.Tensor):
    """The same (rows, cols) values as a transposed view, a slice, and with expanded (stride-0) rows."""
    rows, cols = base.shape
    yield "transposed", base.t().contiguous().t()
    wide = torch.zeros(rows, 2 * cols, dtype=base.dtype, device=base.device)
    wide[:, ::2] = base
    yield "sliced", wide[:, ::2]
    yield "expanded", base[:1].expand(rows, cols)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_every_layout_gives_the_contiguous_result(device):
    """The issue's transposed 9x6 view returned ranks off by up to 4: every view must give the
    values of its contiguous copy and of the formula."""
    base = _m(9, 6, dtype=torch.float64, device=device) * 3e-3
    grad = _m(9, 6, dtype=torch.float64, device=device)
    for layout, view in _layouts(base):
        want = reference.sigmoid_rank(view.contiguous().cpu())
        for algorithm in (DENSE, SORTED, AUTO):
            got = OPS.sigmoid_rank(view, TAU, True, algorithm)
            assert got.is_contiguous()
            torch.testing.assert_close(got.cpu(), want, rtol=1e-10, atol=0, msg=layout)
            g_view = OPS.sigmoid_rank_backward(view, grad.t().contiguous().t(), TAU, True, False, algorithm)
            g_contiguous = OPS.sigmoid_rank_backward(view.contiguous(), grad, TAU, True, False, algorithm)
            torch.testing.assert_close(g_view, g_contiguous, msg=layout)
    square = _m(6, 6, dtype=torch.float64, device=device) * 3e-3
    sem = _m(6, 6, dtype=torch.float64, device=device)
    for layout, view in _layouts(square):
        for public_code in (False, True):
            got = OPS.vsl_loss_ratio_sum(view, sem.t(), TAU, public_code, True, DENSE)
            g_view = OPS.sigmoid_rank_backward(view, sem.t(), TAU, True, public_code, DENSE)
            g_contiguous = OPS.sigmoid_rank_backward(view.contiguous(), sem.t().contiguous(), TAU, True,
                                                     public_code, DENSE)
            torch.testing.assert_close(g_view, g_contiguous, msg=layout)
            want = OPS.vsl_loss_ratio_sum(view.contiguous(), sem.t().contiguous(), TAU, public_code, True, DENSE)
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, msg=layout)
            loss_ref = (reference.public_code_vsl_loss if public_code else reference.vsl_loss)(
                view.contiguous().cpu(), sem.t().contiguous().cpu())
            assert 1 - got[0].item() / 36 == pytest.approx(loss_ref.item(), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_empty_matrices_make_no_native_call(device):
    for shape in ((0, 5), (5, 0), (0, 0)):
        m = torch.empty(shape, device=device)
        assert OPS.sigmoid_rank(m, TAU, True, AUTO).shape == shape
        assert OPS.sigmoid_rank_backward(m, m, TAU, True, False, AUTO).shape == shape
        total, grad_sr, grad_cr = OPS.vsl_loss_ratio_sum(m, m, TAU, False, True, AUTO)
        assert total.item() == 0.0 and total.dtype == torch.float64
        assert grad_sr.shape == shape and grad_cr.shape == shape
    m = torch.empty(0, 0, device=device)
    assert OPS.vsl_loss_ratio_sum(m, m, TAU, True, False, AUTO)[0].item() == 0.0


# ------------------------------------------------------------------------------ opcheck, compile
@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_opcheck_every_op(device, dtype, grad):
    s = make_input("random", (9, 9), dtype).to(device).requires_grad_(grad)
    c = make_input("tied", (9, 9), dtype).to(device).requires_grad_(grad)
    g = torch.randn(9, 9, dtype=dtype).to(device)
    wide = make_input("random", (4, 11), dtype).to(device).requires_grad_(grad)
    for args in [(s, TAU, True, AUTO), (s, T(0.01), False, SORTED), (wide, TAU, True, DENSE),
                 (s.detach().t().requires_grad_(grad), TAU, True, DENSE)]:
        torch.library.opcheck(sigmoid_rank_op, args)
    for args in [(s.detach(), g, TAU, True, False, AUTO), (s.detach(), g, TAU, True, True, SORTED),
                 (wide.detach(), g[:4, :].repeat(1, 2)[:, :11], T(0.01), False, False, DENSE)]:
        torch.library.opcheck(sigmoid_rank_backward_op, args)
    for args in [(s, c, TAU, False, True, AUTO), (s, c.detach(), TAU, True, False, SORTED),
                 (wide, wide.detach() * 2, TAU, False, grad, DENSE)]:
        torch.library.opcheck(vsl_loss_ratio_sum_op, args)


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


def test_torch_compile_of_each_public_op():
    torch._dynamo.reset()
    m = make_input("random", (7, 5), torch.float32)
    s, c = make_input("random", (6, 6), torch.float32), make_input("tied", (6, 6), torch.float32)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def ranks(x):
        return vsl_ext.sigmoid_rank(x, 1e-3, False, algorithm="sorted")

    @torch.compile(fullgraph=True, backend="aot_eager")
    def loss(a, b):
        return vsl_ext.vsl_loss(a, b, 1e-3, "public-code")

    torch.testing.assert_close(ranks(m), vsl_ext.sigmoid_rank(m, 1e-3, False, algorithm="sorted"))
    torch.testing.assert_close(loss(s, c), vsl_ext.vsl_loss(s, c, TAU, "public-code"))
    torch.testing.assert_close(loss(s.t(), c), vsl_ext.vsl_loss(s.t().contiguous(), c, 1e-3, "public-code"))


def test_torch_compile_rejects_what_the_op_rejects():
    """Inside a compiled graph the fake kernel meets the bad input first and raises its error."""
    torch._dynamo.reset()

    @torch.compile(fullgraph=True, backend="aot_eager")
    def direct(x):
        return OPS.sigmoid_rank(x * 2, TAU, True, AUTO)

    with pytest.raises(Exception, match="m must be float32 or float64, got torch.float16"):
        direct(torch.randn(4, 4, dtype=torch.float16))
    assert direct(torch.randn(4, 4)).shape == (4, 4)


class _Loss(torch.nn.Module):
    def forward(self, sims, semantic):
        return vsl_ext.vsl_loss(sims, semantic) + vsl_ext.sigmoid_rank(sims).mean()


def test_torch_export_of_the_public_ops():
    s, c = make_input("random", (8, 8), torch.float32), make_input("tied", (8, 8), torch.float32)
    exported = torch.export.export(_Loss(), (s, c))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert "vsl_ext.sigmoid_rank.default" in targets and "vsl_ext.vsl_loss_ratio_sum.default" in targets
    s2, c2 = make_input("wide", (8, 8), torch.float32, seed=3), make_input("tied", (8, 8), torch.float32, seed=4)
    torch.testing.assert_close(exported.module()(s2, c2), _Loss()(s2, c2))


def test_torch_export_rejects_what_the_op_rejects():
    class Direct(torch.nn.Module):
        def forward(self, sims, semantic):
            return OPS.vsl_loss_ratio_sum(sims, semantic, TAU, True, False, AUTO)[0]

    with pytest.raises(Exception, match=r"semantic must have the shape of sims \(6, 6\), got \(3, 2\)"):
        torch.export.export(Direct(), (torch.randn(6, 6), torch.randn(3, 2)))
    with pytest.raises(Exception, match="sims must be float32 or float64, got torch.float16"):
        torch.export.export(Direct(), (torch.randn(6, 6).half(), torch.randn(6, 6).half()))


def test_gradients_through_the_registered_ops_match_the_reference():
    """The ops' autograd on a view (expanded rows, transposed semantic matrix)."""
    s = (make_input("random", (1, 6), torch.float64).expand(6, 6) + make_input("random", (6, 6), torch.float64))
    s = s.requires_grad_()
    c = make_input("tied", (6, 6), torch.float64).t().requires_grad_()
    total, _, _ = OPS.vsl_loss_ratio_sum(s, c, TAU, False, True, DENSE)
    grads = torch.autograd.grad(1 - total / 36, (s, c))
    want = torch.autograd.grad(reference.vsl_loss(s, c), (s, c))
    for g, w in zip(grads, want):
        assert_close_grad(g, w)


# ----------------------------------------------------------------------------- the native module
def test_native_kernel_functions_are_documented_private():
    assert "PRIVATE" in _C.__doc__
    kernels = [name for name in dir(_C) if name.startswith(("sigmoid_rank_", "vsl_loss_"))]
    assert {"sigmoid_rank_forward_cpu", "sigmoid_rank_backward_cpu", "vsl_loss_ratio_sum_cpu"} <= set(kernels)
    for name in kernels:
        doc = getattr(_C, name).__doc__
        assert "PRIVATE, unchecked: raw data pointers" in doc and "torch.ops.vsl_ext" in doc, name


def test_constants_come_from_the_native_module():
    """Defined once, in csrc/vsl_constants.h, and read by the Python layer."""
    from vsl_ext import _validate
    from vsl_ext.kernels import cuda as cuda_kernels

    assert {k: _validate.algorithm(k) for k in ("auto", "dense", "sorted")} == _C.ALGORITHMS
    assert _C.SATURATION == {"float32": 30.0, "float64": 50.0} and _C.PUBLIC_CODE_CLAMP == 50.0
    assert cuda_kernels.SORTED_FROM_COLS == _C.CUDA_SORTED_FROM_COLS
    assert sorted(_C.SORTED_SUMS.values()) == [0, 1, 2, 3]
