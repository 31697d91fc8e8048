"""``python -m vsl_ext``: it passes on a working install, fails naming the kernel when one computes a
wrong result (planted here), and its float64 oracles agree with independent ones (the whole-matrix
reference, scikit-learn, pycocoevalcap, hand-computed values)."""
import io
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import vsl_ext
from vsl_ext import caption_index, kernels, reference, self_check

LAST_PASS = "vsl_ext self-check: PASS"


def _python(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter outside the repository (so it imports the installed package
    the way a user's program does; the source tree when it is the editable install)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd="/",
                          env=env)


def _run(**kw) -> tuple:
    out = io.StringIO()
    ok = self_check.run(out, timing=False, **kw)
    return ok, out.getvalue().splitlines()


def test_python_m_vsl_ext_passes_and_describes_the_install():
    proc = _python("import runpy; runpy.run_module('vsl_ext', run_name='__main__')")
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lines[-1] == LAST_PASS
    text = proc.stdout
    assert f"vsl_ext {vsl_ext.__version__} self-check" in lines[0]
    assert f"torch {torch.__version__}" in text and "threads: torch" in text and "cpu_isa=" in text
    assert "timing: cpu vsl_loss forward+backward, n = 1024:" in text
    for name in ("cpu sigmoid_rank sorted ascending backward", "cpu vsl_loss public-code dense backward",
                 "cpu CaptionIndex cider-d"):
        assert any(line.split()[:1] == ["ok"] and name in line for line in lines), name
    if not torch.cuda.is_available():
        assert "CUDA not checked: " in text


def test_a_planted_wrong_rank_gradient_fails_naming_the_kernel():
    """A native rank backward that is wrong by 1e-3 in one entry: exit code 1, and the last line names
    the sigmoid_rank backward checks and the one other check built on that kernel (Smooth-AP's sorted
    algorithm takes its gradient through the rank backward), nothing else."""
    code = textwrap.dedent("""
        import runpy
        import sys
        from vsl_ext.kernels import cpu

        right = cpu.sigmoid_rank_backward

        def wrong(ranked, compared, grad_ranks, grad_ranked, *args):
            right(ranked, compared, grad_ranks, grad_ranked, *args)
            grad_ranked.view(-1)[-1] += 1e-3 * grad_ranked.abs().max()

        cpu.sigmoid_rank_backward = wrong
        sys.argv = ["vsl_ext", "--no-timing"]
        runpy.run_module("vsl_ext", run_name="__main__")
    """)
    proc = _python(code)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    last = proc.stdout.splitlines()[-1]
    assert last.startswith("vsl_ext self-check: FAIL (")
    failed = last[len("vsl_ext self-check: FAIL ("):-1].split("; ")
    assert sorted(failed) == sorted([f"cpu sigmoid_rank {a} {d} backward" for a in ("dense", "sorted")
                                     for d in ("descending", "ascending")] + ["cpu smooth_ap_loss sorted backward"])


def test_a_planted_wrong_loss_fails_naming_it(monkeypatch):
    right = kernels.cpu.vsl_loss_ratio_sum

    def wrong(sims, sims_compared, semantic, semantic_compared, row_sums, *args):
        right(sims, sims_compared, semantic, semantic_compared, row_sums, *args)
        if sims.shape[0] == 70 and sims_compared is not None:  # one size, the public-code variant
            row_sums[3] += 1.0  # the loss is off by 1 / 70^2 = 2e-4
    monkeypatch.setattr(kernels.cpu, "vsl_loss_ratio_sum", wrong)
    ok, lines = _run(only=["vsl_loss"])
    assert not ok
    assert lines[-1] == ("vsl_ext self-check: FAIL (cpu vsl_loss public-code dense forward; "
                         "cpu vsl_loss public-code sorted forward)")
    assert any("loss n=70" in line for line in lines)


def test_a_planted_wrong_similarity_fails_naming_the_mode(monkeypatch):
    right = caption_index.CaptionIndex._cider_matrix

    def wrong(self, caps, gptr, dev):
        out = right(self, caps, gptr, dev)
        out[1, 0] += 1e-3
        return out
    monkeypatch.setattr(caption_index.CaptionIndex, "_cider_matrix", wrong)
    ok, lines = _run(only=["CaptionIndex"])
    assert not ok and lines[-1] == "vsl_ext self-check: FAIL (cpu CaptionIndex cider-d)"


def test_a_planted_wrong_smooth_ap_gradient_fails_naming_it(monkeypatch):
    right = kernels.cpu.smooth_ap_loss

    def wrong(sims, relevant, weights, row_sums, grad_sims, tau):
        right(sims, relevant, weights, row_sums, grad_sims, tau)
        if grad_sims is not None:
            grad_sims.view(-1)[-1] += 1e-3 * grad_sims.abs().max()
    monkeypatch.setattr(kernels.cpu, "smooth_ap_loss", wrong)
    ok, lines = _run(only=["smooth_ap_loss"])
    assert not ok and lines[-1] == "vsl_ext self-check: FAIL (cpu smooth_ap_loss dense backward)"


def test_a_kernel_that_raises_fails_naming_its_family(monkeypatch):
    def broken(*args):
        raise RuntimeError("planted")
    monkeypatch.setattr(kernels.cpu, "sigmoid_rank_forward", broken)
    ok, lines = _run(only=["sigmoid_rank"])
    assert not ok and lines[-1] == "vsl_ext self-check: FAIL (cpu sigmoid_rank)"
    assert any("raised RuntimeError: planted" in line for line in lines)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is checked on this machine")
def test_require_cuda_fails_where_cuda_cannot_be_checked():
    ok, lines = _run(only=[], require_cuda=True)
    assert not ok and lines[-1].startswith("vsl_ext self-check: FAIL (CUDA not checked: ")


def test_compare_fails_on_nan_and_on_a_wrong_shape():
    check = self_check.Check("x")
    check.compare("a", torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0 + 1e-6]), 1e-5, 0.0)
    assert check.passed and 0 < check.worst < 1
    check.compare("b", torch.tensor([float("nan")]), torch.tensor([1.0]), 1e-5, 1e-5)
    assert not check.passed and check.worst == math.inf
    other = self_check.Check("y")
    other.compare("c", torch.zeros(2, 3), torch.zeros(3, 2), 1e-5, 1e-5)
    assert not other.passed


def test_the_gpu_checks_pass_on_the_emulated_cuda_kernels(monkeypatch, emulator):
    """The checks a GPU gets, on the CUDA kernels' source compiled for the CPU (tests/cuda_emu): each
    kernel family against the float64 formula at the self-check's sizes (rows past the 1,024-column
    tile and CUDA's 2,048-column switch; the loss to n = 130), and the comparison with the CPU kernels
    runs (here against the emulator itself: both calls take CPU tensors)."""
    from conftest import route_to_emulator

    route_to_emulator(monkeypatch, emulator)
    checks = {}
    self_check._rank_checks("cpu", checks, seed=11, versus_cpu=True)
    self_check._loss_checks("cpu", checks, seed=23, versus_cpu=True)
    self_check._smooth_ap_checks("cpu", checks, seed=31, versus_cpu=True)
    self_check._caption_checks("cpu", checks, versus_cpu=True)
    assert len(checks) == 22
    assert [c.name for c in checks.values() if not c.passed] == []


# -------------------------------------------------------------------------------- the oracles themselves
@pytest.mark.parametrize("variant", ["row", "public-code"])
def test_loss_formula_by_row_blocks_equals_the_whole_matrix_reference(monkeypatch, variant):
    monkeypatch.setattr(self_check, "ROW_BLOCK_ELEMENTS", 2 * 9 * 9)  # blocks of 2 rows
    s, c = self_check.loss_inputs(9, 3)
    s[0, 4] = s[4, 0] = float(s[2, 2])  # equal values across the transposition
    x, y = s.double().requires_grad_(), c.double().requires_grad_()
    whole = (reference.vsl_loss if variant == "row" else reference.public_code_vsl_loss)(x, y, self_check.TAU)
    ds, dc = torch.autograd.grad(whole, (x, y))
    loss, ds_blocks, dc_blocks = self_check.loss_formula(s, c, variant)
    assert loss == pytest.approx(float(whole.detach()), rel=1e-13)
    torch.testing.assert_close(ds_blocks, ds, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dc_blocks, dc, rtol=1e-12, atol=1e-12)


def test_rank_formula_by_row_blocks_equals_the_whole_matrix_reference(monkeypatch):
    monkeypatch.setattr(self_check, "ROW_BLOCK_ELEMENTS", 11 * 11)  # one row per block
    m = self_check.rank_input((4, 11), 5)
    grad = torch.randn(4, 11, generator=torch.Generator().manual_seed(0))
    x = m.double().requires_grad_()
    ranks = reference.sigmoid_rank(x, self_check.TAU, False)
    (dm,) = torch.autograd.grad(ranks, x, grad.double())
    got_ranks, got_dm = self_check.rank_formula(m, grad, False)
    torch.testing.assert_close(got_ranks, ranks.detach(), rtol=0, atol=0)
    torch.testing.assert_close(got_dm, dm, rtol=1e-14, atol=1e-14)


def test_tfidf_formula_matches_scikit_learn():
    text = pytest.importorskip("sklearn.feature_extraction.text")
    groups = self_check.CAPTIONS
    captions = [c for g in groups for c in g]
    X = text.TfidfVectorizer().fit_transform(captions).toarray()
    owner = np.array([i for i, g in enumerate(groups) for _ in g])
    images = np.stack([X[owner == i].mean(axis=0) for i in range(len(groups))])
    ids, cids = [0, 3, 1, 3], [2, 0, 7, 5]
    cap_sim, img_sim = self_check.tfidf_similarity(groups, cids, ids)
    np.testing.assert_allclose(cap_sim, X[cids] @ X[cids].T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(img_sim, images[ids] @ images[ids].T, rtol=0, atol=1e-12)


def test_cider_d_formula_matches_pycocoevalcap_and_a_hand_value():
    cap_sim, img_sim = self_check.cider_d_similarity([["a b"], ["c d"]], [0, 1], [0, 1])
    np.testing.assert_array_equal(cap_sim, [[5.0, 0.0], [0.0, 5.0]])  # 10 x (1 + 1 + 0 + 0) / 4
    np.testing.assert_array_equal(img_sim, cap_sim)
    cider = pytest.importorskip("pycocoevalcap.cider.cider")
    # pycocoevalcap scores a candidate against its image's references (document frequencies over the
    # images' reference sets, the corpus here): the mean of the caption similarity over those references.
    groups = self_check.CAPTIONS
    captions = [c for g in groups for c in g]
    starts = np.cumsum([0] + [len(g) for g in groups])
    candidate = [1, 4, 0, 11, 9]  # a corpus caption per image (image 3's own caption 11 among them)
    _, scores = cider.Cider().compute_score({i: list(g) for i, g in enumerate(groups)},
                                            {i: [captions[p]] for i, p in enumerate(candidate)})
    cap_sim, _ = self_check.cider_d_similarity(groups, list(range(len(captions))), [])
    want = [cap_sim[p, starts[i]:starts[i + 1]].mean() for i, p in enumerate(candidate)]
    np.testing.assert_allclose(scores, want, rtol=1e-9, atol=1e-12)
