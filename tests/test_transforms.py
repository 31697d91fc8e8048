"""The transform matrix (issue 20): every public entry point (rows) inside PyTorch's transforms (columns).

Each cell runs an entry point under one transform and compares its value and its gradient with the
float64 formula (:mod:`vsl_ext.reference`; the triplet term of VSLCriterion is pure PyTorch and is
taken in float64), or asserts the error docs/transforms.md documents. The table in
docs/transforms.md is this module's: change both together.

Rows (:data:`ROWS`): ``vsl_ext.sigmoid_rank``, ``vsl_ext.vsl_loss`` (row and public-code variants),
``VSLLoss``, ``VSLCriterion``, ``vsl_ext.distributed.vsl_loss`` (a one-process gloo group) and the
registered ops called directly. A new op joins the matrix with one :class:`Row`.

Columns (:data:`COLUMNS`): eager; ``torch.compile`` default (inductor), ``dynamic=True`` and
``fullgraph=True``, each over a schedule that changes n and tau (counting compiles: a new tau or a
new n must not recompile once the graph is dynamic, and a value must never come from an earlier
call); ``torch.export`` with a dynamic n and tau as an input; ``torch.func`` grad (also inside
``torch.compile(fullgraph=True)``) / vjp / jacrev / vmap (vmap over a batch of matrices is one
kernel call); autocast bfloat16 / float16; ``torch.utils.checkpoint``; inputs made under
``torch.inference_mode``; a ``torch.device`` context.

Kept small for CI (n <= 8, float64 where the dtype is ours to choose, inductor only in the default
compile column).
"""
import contextlib
import functools
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import pytest
import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode

import vsl_ext
import vsl_ext.distributed
from vsl_ext import reference
from vsl_ext._native import _C
from vsl_ext.criterion import triplet_loss

OPS = torch.ops.vsl_ext
AUTO = _C.ALGORITHMS["auto"]
TAU = 0.05
SCALE = 0.05  # the inputs' spread: pairs inside and outside the sigmoid's window at tau = 0.05
# (n, tau) of successive calls of one compiled function / exported program: new taus, then new sizes
SCHEDULE = [(6, 0.05), (6, 0.05 / 0.5), (6, 0.05 / 0.25), (7, 0.05 / 0.1), (8, 0.05 / 0.07), (6, 0.1)]


def _t(tau) -> torch.Tensor:
    return tau if isinstance(tau, torch.Tensor) else torch.tensor(tau, dtype=torch.float64)


# ------------------------------------------------------------------------------------------ the rows
@dataclass
class Row:
    """An entry point: ``call(x, c, tau)`` on the similarity matrix x (differentiated) and the
    semantic matrix c, and its float64 formula ``formula(x, c, tau)``. ``module``: the criterion
    object whose ``tau`` attribute is set before a call (the row's call then ignores its tau
    argument), as a tau schedule sets it. ``errors``: column -> (exception type, message pattern)
    of the cells docs/transforms.md documents as errors."""
    name: str
    call: Callable
    formula: Callable
    module: Optional[torch.nn.Module] = None
    tensor_tau: bool = False  # the registered ops take tau only as a 0-d float64 tensor
    kernel_calls: int = 1  # native calls of the forward of a vmapped batch (one per rank it takes)
    errors: Dict[str, Tuple[type, str]] = field(default_factory=dict)

    def set_tau(self, tau) -> None:
        if self.module is not None:
            self.module.tau = tau


_vsl_loss_module = vsl_ext.VSLLoss(TAU)
_criterion = vsl_ext.VSLCriterion(beta=10.0, tau=TAU)


def _criterion_formula(x, c, tau):
    return triplet_loss(x) + 10.0 * reference.vsl_loss(x, c, tau)


def _op_loss(x, c, tau):
    n = x.shape[0]
    return 1.0 - OPS.vsl_loss_ratio_sum(x, c, tau, False, False, AUTO)[0] / (n * n)


def _relevant(c):
    """The smoothed-rank family's relevance (or subset) from the semantic matrix: at least one per row."""
    return c >= c.mean(-1, keepdim=True)


_smooth_ap_module = vsl_ext.SmoothAPLoss(TAU)


def _daa_formula(x, c, tau):
    return 25.0 * (reference.public_code_vsl_loss(x, c, tau) + reference.public_code_vsl_loss(x.t(), c.t(), tau))


def _smooth_ap_formula(x, c, tau):
    return reference.smooth_ap_loss(x, _relevant(c), tau)


_FUNC_RAISES = (RuntimeError, "must override the setup_context staticmethod")  # pytorch/pytorch#168393
_HALF = (TypeError, "must be float32 or float64, got torch.(bfloat16|float16)")  # the ops compute in float32/64
# vsl_ext.distributed.vsl_loss reads its cross-rank agreement check (a collective's result) on the host:
# no single graph can hold that, and c10d's collectives have no batching rule.
_DATA_DEPENDENT = (Exception, "data-dependent")
_NO_BATCHED_COLLECTIVE = (RuntimeError, "Batching rule not implemented for c10d::")

ROWS = [
    Row("sigmoid_rank", lambda x, c, tau: vsl_ext.sigmoid_rank(x, tau),
        lambda x, c, tau: reference.sigmoid_rank(x, tau)),
    Row("vsl_loss", lambda x, c, tau: vsl_ext.vsl_loss(x, c, tau), reference.vsl_loss),
    Row("vsl_loss public-code", lambda x, c, tau: vsl_ext.vsl_loss(x, c, tau, "public-code"),
        reference.public_code_vsl_loss),
    Row("VSLLoss", lambda x, c, tau: _vsl_loss_module(x, c), reference.vsl_loss, module=_vsl_loss_module),
    Row("VSLCriterion", lambda x, c, tau: _criterion(x, c)["loss"], _criterion_formula, module=_criterion),
    Row("distributed.vsl_loss", lambda x, c, tau: vsl_ext.distributed.vsl_loss(x, c, tau), reference.vsl_loss,
        errors={"compile_fullgraph": _DATA_DEPENDENT, "export": _DATA_DEPENDENT, "compiled_func_grad": _DATA_DEPENDENT,
                "func_vmap": _NO_BATCHED_COLLECTIVE}),
    Row("sigmoid_rank among", lambda x, c, tau: vsl_ext.sigmoid_rank(x, tau, among=_relevant(c)),
        lambda x, c, tau: reference.sigmoid_rank_among(x, _relevant(c), tau)),
    Row("smooth_ap_loss", lambda x, c, tau: vsl_ext.smooth_ap_loss(x, _relevant(c), tau), _smooth_ap_formula),
    Row("SmoothAPLoss", lambda x, c, tau: _smooth_ap_module(x, _relevant(c)), _smooth_ap_formula,
        module=_smooth_ap_module),
    Row("daa_loss", lambda x, c, tau: vsl_ext.daa_loss(x, c, tau), _daa_formula, kernel_calls=2),
    Row("torch.ops.vsl_ext.sigmoid_rank", lambda x, c, tau: OPS.sigmoid_rank(x, tau, True, AUTO),
        lambda x, c, tau: reference.sigmoid_rank(x, tau), tensor_tau=True,
        errors={"func_grad": _FUNC_RAISES, "compiled_func_grad": _FUNC_RAISES, "func_vjp": _FUNC_RAISES,
                "func_jacrev": _FUNC_RAISES, "autocast_bf16": _HALF, "autocast_fp16": _HALF}),
    Row("torch.ops.vsl_ext.vsl_loss_ratio_sum", _op_loss, reference.vsl_loss, tensor_tau=True,
        errors={"func_grad": _FUNC_RAISES, "compiled_func_grad": _FUNC_RAISES, "func_vjp": _FUNC_RAISES,
                "func_jacrev": _FUNC_RAISES, "autocast_bf16": _HALF, "autocast_fp16": _HALF}),
    Row("torch.ops.vsl_ext.sigmoid_rank_among",
        lambda x, c, tau: OPS.sigmoid_rank_among(x, _relevant(c), tau, True, AUTO),
        lambda x, c, tau: reference.sigmoid_rank_among(x, _relevant(c), tau), tensor_tau=True,
        errors={"func_grad": _FUNC_RAISES, "compiled_func_grad": _FUNC_RAISES, "func_vjp": _FUNC_RAISES,
                "func_jacrev": _FUNC_RAISES, "autocast_bf16": _HALF, "autocast_fp16": _HALF}),
    Row("torch.ops.vsl_ext.smooth_ap_loss",
        lambda x, c, tau: OPS.smooth_ap_loss(x, _relevant(c), tau, False, AUTO)[0],  # backward recomputes
        _smooth_ap_formula, tensor_tau=True,
        errors={"func_grad": _FUNC_RAISES, "compiled_func_grad": _FUNC_RAISES, "func_vjp": _FUNC_RAISES,
                "func_jacrev": _FUNC_RAISES, "autocast_bf16": _HALF, "autocast_fp16": _HALF}),
]


@pytest.fixture(scope="module", autouse=True)
def process_group():
    """A one-process gloo group for vsl_ext.distributed.vsl_loss (which imports before it, see there)."""
    if dist.is_initialized():
        yield
        return
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# ----------------------------------------------------------------------------------------- the cells
def _inputs(n: int, seed: int = 0, dtype=torch.float64, batch: Tuple[int, ...] = (), frozen_c: bool = False):
    """x and c; ``frozen_c``: c made under torch.inference_mode (a cached C), as the compile and
    torch.func columns take it too."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(*batch, n, n, generator=g, dtype=torch.float64) * SCALE).to(dtype)
    c = (torch.randint(0, 4, (*batch, n, n), generator=g).double() * SCALE).to(dtype)  # ties, as in tf-idf C
    if frozen_c:
        with torch.inference_mode():
            c = c.clone()
    return x, c


def _weights(shape, seed: int = 1) -> torch.Tensor:
    """Fixed weights in [-1, 1] that turn any output into a scalar objective with a gradient worth
    comparing (no random op: they are made inside vmap too)."""
    count = 1
    for size in shape:
        count *= size
    return torch.arange(count, dtype=torch.float64).mul(0.7 * seed).add(seed).sin().reshape(shape)


def _objective(out: torch.Tensor) -> torch.Tensor:
    return (out.double() * _weights(out.shape)).sum() if out.dim() else out.double()


def _formula(row: Row, x: torch.Tensor, c: torch.Tensor, tau: float):
    """The float64 formula's value and gradient with respect to x."""
    x64 = x.detach().double().requires_grad_()
    value = row.formula(x64, c.double(), float(tau))
    (grad,) = torch.autograd.grad(_objective(value), x64)
    return value.detach(), grad


def _tau_arg(row: Row, tau):
    return _t(tau) if row.tensor_tau else tau


def _check(row: Row, got, want, grad=None, want_grad=None, rtol=1e-9, msg=""):
    torch.testing.assert_close(got.detach().double(), want, rtol=rtol, atol=rtol * 1e-2, msg=f"{row.name} {msg}")
    if grad is not None:
        scale = want_grad.abs().max().item()
        torch.testing.assert_close(grad.double(), want_grad, rtol=rtol, atol=rtol * scale + 1e-12,
                                   msg=f"{row.name} gradient {msg}")


def _value_and_grad(row: Row, x, c, tau, wrap=lambda f, *a: f(*a)):
    x = x.detach().clone().requires_grad_()
    row.set_tau(tau)
    out = wrap(row.call, x, c, _tau_arg(row, tau))
    (grad,) = torch.autograd.grad(_objective(out), x)
    return out, grad


def cell_eager(row: Row):
    for tau in (TAU, _t(0.02)):  # a Python float and a 0-d tensor
        x, c = _inputs(6)
        out, grad = _value_and_grad(row, x, c, tau)
        want, want_grad = _formula(row, x, c, float(tau))
        _check(row, out, want, grad, want_grad)


def _compiles(fn: Callable) -> int:
    """How many compiled versions of ``fn``'s code dynamo holds (a recompile adds one; a restart of the
    analysis within one compile, e.g. inductor's scalar pass, does not)."""
    return len(torch._dynamo.eval_frame._debug_get_cache_entry_list(fn.__code__))


def _compiled_schedule(row: Row, backend: str, max_frames: int, tensor_tau: bool = False, **options):
    """One compiled function over :data:`SCHEDULE`: every call's value and gradient are the formula's
    (never an earlier call's tau or size), in at most ``max_frames`` compiles."""
    compiled = torch.compile(row.call, backend=backend, **options)
    for n, tau in SCHEDULE:
        x, c = _inputs(n, seed=n, frozen_c=True)
        tau_arg = _t(tau) if tensor_tau else tau
        out, grad = _value_and_grad(row, x, c, tau_arg, wrap=lambda f, *a: compiled(*a))
        want, want_grad = _formula(row, x, c, tau)
        _check(row, out, want, grad, want_grad, msg=f"n={n} tau={tau}")
    assert 1 <= _compiles(row.call) <= max_frames, f"{row.name}: {_compiles(row.call)} compiles"


def cell_compile_default(row: Row):
    """inductor, as torch.compile() is used: static first, then dynamic tau, then dynamic n."""
    _compiled_schedule(row, "inductor", max_frames=3)


def cell_compile_dynamic(row: Row):
    """dynamic=True: one compile for every n and tau, a float tau and a tensor tau alike."""
    _compiled_schedule(row, "aot_eager", max_frames=1, dynamic=True)
    torch._dynamo.reset()
    _compiled_schedule(row, "aot_eager", max_frames=1, tensor_tau=True, dynamic=True)


def cell_compile_fullgraph(row: Row):
    """fullgraph=True, dynamic=True: no graph break anywhere, one compile."""
    _compiled_schedule(row, "aot_eager", max_frames=1, fullgraph=True, dynamic=True)


class _Exported(torch.nn.Module):
    def __init__(self, row: Row):
        super().__init__()
        self.row = row

    def forward(self, x, c, tau):
        return self.row.call(x, c, tau)


def cell_export(row: Row):
    """torch.export with a dynamic n (both dimensions) and tau as a 0-d tensor input: one program for
    every (n, tau) of the schedule, differentiable when run."""
    n = torch.export.Dim("n", min=2, max=64)
    x, c = _inputs(6)
    row.set_tau(TAU)
    program = torch.export.export(_Exported(row), (x, c, _t(TAU)),
                                  dynamic_shapes={"x": {0: n, 1: n}, "c": {0: n, 1: n}, "tau": None})
    module = program.module()
    for size, tau in SCHEDULE:
        x, c = _inputs(size, seed=size)
        row.set_tau(tau)
        xg = x.clone().requires_grad_()
        out = module(xg, c, _t(tau))
        (grad,) = torch.autograd.grad(_objective(out), xg)
        want, want_grad = _formula(row, x, c, tau)  # a criterion's tau too: the program reads its tensor
        _check(row, out, want, grad, want_grad, msg=f"n={size} tau={tau}")


def cell_func_grad(row: Row):
    x, c = _inputs(6, frozen_c=True)
    row.set_tau(TAU)
    grad = torch.func.grad(lambda x: _objective(row.call(x, c, _tau_arg(row, TAU))))(x)
    want, want_grad = _formula(row, x, c, TAU)
    torch.testing.assert_close(grad, want_grad, rtol=1e-9, atol=1e-9 * want_grad.abs().max().item() + 1e-12)
    # through functional_call into a module holding the similarity's scale
    scale = torch.nn.Linear(1, 1, bias=False, dtype=torch.float64)
    params = {"weight": torch.ones(1, 1, dtype=torch.float64)}
    g = torch.func.grad(lambda p: _objective(row.call(torch.func.functional_call(scale, p, (x.unsqueeze(-1),))
                                                      .squeeze(-1), c, _tau_arg(row, TAU))))(params)
    torch.testing.assert_close(g["weight"].squeeze(), (want_grad * x).sum(), rtol=1e-9, atol=1e-12)


def cell_compiled_func_grad(row: Row):
    """torch.func.grad inside torch.compile(fullgraph=True) (the only gradient API a full graph can hold)."""
    x, c = _inputs(6, frozen_c=True)
    row.set_tau(TAU)
    tau = _tau_arg(row, TAU)
    compiled = torch.compile(lambda x: torch.func.grad(lambda x: _objective(row.call(x, c, tau)))(x),
                             fullgraph=True, backend="aot_eager")
    grad = compiled(x)
    _, want_grad = _formula(row, x, c, TAU)
    torch.testing.assert_close(grad, want_grad, rtol=1e-9, atol=1e-9 * want_grad.abs().max().item() + 1e-12)


def cell_func_vjp(row: Row):
    x, c = _inputs(6)
    row.set_tau(TAU)
    out, pullback = torch.func.vjp(lambda x: row.call(x, c, _tau_arg(row, TAU)), x)
    want, _ = _formula(row, x, c, TAU)
    cotangent = _weights(out.shape, seed=2)
    (grad,) = pullback(cotangent)
    x64 = x.clone().requires_grad_()
    (want_grad,) = torch.autograd.grad(row.formula(x64, c, TAU), x64, cotangent)
    _check(row, out, want, grad, want_grad)


def cell_func_jacrev(row: Row):
    x, c = _inputs(5)
    row.set_tau(TAU)
    jac = torch.func.jacrev(lambda x: row.call(x, c, _tau_arg(row, TAU)))(x)
    want = torch.autograd.functional.jacobian(lambda x: row.formula(x, c, TAU), x)
    torch.testing.assert_close(jac, want, rtol=1e-9, atol=1e-9 * want.abs().max().item() + 1e-12)


@contextlib.contextmanager
def _kernel_calls():
    """Counts the CPU kernel calls (each native call of an op's forward or backward)."""
    from vsl_ext.kernels import cpu

    calls = []
    saved = {name: getattr(cpu, name) for name in ("sigmoid_rank_forward", "sigmoid_rank_backward",
                                                   "vsl_loss_ratio_sum", "smooth_ap_loss")}

    def counting(name):
        def kernel(*args, **kwargs):
            calls.append(name)
            return saved[name](*args, **kwargs)
        return kernel

    for name in saved:
        setattr(cpu, name, counting(name))
    try:
        yield calls
    finally:
        for name, kernel in saved.items():
            setattr(cpu, name, kernel)


def cell_func_vmap(row: Row):
    """vmap over a batch of 4 matrices (and of 4 gradients): values and per-sample gradients equal the
    formula's, and the forward is one kernel call for the whole batch."""
    xs, cs = _inputs(6, batch=(4,), frozen_c=True)
    row.set_tau(TAU)
    tau = _tau_arg(row, TAU)
    with _kernel_calls() as calls:
        out = torch.func.vmap(lambda x, c: row.call(x, c, tau))(xs, cs)
    assert len(calls) == row.kernel_calls, calls
    if row.name.startswith("torch.ops"):
        grads = None
    else:
        grads = torch.func.vmap(torch.func.grad(lambda x, c: _objective(row.call(x, c, tau))))(xs, cs)
    for i in range(4):
        want, want_grad = _formula(row, xs[i], cs[i], TAU)
        _check(row, out[i], want, None if grads is None else grads[i], want_grad, msg=f"sample {i}")


def _autocast(dtype, row: Row):
    """Under CPU autocast, x is a matmul's low-precision output; the value and gradient with respect
    to it are the formula's at its (rounded) values, computed in float32."""
    x, c = _inputs(6, dtype=torch.float32)
    with torch.autocast("cpu", dtype=dtype):
        low = (x @ torch.eye(6)).detach().requires_grad_()
        assert low.dtype == dtype
        row.set_tau(TAU)
        out = row.call(low, c, _tau_arg(row, TAU))
    (grad,) = torch.autograd.grad(_objective(out), low)
    assert grad.dtype == dtype
    want, want_grad = _formula(row, low, c, TAU)
    _check(row, out, want, grad.float(), want_grad, rtol=2e-2 if dtype == torch.bfloat16 else 2e-3)


def cell_autocast_bf16(row: Row):
    _autocast(torch.bfloat16, row)


def cell_autocast_fp16(row: Row):
    _autocast(torch.float16, row)


def cell_checkpoint(row: Row):
    x, c = _inputs(6)
    checkpointed = functools.partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)
    out, grad = _value_and_grad(row, x, c, TAU, wrap=lambda f, *a: checkpointed(f, *a))
    want, want_grad = _formula(row, x, c, TAU)
    _check(row, out, want, grad, want_grad)


def cell_inference_inputs(row: Row):
    """x's base and c made under torch.inference_mode (a cached C, a frozen encoder's output), then a
    training step: nothing that needs no gradient is saved for backward."""
    x, c = _inputs(6)
    with torch.inference_mode():
        x_frozen, c_frozen = x.clone(), c.clone()
    assert x_frozen.is_inference() and c_frozen.is_inference()
    shift = torch.zeros((), dtype=torch.float64, requires_grad=True)
    row.set_tau(TAU)
    out = row.call(x_frozen + shift, c_frozen, _tau_arg(row, TAU))  # x_frozen + shift needs grad
    (grad_shift,) = torch.autograd.grad(_objective(out), shift)
    want, want_grad = _formula(row, x, c, TAU)
    _check(row, out, want)
    torch.testing.assert_close(grad_shift, want_grad.sum(), rtol=1e-9, atol=1e-9 * want_grad.abs().sum().item())


def cell_device_context(row: Row):
    """Inside ``with torch.device(...)`` (the inputs' device), which makes torch's factories default to
    it: tau stays on the CPU where the kernels read it."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x, c = _inputs(6)
    with torch.device(device):
        out, grad = _value_and_grad(row, x.to(device), c.to(device), TAU)
    want, want_grad = _formula(row, x, c, TAU)
    _check(row, out.cpu(), want, grad.cpu(), want_grad)


COLUMNS = {
    "eager": cell_eager, "compile_default": cell_compile_default, "compile_dynamic": cell_compile_dynamic,
    "compile_fullgraph": cell_compile_fullgraph, "export": cell_export, "func_grad": cell_func_grad,
    "compiled_func_grad": cell_compiled_func_grad, "func_vjp": cell_func_vjp, "func_jacrev": cell_func_jacrev,
    "func_vmap": cell_func_vmap,
    "autocast_bf16": cell_autocast_bf16, "autocast_fp16": cell_autocast_fp16, "checkpoint": cell_checkpoint,
    "inference_inputs": cell_inference_inputs, "device_context": cell_device_context,
}


@pytest.mark.parametrize("column", list(COLUMNS))
@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_cell(row: Row, column: str):
    try:
        if column in row.errors:
            error, pattern = row.errors[column]
            with pytest.raises(error, match=pattern):
                COLUMNS[column](row)
        else:
            COLUMNS[column](row)
    finally:
        row.set_tau(TAU)


def test_the_issues_temperature_schedule_under_inductor():
    """Issue 20, item 1: ``vsl_loss(S / t, C, tau=0.05 / t)`` and ``sigmoid_rank(S / t, 0.05 / t)`` in
    one compiled step for t = 1, 0.5, 0.25, 0.1, ... used the second call's tau from the third call on
    (at t = 0.1 the loss was 0.448312, the formula's 0.399470). Every call must give the formula's
    loss, ranks and gradient (the matrix's compile columns do the same for every entry point)."""
    x, c = _inputs(8, seed=3)

    @torch.compile
    def step(s, c, t):
        return vsl_ext.vsl_loss(s / t, c, tau=0.05 / t), vsl_ext.sigmoid_rank(s / t, 0.05 / t)

    for t in (1.0, 0.5, 0.25, 0.1):
        s = x.clone().requires_grad_()
        loss, ranks = step(s, c, t)
        (grad,) = torch.autograd.grad(loss + _objective(ranks), s)
        s64 = x.clone().requires_grad_()
        want_loss = reference.vsl_loss(s64 / t, c, 0.05 / t)
        want_ranks = reference.sigmoid_rank(s64 / t, 0.05 / t)
        (want_grad,) = torch.autograd.grad(want_loss + _objective(want_ranks), s64)
        torch.testing.assert_close(loss, want_loss, rtol=1e-9, atol=1e-12, msg=f"t = {t}")
        torch.testing.assert_close(ranks, want_ranks, rtol=1e-9, atol=1e-9, msg=f"t = {t}")
        torch.testing.assert_close(grad, want_grad, rtol=1e-9, atol=1e-9 * want_grad.abs().max().item())


def test_vmap_over_a_tau_schedule():
    """vmap over tau itself (one tau per sample): the batching rules fall back to one call per tau,
    and each sample is the formula at its tau (ranks, loss, per-tau gradient)."""
    x, c = _inputs(5)
    taus = torch.tensor([0.02, 0.05, 0.2], dtype=torch.float64)
    ranks = torch.func.vmap(lambda tau: vsl_ext.sigmoid_rank(x, tau))(taus)
    losses = torch.func.vmap(lambda tau: vsl_ext.vsl_loss(x, c, tau))(taus)
    grads = torch.func.vmap(torch.func.grad(lambda x, tau: vsl_ext.vsl_loss(x, c, tau)), in_dims=(None, 0))(x, taus)
    for i, tau in enumerate(taus.tolist()):
        torch.testing.assert_close(ranks[i], reference.sigmoid_rank(x, tau), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(losses[i], reference.vsl_loss(x, c, tau), rtol=1e-12, atol=1e-12)
        want = torch.func.grad(reference.vsl_loss)(x, c, tau)
        torch.testing.assert_close(grads[i], want, rtol=1e-9, atol=1e-12)


class _Passthrough(TorchDispatchMode):
    """A dispatch mode that changes nothing but makes the public functions take their registered ops."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("entry", ["sigmoid_rank", "sigmoid_rank among", "vsl_loss", "vsl_loss public-code",
                                   "smooth_ap_loss"])
@pytest.mark.parametrize("through", ["leaf", "product"])
def test_a_second_derivative_raises_instead_of_treating_the_gradient_as_constant(entry, through):
    """Through a leaf and through E E^T (where a gradient penalty would otherwise get the gradient's
    contribution as a constant, silently), eager and under a dispatch mode (the registered ops). (An
    ``autograd.grad`` with respect to E alone prunes the gradient node and still sees a constant:
    docs/transforms.md.)"""
    torch.manual_seed(0)
    e = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    leaf = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    c = torch.randn(5, 5, dtype=torch.float64)
    losses = {"sigmoid_rank": lambda x: (vsl_ext.sigmoid_rank(x, 0.1) * c).sum(),
              "sigmoid_rank among": lambda x: (vsl_ext.sigmoid_rank(x, 0.1, among=c > 0) * c).sum(),
              "vsl_loss": lambda x: vsl_ext.vsl_loss(x, c, 0.1),
              "vsl_loss public-code": lambda x: vsl_ext.vsl_loss(x, c, 0.1, "public-code"),
              "smooth_ap_loss": lambda x: vsl_ext.smooth_ap_loss(x, c > 0, 0.1)}
    wrt = leaf if through == "leaf" else e
    for mode in (contextlib.nullcontext, _Passthrough):
        with mode():
            (grad,) = torch.autograd.grad(losses[entry](leaf if through == "leaf" else e @ e.T), wrt,
                                          create_graph=True)
        with pytest.raises(RuntimeError, match="no second derivative|not have been used|does not require grad"):
            (grad ** 2).sum().backward()  # a gradient penalty's backward
