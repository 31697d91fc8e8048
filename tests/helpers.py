"""Helpers shared by the test modules: devices, input generators, comparisons against the reference.

Devices: every op test runs on ``"cpu"``, on ``"cuda"`` when a GPU is present, and on
``"cuda-emulated"``: CPU tensors whose kernel calls go to the CUDA kernels of csrc/*.cu compiled for
the CPU (tests/cuda_emu), with CUDA's choice between the dense and sorted algorithms. The ``device``
fixture (conftest.py) sets that routing up and gives the torch device the tensors go to; parametrise
it with :data:`DEVICES`, or with :func:`device_cases` where the emulator should run fewer cases.
"""
from typing import Iterable, List, Optional, Sequence

import pytest
import torch
from hypothesis import strategies as st

import cuda_emu
import vsl_ext
from vsl_ext import reference

CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
requires_emulator = pytest.mark.skipif(cuda_emu.compiler() is None,
                                       reason="the CUDA emulator needs Linux and a C++ compiler (g++ or $CXX)")
DEVICE_NAMES = ("cpu", "cuda", "cuda-emulated")
_MARKS = {"cpu": (), "cuda": (requires_cuda,), "cuda-emulated": (requires_emulator,)}
DEVICES = [pytest.param(name, marks=_MARKS[name], id=name) for name in DEVICE_NAMES]
DTYPES = [torch.float32, torch.float64]
DTYPE_IDS = ["f32", "f64"]
KINDS = ["random", "wide", "tied", "constant", "adversarial"]


CUDA_DEVICES = [p for p in DEVICES if p.values[0] != "cpu"]  # a GPU and the emulator


def device_cases(cases: Sequence, emulated: Optional[Iterable] = None, cuda: Optional[Iterable] = None,
                 devices: Sequence[str] = DEVICE_NAMES) -> List:
    """``(device, case)`` parameters: every case on CPU, ``cuda`` (default: the same) on a GPU and
    ``emulated`` (default: the same) on the emulator, for ``parametrize("device, case", ...,
    indirect=["device"])``; ``devices``: which of them."""
    per_device = {"cpu": list(cases), "cuda": list(cases if cuda is None else cuda),
                  "cuda-emulated": list(cases if emulated is None else emulated)}
    return [pytest.param(name, case, marks=_MARKS[name], id=f"{name}-{case}")
            for name in devices for case in per_device[name]]


# Caption groups (one list per image) with the awkward cases: case, punctuation-only, Unicode, empty
# captions, repeats, uneven group sizes.
CAPTION_GROUPS = [
    ["A man riding a horse on the beach .", "a MAN rides a horse , a horse ! ", "Horse and rider at sunset"],
    ["Two dogs play in the snow", "two dogs playing in snow snow snow", "...", ""],
    ["Café naïve ÜBER straße: İstanbul ΣΟΦΙΑ σοφία", "日本語 の キャプション テスト", "déjà vu déjà vu"],
    ["!!! ??? ..."],
    ["a man riding a bike down the street", "A man on a bicycle", "a_b c1 22 x y z", "horse horse horse"],
    ["the cat sat on the mat", "a cat on a mat"],
]


def make_input(kind: str, shape, dtype=torch.float64, seed=0, tau=1e-3) -> torch.Tensor:
    """Test matrices whose pairwise differences exercise every regime of the sigmoid.

    random      : spread of a few tau (most pairs inside the sigmoid window)
    wide        : uniform [0, 1] (most pairs saturated at tau = 1e-3)
    tied        : few distinct values, as in CIDEr/TF-IDF similarity matrices
    constant    : one value everywhere
    adversarial : exact ties, pairs at the +-30 tau saturation boundary, a large common
                  offset and +-inf-free extremes of magnitude
    """
    g = torch.Generator().manual_seed(seed)
    r, c = shape
    if kind == "random":
        x = torch.randn(r, c, generator=g, dtype=torch.float64) * 5 * tau
    elif kind == "wide":
        x = torch.rand(r, c, generator=g, dtype=torch.float64)
    elif kind == "tied":
        x = torch.randint(0, 4, (r, c), generator=g).double() * 2 * tau
    elif kind == "constant":
        x = torch.full((r, c), 0.25, dtype=torch.float64)
    elif kind == "adversarial":
        steps = torch.tensor([0.0, 0.0, 30.0, -30.0, 29.99, 30.01, 1e-6, 45.0, -1e-3, 1000.0], dtype=torch.float64)
        idx = torch.randint(0, len(steps), (r, c), generator=g)
        x = steps[idx] * tau + 10.0
    else:
        raise ValueError(kind)
    return x.to(dtype)


def make_pair(kind: str, n: int, dtype, seed=0):
    """(S, C) of a batch: S of ``kind``, C tied (constant if S is) and symmetric, as semantic
    similarities from TF-IDF are in practice (not required by the loss)."""
    s = make_input(kind, (n, n), dtype, seed=seed)
    c = make_input("tied" if kind != "constant" else "constant", (n, n), dtype, seed=seed + 1)
    return s, (c + c.t()) / 2


def assert_close_grad(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    """Gradient comparison relative to the gradient's scale (the reference's own sigmoid'
    loses relative accuracy deep in the tails, where values are ~1e-12 of the largest)."""
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual.to(expected.dtype), expected, rtol=rtol, atol=rtol * scale + 1e-10)


def check_rank(m: torch.Tensor, tau: float, descending: bool, algorithms=("auto",), device: str = "cpu") -> None:
    """sigmoid_rank's ranks and gradients for every algorithm vs the float64 reference (computed once)."""
    x64 = m.double().requires_grad_()
    expected = reference.sigmoid_rank(x64, tau, descending)
    grad = torch.randn(m.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (ge,) = torch.autograd.grad(expected, x64, grad)
    for algorithm in algorithms:
        x = m.to(device).requires_grad_()
        r = vsl_ext.sigmoid_rank(x, tau, descending, algorithm=algorithm)
        torch.testing.assert_close(r.double().cpu(), expected.detach(), rtol=1e-5, atol=0)
        (gx,) = torch.autograd.grad(r, x, grad.to(r.dtype).to(device))
        assert gx.dtype == m.dtype
        assert_close_grad(gx.cpu(), ge)


REFERENCE_LOSS = {"row": reference.vsl_loss, "public-code": reference.public_code_vsl_loss}


def check_loss(s, c, variant, algorithms=("auto",), device="cpu", semantic_grad=True, tau=1e-3) -> None:
    """vsl_loss and its gradients for every algorithm vs the float64 reference (computed once)."""
    x64 = s.double().requires_grad_()
    y64 = c.double().requires_grad_()
    expected = REFERENCE_LOSS[variant](x64, y64, tau)
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


def tied_grids(max_rows: int):
    """Hypothesis inputs: (m, descending) with m a (<= max_rows, <= 70) float64 matrix drawn from a
    few values, ties and pairs on the +-30 tau window's edges included."""
    @st.composite
    def draw(draw_):
        rows, cols = draw_(st.integers(1, max_rows)), draw_(st.integers(1, 70))
        values = draw_(st.lists(st.sampled_from([0.0, 1e-3, -2e-3, 0.03, 0.0301, -0.0299, 5e-4, 1.0]),
                                min_size=1, max_size=8))
        g = torch.Generator().manual_seed(draw_(st.integers(0, 2**16)))
        pool = torch.tensor(values, dtype=torch.float64)
        return pool[torch.randint(0, len(values), (rows, cols), generator=g)], draw_(st.booleans())
    return draw()


def ops_making(shape, fn):
    """The aten ops that return a tensor of ``shape`` while ``fn()`` runs (under a dispatch mode, so the
    public functions take their registered ops)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and tuple(out.shape) == tuple(shape):
                self.ops.append(str(func))
            return out

    with Record() as record:
        fn()
    return record.ops
