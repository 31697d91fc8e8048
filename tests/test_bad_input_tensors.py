"""Bad-input campaign, tensor entry points (issue 12): vsl_ext.sigmoid_rank, vsl_ext.vsl_loss (both
variants), the registered ops called directly, VSLLoss and VSLCriterion.

Each case expects the documented value (float64 oracle of tests/bad_input.py) or an error naming
the argument and what was expected. What tests/test_op_checks.py already holds for the ops (wrong
dtypes, ranks, shapes, devices, taus and algorithm codes, layouts, empty matrices) and
tests/test_infinities.py for infinities (the issue's rows, masked batches, gradients) is not
repeated; the cells here add what those leave out.
"""
import math

import numpy as np
import pytest
import torch

import bad_input as oracle
import vsl_ext
from bad_input import assert_values, cell
from vsl_ext import VSLCriterion, VSLLoss
from vsl_ext._native import _C

OPS = torch.ops.vsl_ext
ALGORITHMS = ("dense", "sorted", "auto")
CODES = {name: _C.ALGORITHMS[name] for name in ALGORITHMS}
F32MAX = torch.finfo(torch.float32).max
F64MAX = torch.finfo(torch.float64).max
INF, NAN = math.inf, math.nan
RANK, ROW, PUBLIC = "vsl_ext.sigmoid_rank", "vsl_ext.vsl_loss (row)", "vsl_ext.vsl_loss (public-code)"
VARIANT_OF = {ROW: "row", PUBLIC: "public-code"}
LOSS_ORACLE = {ROW: oracle.loss, PUBLIC: oracle.public_code_loss}


def _m(r, c, seed=0, scale=3e-3, dtype=torch.float64):
    return (torch.randn(r, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale).to(dtype)


BAD_DTYPES = {"int64": torch.int64, "int32": torch.int32, "uint8": torch.uint8, "bool": torch.bool,
              "complex64": torch.complex64, "complex128": torch.complex128}
NOT_TENSORS = {"list": [[0.1, 0.2], [0.3, 0.4]], "numpy": np.ones((2, 2)), "None": None, "float": 1.0}
BAD_RANKS = {"0-D": torch.tensor(0.5), "1-D": torch.ones(4), "3-D": torch.ones(2, 3, 3)}
EMPTY = [(0, 0), (0, 5), (5, 0)]


def params(pairs):
    """``pytest.param``s marked with their campaign cell: ``pairs`` of (values, (entry, kind)) or
    (values, (entry, kind, cases))."""
    out = []
    for values, where in pairs:
        values = values if isinstance(values, tuple) else (values,)
        out.append(pytest.param(*values, marks=cell(*where), id="-".join(getattr(v, "__name__", str(v)).replace(" ", "_")[:28] for v in values)))
    return out


# ------------------------------------------------------------------------------ sigmoid_rank
@cell(RANK, "dtype")
@pytest.mark.parametrize("bad", sorted(BAD_DTYPES))
def test_rank_rejects_non_float_dtypes(bad):
    with pytest.raises(TypeError, match=rf"M must be a floating-point tensor .* got torch\.{bad}"):
        vsl_ext.sigmoid_rank(torch.ones(3, 3).to(BAD_DTYPES[bad]))


@cell(RANK, "dtype")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_rank_half_precision_is_computed_in_float32(dtype, algorithm):
    m = _m(5, 9, scale=0.5).to(dtype)
    r = vsl_ext.sigmoid_rank(m, 0.1, algorithm=algorithm)
    assert r.dtype == torch.float32
    assert_values(r, oracle.ranks(m, 0.1))


@cell(RANK, "shape / rank")
@pytest.mark.parametrize("bad", sorted(BAD_RANKS))
def test_rank_rejects_other_ranks(bad):
    with pytest.raises(ValueError, match=r"M must be a 2-D matrix, got \d-D"):
        vsl_ext.sigmoid_rank(BAD_RANKS[bad])


@cell(RANK, "shape / rank")
@pytest.mark.parametrize("bad", sorted(NOT_TENSORS))
def test_rank_rejects_non_tensors(bad):
    with pytest.raises(TypeError, match="M must be a torch.Tensor"):
        vsl_ext.sigmoid_rank(NOT_TENSORS[bad])


@cell(RANK, "empty")
@pytest.mark.parametrize("shape", EMPTY, ids=str)
def test_rank_rejects_empty(shape):
    with pytest.raises(ValueError, match=r"M must be non-empty, got shape"):
        vsl_ext.sigmoid_rank(torch.empty(shape))


@cell(RANK, "n = 1")
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1)], ids=str)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_rank_single_row_or_column(shape, algorithm):
    m = _m(*shape)
    assert_values(vsl_ext.sigmoid_rank(m, algorithm=algorithm), oracle.ranks(m))


@cell(RANK, "device")
def test_rank_on_meta_traces_shapes():
    out = vsl_ext.sigmoid_rank(torch.empty(3, 4, device="meta", dtype=torch.float16))
    assert out.device.type == "meta" and out.shape == (3, 4) and out.dtype == torch.float32


def _views(base):
    """Non-contiguous views holding the values of ``base``: transposed, sliced, offset, expanded rows
    and columns (stride 0)."""
    r, c = base.shape
    yield "transposed", base.t().contiguous().t()
    wide = torch.zeros(r, 3 * c, dtype=base.dtype)
    wide[:, ::3] = base
    yield "sliced", wide[:, ::3]
    yield "offset", torch.cat([torch.zeros(1, c, dtype=base.dtype), base])[1:]
    yield "expanded rows", base[:1].expand(r, c)
    yield "expanded columns", base[:, :1].expand(r, c)


VIEW_NAMES = [name for name, _ in _views(torch.zeros(2, 2))]


@cell(RANK, "layout (strides)")
@pytest.mark.parametrize("view", VIEW_NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64], ids=["f16", "f32", "f64"])
def test_rank_of_every_view(view, dtype):
    m = dict(_views(_m(6, 70, dtype=dtype)))[view]
    for algorithm in ALGORITHMS:
        assert_values(vsl_ext.sigmoid_rank(m, algorithm=algorithm), oracle.ranks(m))


VALUE_ROWS = {
    "NaN": ("NaN", [[0.1, NAN, 0.3, 0.2], [0.1, 0.2, 0.3, 0.4], [NAN, NAN, NAN, NAN]]),
    "all -inf": ("±inf", [[-INF] * 4, [0.1, 0.2, 0.3, 0.4], [INF] * 4]),
    "both infinities": ("±inf", [[INF, -INF, INF, -INF], [0.0, INF, -INF, 0.0], [-INF, 1e-3, 2e-3, -INF]]),
    "1e38": ("huge (1e38, dtype max)", [[1e38, -1e38, 0.0, 1e38], [1e38, 1e38 * (1 + 1e-6), -1e38, 5.0],
                                        [1e38, 1e38, 1e38, 1e38]]),
    "dtype max": ("huge (1e38, dtype max)", [[F32MAX, -F32MAX, 0.0, F32MAX], [-F32MAX, -F32MAX, F32MAX, 1.0],
                                             [F32MAX, INF, -F32MAX, -INF]]),
}


@pytest.mark.parametrize("case", params((name, (RANK, VALUE_ROWS[name][0])) for name in sorted(VALUE_ROWS)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("descending", [True, False], ids=["desc", "asc"])
def test_rank_of_special_values(case, dtype, descending):
    m = torch.tensor(VALUE_ROWS[case][1], dtype=dtype).repeat(1, 17)  # 68 columns: "auto" sorts
    for algorithm in ALGORITHMS:
        assert_values(vsl_ext.sigmoid_rank(m, 1e-3, descending, algorithm=algorithm), oracle.ranks(m, 1e-3, descending))


@cell(RANK, "huge (1e38, dtype max)")
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_rank_float64_extremes(algorithm):
    m = torch.tensor([[F64MAX, -F64MAX, 0.0, F64MAX, 1e-300, -1e308]], dtype=torch.float64).repeat(2, 11)
    assert_values(vsl_ext.sigmoid_rank(m, algorithm=algorithm), oracle.ranks(m))


# Temperatures at the edges of what each computation dtype accepts: 1 / tau and tau finite.
EXTREME_TAUS = [(torch.float32, 1.0 / F32MAX), (torch.float32, 3e-39), (torch.float32, 1e-30), (torch.float32, 1e30),
                (torch.float32, F32MAX), (torch.float64, 1e-308), (torch.float64, 1e-300),
                (torch.float64, 1e300), (torch.float16, 1.0 / F32MAX)]


@cell(RANK, "tau")
@pytest.mark.parametrize("dtype, tau", EXTREME_TAUS, ids=[f"{str(d)[6:]}-{t:.3g}" for d, t in EXTREME_TAUS])
def test_rank_extreme_valid_tau(dtype, tau):
    m = torch.tensor([[0.1, 0.2, 0.3, 0.2, -1.0, 1e3]], dtype=torch.float64).to(dtype).repeat(2, 12)
    for algorithm in ALGORITHMS:
        assert_values(vsl_ext.sigmoid_rank(m, tau, algorithm=algorithm), oracle.ranks(m, tau))


BAD_TAUS = [(0.0, ValueError, "finite number > 0"), (-1e-3, ValueError, "finite number > 0"),
            (NAN, ValueError, "finite number > 0"), (INF, ValueError, "finite number > 0"),
            (5e-324, ValueError, "1 / tau overflows float32"), (2.9e-39, ValueError, "1 / tau overflows float32"),
            (1e39, ValueError, "overflows float32"), (True, TypeError, "tau must be a real number"),
            ("1e-3", TypeError, "tau must be a real number"), (None, TypeError, "tau must be a real number"),
            (torch.tensor(1), TypeError, "tau must be a real number"), (1j, TypeError, "tau must be a real number")]


@cell(RANK, "tau")
@pytest.mark.parametrize("tau, error, message", BAD_TAUS, ids=[repr(t)[:12] for t, _, _ in BAD_TAUS])
def test_rank_rejects_bad_tau(tau, error, message):
    with pytest.raises(error, match=message):
        vsl_ext.sigmoid_rank(_m(3, 3, dtype=torch.float32), tau)


@cell(RANK, "tau")
@pytest.mark.parametrize("tau", [1, np.float32(0.5), np.float64(1e-3)], ids=["int", "np.float32", "np.float64"])
def test_rank_takes_any_real_tau(tau):
    m = _m(3, 5, scale=0.3)
    assert_values(vsl_ext.sigmoid_rank(m, tau), oracle.ranks(m, float(tau)))


@cell(RANK, "other arguments")
@pytest.mark.parametrize("descending", [1, None, "yes", np.bool_(True)], ids=["int", "None", "str", "np.bool_"])
def test_rank_rejects_non_bool_descending(descending):
    with pytest.raises(TypeError, match="descending must be a bool"):
        vsl_ext.sigmoid_rank(_m(3, 3), 1e-3, descending)


@cell(RANK, "other arguments")
@pytest.mark.parametrize("algorithm", ["fast", None, 1, "Dense"])
def test_rank_rejects_unknown_algorithm(algorithm):
    with pytest.raises(ValueError, match="algorithm must be one of"):
        vsl_ext.sigmoid_rank(_m(3, 3), algorithm=algorithm)


# ------------------------------------------------------------------------------ vsl_loss
LOSSES = [ROW, PUBLIC]


def _loss(entry, s, c, tau=1e-3, algorithm="auto"):
    return vsl_ext.vsl_loss(s, c, tau, VARIANT_OF[entry], algorithm=algorithm)


@pytest.mark.parametrize("entry", params((e, (e, "dtype")) for e in LOSSES))
@pytest.mark.parametrize("which", ["sims", "semantic_sims"])
@pytest.mark.parametrize("bad", sorted(BAD_DTYPES))
def test_loss_rejects_non_float_dtypes(entry, which, bad):
    good, wrong = _m(4, 4, dtype=torch.float32), torch.ones(4, 4).to(BAD_DTYPES[bad])
    args = (wrong, good) if which == "sims" else (good, wrong)
    with pytest.raises(TypeError, match=rf"{which} must be a floating-point tensor .* got torch\.{bad}"):
        _loss(entry, *args)


@pytest.mark.parametrize("entry", params((e, (e, "dtype")) for e in LOSSES))
@pytest.mark.parametrize("dtypes", [(torch.float16, torch.float16), (torch.bfloat16, torch.float32),
                                    (torch.float32, torch.float64), (torch.float16, torch.float64)],
                         ids=["f16-f16", "bf16-f32", "f32-f64", "f16-f64"])
def test_loss_mixed_and_half_dtypes(entry, dtypes):
    s, c = _m(6, 6, scale=0.3).to(dtypes[0]), _m(6, 6, seed=1, scale=0.3).to(dtypes[1])
    out = _loss(entry, s, c, 0.1)
    assert out.dtype == (torch.float64 if torch.float64 in dtypes else torch.float32)
    assert out.item() == pytest.approx(LOSS_ORACLE[entry](s, c, 0.1), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("entry", params((e, (e, "shape / rank")) for e in LOSSES))
@pytest.mark.parametrize("shapes, message", [
    (((4, 4), (4, 3)), r"semantic_sims must have the shape of sims \(4, 4\), got \(4, 3\)"),
    (((4, 4), (5, 5)), r"semantic_sims must have the shape of sims \(4, 4\), got \(5, 5\)"),
    (((4,), (4,)), r"sims must be a 2-D matrix, got 1-D"),
    (((2, 2, 2), (2, 2, 2)), r"sims must be a 2-D matrix, got 3-D"),
    (((4, 4), (16,)), r"semantic_sims must be a 2-D matrix, got 1-D")], ids=lambda v: str(v)[:20])
def test_loss_rejects_shapes(entry, shapes, message):
    with pytest.raises(ValueError, match=message):
        _loss(entry, torch.zeros(shapes[0]), torch.zeros(shapes[1]))


@cell(PUBLIC, "shape / rank")
def test_public_code_loss_rejects_rectangular_sims():
    with pytest.raises(ValueError, match=r"sims must be a square \(n, n\) matrix for variant='public-code'"):
        vsl_ext.vsl_loss(torch.zeros(3, 4), torch.zeros(3, 4), variant="public-code")


@cell(ROW, "shape / rank")
def test_row_loss_takes_rectangular_sims():
    s, c = _m(3, 4, scale=0.3), _m(3, 4, seed=1, scale=0.3)
    assert vsl_ext.vsl_loss(s, c, 0.1).item() == pytest.approx(LOSS_ORACLE[ROW](s, c, 0.1), rel=1e-9)


@pytest.mark.parametrize("entry", params((e, (e, "shape / rank")) for e in LOSSES))
@pytest.mark.parametrize("which", ["sims", "semantic_sims"])
def test_loss_rejects_non_tensors(entry, which):
    args = ([[0.1]], torch.ones(1, 1)) if which == "sims" else (torch.ones(1, 1), [[0.1]])
    with pytest.raises(TypeError, match=f"{which} must be a torch.Tensor, got list"):
        _loss(entry, *args)


@pytest.mark.parametrize("entry", params((e, (e, "empty")) for e in LOSSES))
@pytest.mark.parametrize("shape", EMPTY, ids=str)
def test_loss_rejects_empty(entry, shape):
    with pytest.raises(ValueError, match="sims must be non-empty|must be a square"):
        _loss(entry, torch.empty(shape), torch.empty(shape))


@pytest.mark.parametrize("entry", params((e, (e, "n = 1")) for e in LOSSES))
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_loss_of_one_pair_is_zero(entry, algorithm):
    """n = 1: both ranks are 1, min / max = 1, L = 0 (and its gradient 0)."""
    s = torch.tensor([[0.3]], requires_grad=True)
    out = _loss(entry, s, torch.tensor([[-2.0]]), algorithm=algorithm)
    out.backward()
    assert out.item() == 0.0 and s.grad.item() == 0.0


@pytest.mark.parametrize("entry", params((e, (e, "device")) for e in LOSSES))
def test_loss_devices_must_agree(entry):
    with pytest.raises(ValueError, match="semantic_sims is on meta but sims is on cpu; put both on one device"):
        _loss(entry, torch.zeros(3, 3), torch.zeros(3, 3, device="meta"))
    out = _loss(entry, torch.zeros(3, 3, device="meta"), torch.zeros(3, 3, device="meta"))
    assert out.device.type == "meta" and out.shape == ()


@pytest.mark.parametrize("entry", params((e, (e, "layout (strides)")) for e in LOSSES))
@pytest.mark.parametrize("view", VIEW_NAMES)
def test_loss_of_every_view(entry, view):
    s = dict(_views(_m(9, 9)))[view]
    c = dict(_views(_m(9, 9, seed=2)))["transposed"]
    for algorithm in ALGORITHMS:
        assert _loss(entry, s, c, algorithm=algorithm).item() == pytest.approx(LOSS_ORACLE[entry](s, c), rel=1e-9,
                                                                                 abs=1e-12)


LOSS_VALUES = {
    "NaN in S": ("NaN", lambda s, c: (s.index_put_((torch.tensor([1]), torch.tensor([2])), torch.tensor(NAN, dtype=torch.float64)), c)),
    "NaN in C": ("NaN", lambda s, c: (s, c.index_put_((torch.tensor([0]), torch.tensor([0])), torch.tensor(NAN, dtype=torch.float64)))),
    "all -inf but the diagonal": ("±inf", lambda s, c: (s.masked_fill(~torch.eye(len(s), dtype=torch.bool), -INF), c)),
    "+inf and -inf in S and C": ("±inf", lambda s, c: (s.index_put_((torch.tensor([0, 3]), torch.tensor([1, 3])),
                                                                     torch.tensor([INF, -INF], dtype=torch.float64)),
                                                       c.index_put_((torch.tensor([2]), torch.tensor([2])),
                                                                    torch.tensor(INF, dtype=torch.float64)))),
    "1e38 in S": ("huge (1e38, dtype max)", lambda s, c: (s * 1e40, c)),
    "float32 max in S and C": ("huge (1e38, dtype max)", lambda s, c: (s.sign() * F32MAX, c.sign() * F32MAX)),
}


@pytest.mark.parametrize("entry, case", params(((e, name), (e, LOSS_VALUES[name][0])) for e in LOSSES
                                                for name in sorted(LOSS_VALUES)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_loss_of_special_values(entry, case, dtype):
    kind, make = LOSS_VALUES[case]
    s, c = make(_m(5, 5), _m(5, 5, seed=3).abs())
    s, c = s.to(dtype), c.to(dtype)
    want = LOSS_ORACLE[entry](s, c)
    for algorithm in ALGORITHMS:
        got = _loss(entry, s, c, algorithm=algorithm).item()
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-5, abs=1e-7), algorithm


@pytest.mark.parametrize("entry", params((e, (e, "tau")) for e in LOSSES))
@pytest.mark.parametrize("dtype, tau", EXTREME_TAUS[:6], ids=[f"{str(d)[6:]}-{t:.3g}" for d, t in EXTREME_TAUS[:6]])
def test_loss_extreme_valid_tau(entry, dtype, tau):
    s, c = _m(6, 6, scale=1.0).to(dtype), _m(6, 6, seed=4, scale=1.0).to(dtype)
    assert _loss(entry, s, c, tau).item() == pytest.approx(LOSS_ORACLE[entry](s, c, tau), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("entry", params((e, (e, "tau")) for e in LOSSES))
@pytest.mark.parametrize("tau, error, message", BAD_TAUS[:8], ids=[repr(t)[:12] for t, _, _ in BAD_TAUS[:8]])
def test_loss_rejects_bad_tau(entry, tau, error, message):
    with pytest.raises(error, match=message):
        _loss(entry, _m(3, 3, dtype=torch.float32), _m(3, 3, dtype=torch.float32), tau)


@pytest.mark.parametrize("entry", params((e, (e, "other arguments", 2)) for e in LOSSES))
def test_loss_rejects_unknown_variant_and_algorithm(entry):
    with pytest.raises(ValueError, match="variant must be one of"):
        vsl_ext.vsl_loss(_m(3, 3), _m(3, 3), variant="column")
    with pytest.raises(ValueError, match="algorithm must be one of"):
        _loss(entry, _m(3, 3), _m(3, 3), algorithm="fastest")


# ------------------------------------------------------------------------------ the registered ops
OP_RANK, OP_BACKWARD, OP_RATIO = ("torch.ops.vsl_ext.sigmoid_rank", "torch.ops.vsl_ext.sigmoid_rank_backward",
                                  "torch.ops.vsl_ext.vsl_loss_ratio_sum")
TAU = torch.tensor(1e-3, dtype=torch.float64)  # the ops take tau as a 0-d float64 CPU tensor


def T(tau: float) -> torch.Tensor:
    return torch.tensor(tau, dtype=torch.float64)


SPECIAL = {"NaN": [[0.1, NAN, 0.3], [0.1, 0.2, 0.3], [0.0, 0.0, 0.0]],
           "±inf": [[INF, -INF, 0.3], [-INF, -INF, 0.1], [INF, INF, INF]],
           "huge (1e38, dtype max)": [[F32MAX, -F32MAX, 1e38], [1e38, 1e38, -1e38], [0.0, -F32MAX, 1.0]]}


@cell(OP_RANK, "NaN")
@cell(OP_RANK, "±inf")
@cell(OP_RANK, "huge (1e38, dtype max)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_op_rank_special_values(dtype, algorithm):
    for rows in SPECIAL.values():
        m = torch.tensor(rows, dtype=dtype)
        assert_values(OPS.sigmoid_rank(m, TAU, True, CODES[algorithm]), oracle.ranks(m))


@cell(OP_BACKWARD, "NaN")
@cell(OP_BACKWARD, "±inf")
@cell(OP_BACKWARD, "huge (1e38, dtype max)")
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_op_backward_special_values(algorithm):
    g = _m(3, 3, seed=5, scale=1.0)
    for rows in SPECIAL.values():
        m = torch.tensor(rows, dtype=torch.float64) * 1e-2   # pairs inside the sigmoid's window too
        assert_values(OPS.sigmoid_rank_backward(m, g, T(0.01), True, False, CODES[algorithm]), oracle.rank_backward(m, g, 0.01),
                      rtol=1e-6)


@cell(OP_RATIO, "NaN")
@cell(OP_RATIO, "±inf")
@cell(OP_RATIO, "huge (1e38, dtype max)")
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_op_ratio_sum_special_values(algorithm):
    c = _m(3, 3, seed=6)
    for rows in SPECIAL.values():
        s = torch.tensor(rows, dtype=torch.float64)
        total, grad_sr, _ = OPS.vsl_loss_ratio_sum(s, c, TAU, False, False, CODES[algorithm])
        want = oracle.ratio_sum(oracle.ranks(s), oracle.ranks(c))
        assert (math.isnan(want) and math.isnan(total.item())) or total.item() == pytest.approx(want, rel=1e-12)


@cell(OP_RANK, "n = 1", cases=3)
@cell(OP_BACKWARD, "n = 1", cases=3)
@cell(OP_RATIO, "n = 1", cases=3)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_ops_on_single_rows_and_columns(algorithm):
    code = CODES[algorithm]
    for shape in ((1, 1), (1, 6), (6, 1)):
        m, g = _m(*shape), _m(*shape, seed=7, scale=1.0)
        assert_values(OPS.sigmoid_rank(m, TAU, False, code), oracle.ranks(m, TAU, False))
        assert_values(OPS.sigmoid_rank_backward(m, g, TAU, True, False, code), oracle.rank_backward(m, g), rtol=1e-6)
        total, _, _ = OPS.vsl_loss_ratio_sum(m, g, TAU, False, True, code)
        assert total.item() == pytest.approx(oracle.ratio_sum(oracle.ranks(m), oracle.ranks(g)), rel=1e-12)
    one = torch.tensor([[0.5]])
    assert OPS.vsl_loss_ratio_sum(one, one, TAU, True, True, code)[0].item() == 1.0     # public-code, 1 x 1
    assert OPS.sigmoid_rank_backward(one, one, TAU, True, True, code).item() == 0.0


NOT_SCHEMA = [("m list", lambda: OPS.sigmoid_rank([[1.0]], TAU, True, 0), "argument 'm'"),
              ("tau float", lambda: OPS.sigmoid_rank(torch.ones(2, 2), 1e-3, True, 0), "argument 'tau'"),
              ("tau str", lambda: OPS.sigmoid_rank(torch.ones(2, 2), "1e-3", True, 0), "argument 'tau'"),
              ("algorithm float", lambda: OPS.sigmoid_rank(torch.ones(2, 2), TAU, True, 0.0), "argument 'algorithm'"),
              ("algorithm 2**64", lambda: OPS.sigmoid_rank(torch.ones(2, 2), TAU, True, 2 ** 64), "argument 'algorithm'"),
              ("descending str", lambda: OPS.sigmoid_rank(torch.ones(2, 2), TAU, "yes", 0), "argument 'descending'")]


@cell(OP_RANK, "other arguments", cases=len(NOT_SCHEMA))
def test_op_arguments_outside_the_schema_name_the_argument():
    for _name, call, message in NOT_SCHEMA:
        with pytest.raises(RuntimeError, match=message):
            call()
    with pytest.raises(TypeError, match="vsl_ext::sigmoid_rank: m must be a Tensor, got NoneType"):
        OPS.sigmoid_rank(None, TAU, True, 0)
    with pytest.raises(TypeError, match="vsl_ext::sigmoid_rank: tau must be a 0-d float64 CPU tensor, got NoneType"):
        OPS.sigmoid_rank(torch.ones(2, 2), None, True, 0)  # the schema lets None through for a Tensor


@cell(OP_RANK, "other arguments")
def test_op_descending_none_is_false_by_torchs_schema():
    """torch's dispatcher turns None for a bool argument into False before the op runs (the op cannot
    tell): ``descending=None`` ranks ascending. Recorded here so that a change in torch shows."""
    m = _m(3, 5)
    assert_values(OPS.sigmoid_rank(m, TAU, None, 0), oracle.ranks(m, TAU, descending=False))


@cell(OP_BACKWARD, "other arguments", cases=2)
@cell(OP_RATIO, "other arguments", cases=2)
def test_op_none_tensors_are_named():
    with pytest.raises(TypeError, match="sigmoid_rank_backward: grad must be a Tensor, got NoneType"):
        OPS.sigmoid_rank_backward(torch.ones(2, 2), None, TAU, True, False, 0)
    with pytest.raises(TypeError, match="vsl_loss_ratio_sum: semantic must be a Tensor, got NoneType"):
        OPS.vsl_loss_ratio_sum(torch.ones(2, 2), None, TAU, False, False, 0)
    with pytest.raises(RuntimeError, match="argument 'grad'"):
        OPS.sigmoid_rank_backward(torch.ones(2, 2), [[1.0]], TAU, True, False, 0)
    with pytest.raises(RuntimeError, match="argument 'semantic'"):
        OPS.vsl_loss_ratio_sum(torch.ones(2, 2), 3, TAU, False, False, 0)


@cell(OP_RANK, "tau", cases=5)
@cell(OP_BACKWARD, "tau", cases=5)
@cell(OP_RATIO, "tau", cases=5)
def test_ops_at_the_edges_of_valid_tau():
    """The op's own check admits exactly the taus whose reciprocal is finite; at the edge the values
    are the formula's (a reciprocal rounded to inf in the kernel would make ties 0 * inf = NaN)."""
    for dtype, tau in EXTREME_TAUS[:5]:
        m = torch.tensor([[0.1, 0.2, 0.1, 5.0], [0.0, 0.0, 0.0, 0.0]], dtype=dtype)
        for code in CODES.values():
            assert_values(OPS.sigmoid_rank(m, T(tau), True, code), oracle.ranks(m, tau))
            assert_values(OPS.sigmoid_rank_backward(m, m, T(tau), True, False, code), oracle.rank_backward(m, m, tau))
            total = OPS.vsl_loss_ratio_sum(m, m.flip(1), T(tau), False, False, code)[0].item()
            assert total == pytest.approx(oracle.ratio_sum(oracle.ranks(m, tau), oracle.ranks(m.flip(1), tau)), rel=1e-6)


# ------------------------------------------------------------------------------ VSLLoss, VSLCriterion
BAD_WEIGHTS = [NAN, INF, -1.0, True, "1", None]


@cell("VSLCriterion", "other arguments")
@pytest.mark.parametrize("name", ["margin", "alpha", "beta"])
@pytest.mark.parametrize("value", BAD_WEIGHTS, ids=repr)
def test_criterion_rejects_bad_weights(name, value):
    with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0"):
        VSLCriterion(**{name: value})


@pytest.mark.parametrize("module", params((m, (m.__name__, "tau")) for m in (VSLCriterion, VSLLoss)))
@pytest.mark.parametrize("tau, error, message", [(0.0, ValueError, "tau must be a finite number > 0"),
                                                 (INF, ValueError, "tau must be a finite number > 0"),
                                                 (NAN, ValueError, "tau must be a finite number > 0"),
                                                 (1e-320, ValueError, "1 / tau overflows float64"),
                                                 (True, TypeError, "tau must be a real number"),
                                                 ("0.1", TypeError, "tau must be a real number")],
                         ids=["0", "inf", "nan", "1e-320", "True", "str"])
def test_modules_reject_bad_tau(module, tau, error, message):
    with pytest.raises(error, match=message):
        module(tau=tau)


@pytest.mark.parametrize("module", params((m, (m.__name__, "other arguments")) for m in (VSLCriterion, VSLLoss)))
def test_modules_reject_unknown_variant(module):
    with pytest.raises(ValueError, match="variant must be one of"):
        module(variant="columns")


@cell("VSLCriterion", "dtype")
@pytest.mark.parametrize("which", ["sims", "image_sem", "caption_sem"])
@pytest.mark.parametrize("bad", ["int64", "bool", "complex64"])
def test_criterion_rejects_non_float_matrices(which, bad):
    args = {"sims": _m(4, 4, dtype=torch.float32), "image_sem": _m(4, 4, dtype=torch.float32),
            "caption_sem": _m(4, 4, dtype=torch.float32)}
    args[which] = torch.ones(4, 4).to(BAD_DTYPES[bad])
    with pytest.raises(TypeError, match=rf"{which} must be a floating-point tensor .* got torch\.{bad}"):
        VSLCriterion(text_side=True)(args["sims"], args["image_sem"], args["caption_sem"])


@cell("VSLCriterion", "shape / rank", cases=5)
def test_criterion_rejects_shapes():
    crit = VSLCriterion()
    with pytest.raises(TypeError, match="sims must be a torch.Tensor, got list"):
        crit([[0.1]], torch.ones(1, 1))
    with pytest.raises(ValueError, match=r"sims must be a square \(B, B\) .* got \(3, 4\)"):
        crit(torch.zeros(3, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"sims must be a 2-D matrix, got 3-D"):
        crit(torch.zeros(2, 2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"image_sem must have the shape of sims \(3, 3\), got \(3, 2\)"):
        crit(torch.zeros(3, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"image_sem \(the batch images' \(B, B\) semantic similarity\) is required"):
        crit(torch.zeros(3, 3))


@cell("VSLCriterion", "empty")
@cell("VSLLoss", "empty")
def test_modules_reject_empty():
    with pytest.raises(ValueError, match=r"sims must be non-empty, got shape \(0, 0\)"):
        VSLCriterion()(torch.zeros(0, 0), torch.zeros(0, 0))
    with pytest.raises(ValueError, match=r"sims must be non-empty, got shape \(0, 0\)"):
        VSLLoss()(torch.zeros(0, 0), torch.zeros(0, 0))


@cell("VSLCriterion", "n = 1")
@cell("VSLLoss", "n = 1")
def test_modules_on_one_pair():
    """One pair: no negative (triplet 0), both ranks 1 (VSL 0)."""
    out = VSLCriterion(text_side=True)(torch.tensor([[0.7]]), torch.tensor([[1.0]]), torch.tensor([[1.0]]))
    assert {k: v.item() for k, v in out.items()} == {"triplet": 0.0, "vsl": 0.0, "vsl_text": 0.0, "loss": 0.0}
    assert VSLLoss()(torch.tensor([[0.7]]), torch.tensor([[0.2]])).item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64], ids=["f16", "f32", "f64"])
@pytest.mark.parametrize("view", params((v, ("VSLCriterion", "layout (strides)" if v != "contiguous" else "dtype"))
                                         for v in ("contiguous", "transposed", "expanded columns")))
def test_criterion_value_matches_the_formulas(dtype, view):
    s = _m(6, 6, scale=0.2, dtype=dtype)
    s = s if view == "contiguous" else dict(_views(s))[view]
    c = _m(6, 6, seed=8, scale=0.2, dtype=dtype)
    out = VSLCriterion(margin=0.2, beta=10.0, tau=0.05)(s, c)
    want_vsl = oracle.loss(s, c, 0.05)
    assert out["vsl"].item() == pytest.approx(want_vsl, rel=1e-5, abs=1e-6)
    assert out["loss"].item() == pytest.approx(oracle.triplet(s) + 10 * want_vsl, rel=1e-3 if dtype == torch.float16
                                               else 1e-5)


@cell("VSLCriterion", "NaN")
@cell("VSLLoss", "NaN")
def test_modules_propagate_nan():
    s = _m(4, 4, dtype=torch.float32)
    s[1, 2] = NAN
    assert math.isnan(VSLCriterion()(s, _m(4, 4, dtype=torch.float32))["loss"].item())
    assert math.isnan(VSLLoss()(s, _m(4, 4, dtype=torch.float32)).item())


@cell("VSLLoss", "dtype", cases=2)
def test_vsl_loss_module_dtypes():
    with pytest.raises(TypeError, match=r"semantic_sims must be a floating-point tensor .* got torch\.int64"):
        VSLLoss()(_m(3, 3), torch.ones(3, 3, dtype=torch.int64))
    s, c = _m(5, 5, scale=0.3).half(), _m(5, 5, seed=9, scale=0.3).half()
    assert VSLLoss(tau=0.1)(s, c).item() == pytest.approx(oracle.loss(s, c, 0.1), rel=1e-5)


@cell("VSLLoss", "tau")
def test_vsl_loss_module_checks_tau_in_the_computation_dtype():
    """tau = 1e-39 is fine in float64 (checked at construction) but not for float32 input (forward)."""
    m = VSLLoss(tau=1e-39)
    assert m(_m(3, 3), _m(3, 3, seed=1)).item() == pytest.approx(oracle.loss(_m(3, 3), _m(3, 3, seed=1), 1e-39))
    with pytest.raises(ValueError, match="1 / tau overflows float32"):
        m(_m(3, 3, dtype=torch.float32), _m(3, 3, dtype=torch.float32))


# ------------------------------------------------------- the smoothed-rank family (issue 24)
AMONG, AMONG_OP = "vsl_ext.sigmoid_rank (among)", "torch.ops.vsl_ext.sigmoid_rank_among"
SAP, SAP_OP = "vsl_ext.smooth_ap_loss", "torch.ops.vsl_ext.smooth_ap_loss"
TAU64 = torch.tensor(1e-2, dtype=torch.float64)


def _among(r, c, seed=0):
    return torch.rand(r, c, generator=torch.Generator().manual_seed(seed)) < 0.5


def _sap_oracle(s, rel, tau=1e-2):
    import oracle as brute
    return brute.brute_smooth_ap(s.double().tolist(), rel.tolist(), tau)[0]


def _among_oracle(m, among, tau=1e-2, descending=True):
    import oracle as brute
    return torch.tensor(brute.brute_rank_among(m.double().tolist(), among.tolist(), tau, descending),
                        dtype=torch.float64)


@cell(AMONG, "dtype")
@cell(SAP, "dtype")
@pytest.mark.parametrize("bad", ["int64", "uint8", "float32", "complex64"])
def test_family_masks_must_be_bool(bad):
    mask = torch.ones(3, 4).to(getattr(torch, bad))
    with pytest.raises(TypeError, match=rf"among must be a bool tensor .* got dtype torch\.{bad}"):
        vsl_ext.sigmoid_rank(_m(3, 4), among=mask)
    with pytest.raises(TypeError, match=rf"relevant must be a bool tensor .* got dtype torch\.{bad}"):
        vsl_ext.smooth_ap_loss(_m(3, 4), mask)


@cell(AMONG_OP, "dtype")
@cell(SAP_OP, "dtype")
@pytest.mark.parametrize("bad", ["int64", "float32"])
def test_family_ops_reject_non_bool_masks(bad):
    mask = torch.ones(3, 4).to(getattr(torch, bad))
    with pytest.raises(TypeError, match="vsl_ext::sigmoid_rank_among: among must be a bool tensor"):
        OPS.sigmoid_rank_among(_m(3, 4), mask, TAU64, True, 0)
    with pytest.raises(TypeError, match="vsl_ext::smooth_ap_loss: relevant must be a bool tensor"):
        OPS.smooth_ap_loss(_m(3, 4), mask, TAU64, True, 0)


@cell(AMONG, "shape / rank")
@cell(SAP, "shape / rank")
@cell(AMONG_OP, "shape / rank")
@cell(SAP_OP, "shape / rank")
@pytest.mark.parametrize("shape", [(3, 5), (4, 3), (3,)], ids=str)
def test_family_masks_of_another_shape(shape):
    mask = torch.ones(shape, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"among must have the shape of M \(3, 4\)"):
        vsl_ext.sigmoid_rank(_m(3, 4), among=mask)
    with pytest.raises(ValueError, match=r"relevant must have the shape of sims \(3, 4\)"):
        vsl_ext.smooth_ap_loss(_m(3, 4), mask)
    with pytest.raises(ValueError, match=r"among must have the shape of m \(3, 4\)"):
        OPS.sigmoid_rank_among(_m(3, 4), mask, TAU64, True, 0)
    with pytest.raises(ValueError, match=r"relevant must have the shape of sims \(3, 4\)"):
        OPS.smooth_ap_loss(_m(3, 4), mask, TAU64, True, 0)


@cell(SAP, "shape / rank")
@pytest.mark.parametrize("shape", [(1, 7), (7, 1)], ids=str)
def test_smooth_ap_takes_any_rectangle(shape):
    s, rel = _m(*shape, scale=0.05), torch.ones(shape, dtype=torch.bool)
    rel[0, 0] = True
    assert vsl_ext.smooth_ap_loss(s, rel).item() == pytest.approx(_sap_oracle(s, rel), rel=1e-9, abs=1e-12)


@cell(AMONG, "empty")
@cell(SAP, "empty")
@pytest.mark.parametrize("shape", EMPTY, ids=str)
def test_family_rejects_empty(shape):
    with pytest.raises(ValueError, match="M must be non-empty"):
        vsl_ext.sigmoid_rank(torch.empty(shape), among=torch.ones(shape, dtype=torch.bool))
    with pytest.raises(ValueError, match="sims must be non-empty"):
        vsl_ext.smooth_ap_loss(torch.empty(shape), torch.ones(shape, dtype=torch.bool))


@cell(AMONG_OP, "empty")
@cell(SAP_OP, "empty")
@pytest.mark.parametrize("shape", EMPTY, ids=str)
def test_family_ops_on_empty_matrices(shape):
    mask = torch.ones(shape, dtype=torch.bool)
    assert OPS.sigmoid_rank_among(torch.empty(shape), mask, TAU64, True, 0).shape == shape
    with pytest.raises(ValueError, match="relevant marks no relevant reference"):  # no query has one
        OPS.smooth_ap_loss(torch.empty(shape), mask, TAU64, True, 0)
    loss, grad = OPS.smooth_ap_loss(torch.empty(0, *shape), torch.ones(0, *shape, dtype=torch.bool), TAU64, True, 0)
    assert loss.shape == (0,) and grad.shape == (0, *shape)  # no matrix at all: nothing to reject


@cell(AMONG, "n = 1")
@cell(SAP, "n = 1")
@pytest.mark.parametrize("keep", [True, False])
def test_family_of_one_entry(keep):
    m = torch.tensor([[0.3]], requires_grad=True)
    mask = torch.tensor([[keep]])
    r = vsl_ext.sigmoid_rank(m, among=mask)
    assert r.item() == 1.0
    if keep:
        loss = vsl_ext.smooth_ap_loss(m, mask)
        assert loss.item() == 0.0
        loss.backward()
        assert m.grad.item() == 0.0
    else:
        with pytest.raises(ValueError, match="relevant marks no relevant reference"):
            vsl_ext.smooth_ap_loss(m, mask)


@cell(AMONG, "device")
@cell(SAP, "device")
@cell(AMONG_OP, "device")
@cell(SAP_OP, "device")
def test_family_masks_on_another_device():
    mask = torch.ones(3, 4, dtype=torch.bool, device="meta")
    with pytest.raises(ValueError, match="among is on meta but M is on cpu"):
        vsl_ext.sigmoid_rank(_m(3, 4), among=mask)
    with pytest.raises(ValueError, match="relevant is on meta but sims is on cpu"):
        vsl_ext.smooth_ap_loss(_m(3, 4), mask)
    with pytest.raises(ValueError, match="among is on meta but m is on cpu"):
        OPS.sigmoid_rank_among(_m(3, 4), mask, TAU64, True, 0)
    with pytest.raises(ValueError, match="relevant is on meta but sims is on cpu"):
        OPS.smooth_ap_loss(_m(3, 4), mask, TAU64, True, 0)


@cell(AMONG, "layout (strides)")
@cell(SAP, "layout (strides)")
@pytest.mark.parametrize("layout", ["transposed", "sliced"])
def test_family_any_layout(layout):
    base, mask = _m(8, 10, scale=0.02), _among(8, 10)
    mask[:, 0] = True
    view = (lambda t: t.t().contiguous().t()) if layout == "transposed" else (lambda t: t.repeat_interleave(2, dim=1)[:, ::2])
    m, keep = view(base), view(mask)
    assert not m.is_contiguous() and not keep.is_contiguous()
    assert_values(vsl_ext.sigmoid_rank(m, 1e-2, among=keep), _among_oracle(base, mask))
    assert vsl_ext.smooth_ap_loss(m, keep).item() == pytest.approx(_sap_oracle(base, mask), rel=1e-9)


@cell(AMONG, "NaN")
@cell(SAP, "NaN")
def test_family_nan():
    m, mask = _m(3, 5, scale=0.02), torch.ones(3, 5, dtype=torch.bool)
    m[1, 2] = NAN
    r = vsl_ext.sigmoid_rank(m, 1e-2, among=mask)
    assert torch.isnan(r[1]).all() and torch.isfinite(r[[0, 2]]).all()
    assert math.isnan(vsl_ext.smooth_ap_loss(m, mask).item())


@cell(AMONG, "±inf")
@cell(SAP, "±inf")
@pytest.mark.parametrize("fill", [INF, -INF, "both"])
def test_family_infinities(fill):
    m, mask = _m(4, 9, scale=0.02), _among(4, 9, 3)
    mask[:, 0] = True
    m[1, :3] = INF if fill == "both" else fill
    m[2, 4::2] = -INF if fill == "both" else fill
    m[3, :] = fill if fill != "both" else INF
    for descending in (True, False):
        assert_values(vsl_ext.sigmoid_rank(m, 1e-2, descending, among=mask), _among_oracle(m, mask, 1e-2, descending))
    assert vsl_ext.smooth_ap_loss(m, mask).item() == pytest.approx(_sap_oracle(m, mask), rel=1e-9)


@cell(AMONG, "huge (1e38, dtype max)")
@cell(SAP, "huge (1e38, dtype max)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_family_huge_values(dtype):
    big = torch.finfo(dtype).max
    m = torch.tensor([[big, -big, 0.0, 1e38, -1e38]], dtype=dtype)
    mask = torch.tensor([[True, False, True, False, True]])
    assert_values(vsl_ext.sigmoid_rank(m, 1e-2, among=mask), _among_oracle(m, mask))
    assert vsl_ext.smooth_ap_loss(m, mask).item() == pytest.approx(_sap_oracle(m, mask), rel=1e-6)


@cell(AMONG, "tau")
@cell(SAP, "tau")
@cell(AMONG_OP, "tau")
@cell(SAP_OP, "tau")
@pytest.mark.parametrize("tau, message", [(0.0, "tau must be a finite number > 0"), (NAN, "tau"), (1e-45, "1 / tau")])
def test_family_rejects_bad_tau(tau, message):
    with pytest.raises(ValueError, match=message):
        vsl_ext.sigmoid_rank(_m(3, 4, dtype=torch.float32), tau, among=_among(3, 4))
    with pytest.raises(ValueError, match=message):
        vsl_ext.smooth_ap_loss(_m(3, 4, dtype=torch.float32), torch.ones(3, 4, dtype=torch.bool), tau)
    if tau != 1e-45:
        with pytest.raises(ValueError, match=message):
            OPS.sigmoid_rank_among(_m(3, 4, dtype=torch.float32), _among(3, 4), torch.tensor(tau, dtype=torch.float64), True, 0)
        with pytest.raises(ValueError, match=message):
            OPS.smooth_ap_loss(_m(3, 4, dtype=torch.float32), torch.ones(3, 4, dtype=torch.bool), torch.tensor(tau, dtype=torch.float64),
                               True, 0)


@cell(SAP, "other arguments")
@cell(SAP_OP, "other arguments")
@pytest.mark.parametrize("rows", ["none relevant", "some without", "all relevant"])
def test_smooth_ap_rows_without_positives_and_all_positive_rows(rows):
    s = _m(4, 6, scale=0.02)
    rel = _among(4, 6, 1)
    if rows == "none relevant":
        rel[:] = False
        with pytest.raises(ValueError, match="relevant marks no relevant reference in any row"):
            vsl_ext.smooth_ap_loss(s, rel)
        with pytest.raises(ValueError, match="relevant marks no relevant reference in any row"):
            OPS.smooth_ap_loss(s, rel, TAU64, True, 0)
        return
    if rows == "some without":
        rel[1:3] = False
    else:
        rel[:] = True  # every AP is 1: the loss is 0, its gradient too
    x = s.clone().requires_grad_()
    loss = vsl_ext.smooth_ap_loss(x, rel)
    assert loss.item() == pytest.approx(_sap_oracle(s, rel), rel=1e-9, abs=1e-12)
    loss.backward()
    if rows == "all relevant":
        assert loss.item() == pytest.approx(0.0, abs=1e-15) and torch.count_nonzero(x.grad) == 0
    else:
        assert torch.count_nonzero(x.grad[1:3]) == 0  # skipped rows get no gradient


@cell(AMONG, "other arguments")
@cell(AMONG_OP, "other arguments")
@pytest.mark.parametrize("descending", [True, False])
def test_among_of_nothing_and_everything(descending):
    m = _m(3, 6, scale=0.02)
    none, every = torch.zeros(3, 6, dtype=torch.bool), torch.ones(3, 6, dtype=torch.bool)
    assert torch.equal(vsl_ext.sigmoid_rank(m, 1e-2, descending, among=none), torch.ones_like(m))
    torch.testing.assert_close(vsl_ext.sigmoid_rank(m, 1e-2, descending, among=every),
                               vsl_ext.sigmoid_rank(m, 1e-2, descending))
    with pytest.raises(ValueError, match="algorithm must be one of the codes"):
        OPS.sigmoid_rank_among(m, every, TAU64, descending, 7)
