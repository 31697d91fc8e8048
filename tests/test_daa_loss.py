"""DAA (Li et al., NeurIPS 2022) as a preset of the VSL (vsl_ext.daa_loss, issue 24 item 4) against
transcriptions of its public code (VL-Group/2022-NeurIPS-DAA), to 1e-5: SGRAF-DAA's Loss.DAA (both
directions, tau 0.001, weight 25) and PCME-DAA's coco_DAA (tau 0.01 on its own score layout)."""
import pytest
import torch

import vsl_ext


class _SgrafDaaLoss:
    """Transcription (test oracle only) of the DAA term of ``Loss`` in VL-Group/2022-NeurIPS-DAA
    model.py (``sigmoid``, ``DAA``, and the two calls of ``forward``), with ``.to('cuda')`` dropped."""

    def __init__(self, daa_weight=25):
        self.daa_weight = daa_weight

    def sigmoid(self, tensor, temp=0.01):
        exponent = -tensor / temp
        exponent = torch.clamp(exponent, min=-50, max=50)
        y = 1.0 / (1.0 + torch.exp(exponent))
        return y

    def DAA(self, scores, sems, temp=0.001):
        N = len(scores)
        score_broad = scores.unsqueeze(-1)
        score_expand = scores[None, :, :]
        score_diff = score_broad - score_expand
        sem_broad = sems.unsqueeze(-1)
        sem_expand = sems[None, :, :]
        sem_diff = sem_broad - sem_expand
        diag_mask = (1 - torch.eye(N, dtype=scores.dtype)).unsqueeze(1)
        sem_rank = diag_mask * self.sigmoid(tensor=sem_diff, temp=0.001)
        sem_rank_all = sem_rank.sum(0) + 1
        score_rank = diag_mask * self.sigmoid(tensor=score_diff, temp=0.001)
        score_rank_all = score_rank.sum(0) + 1
        min_rank = torch.min(sem_rank_all, score_rank_all)
        max_rank = torch.max(sem_rank_all, score_rank_all)
        ASP = (min_rank / max_rank).sum() / (N ** 2)
        return self.daa_weight * (1 - ASP)

    def __call__(self, scores, sems):
        return self.DAA(scores, sems) + self.DAA(scores.t(), sems.t())


def _pcme_coco_daa(input1, input2, cider_map):
    """Transcription (test oracle only) of ``DAA.coco_DAA`` of the PCME-based DAA code, with
    ``.to('cuda')`` dropped; note that it reads ``input1`` for both sides of the score (as published)."""
    def sigmoid(tensor, temp):
        exponent = -tensor / temp
        exponent = torch.clamp(exponent, min=-50, max=50)
        y = 1.0 / (1.0 + torch.exp(exponent))
        return y

    sample_num = input1.shape[1]
    input1 = input1.view(-1, input1.shape[-1])
    input2 = input1.view(-1, input2.shape[-1]).t()
    N = len(input1)
    cider_map = cider_map.unsqueeze(-1).repeat(1, 1, sample_num).view(-1, N)
    cider_map = cider_map.unsqueeze(1).repeat(1, sample_num, 1).view(N, -1)
    score = torch.mm(input1, input2)
    score_broad = score.unsqueeze(-1)
    score_expand = score[None, :, :]
    score_diff = score_broad - score_expand
    cider_broad = cider_map.unsqueeze(-1)
    cider_expand = cider_map[None, :, :]
    cider_diff = cider_broad - cider_expand
    diag_mask = (1 - torch.eye(N, dtype=score.dtype)).unsqueeze(1)
    cider_rank = diag_mask * sigmoid(tensor=cider_diff, temp=0.01)
    cider_rank_all = cider_rank.sum(0) + 1
    score_rank = diag_mask * sigmoid(tensor=score_diff, temp=0.01)
    score_rank_all = score_rank.sum(0) + 1
    min_rank = torch.min(cider_rank_all, score_rank_all)
    max_rank = torch.max(cider_rank_all, score_rank_all)
    ASP = (min_rank / max_rank).sum() / (N ** 2)
    return 1 - ASP


@pytest.mark.parametrize("n", [2, 8, 33])
@pytest.mark.parametrize("algorithm", ["dense", "sorted"])
def test_sgraf_daa(n, algorithm):
    g = torch.Generator().manual_seed(n)
    scores = (torch.rand(n, n, generator=g, dtype=torch.float64) * 0.01 + 0.5).requires_grad_()  # SGRAF: sigmoid
    sems = torch.rand(n, n, generator=g, dtype=torch.float64) * 0.01  # CIDEr
    expected = _SgrafDaaLoss()(scores, sems)
    (ge,) = torch.autograd.grad(expected, scores)
    ours = vsl_ext.daa_loss(scores, sems, algorithm=algorithm)
    assert abs(ours.item() - expected.item()) <= 1e-5
    torch.testing.assert_close(torch.autograd.grad(ours, scores)[0], ge, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch, samples", [(4, 1), (5, 3), (8, 7)])
def test_pcme_coco_daa(batch, samples):
    g = torch.Generator().manual_seed(batch * samples)
    x = torch.nn.functional.normalize(torch.randn(batch, samples, 16, generator=g, dtype=torch.float64), dim=-1)
    x.requires_grad_()
    other = torch.randn(batch, samples, 16, generator=g, dtype=torch.float64)  # read for its shape only
    cider = torch.rand(batch, batch, generator=g, dtype=torch.float64)
    expected = _pcme_coco_daa(x, other, cider)
    (ge,) = torch.autograd.grad(expected, x)
    flat = x.view(-1, 16)
    c = cider.repeat_interleave(samples, 0).repeat_interleave(samples, 1)
    ours = vsl_ext.daa_loss(flat @ flat.t(), c, tau=0.01, weight=1.0, text_side=False)
    assert abs(ours.item() - expected.item()) <= 1e-5
    torch.testing.assert_close(torch.autograd.grad(ours, x)[0], ge, rtol=1e-5, atol=1e-5)


def test_float32_agrees_too():
    g = torch.Generator().manual_seed(0)
    scores, sems = torch.rand(16, 16, generator=g) * 0.01, torch.rand(16, 16, generator=g) * 0.01
    assert vsl_ext.daa_loss(scores, sems).item() == pytest.approx(_SgrafDaaLoss()(scores, sems).item(), abs=1e-5)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"weight": "25"}, TypeError, "weight must be a finite real number"),
    ({"weight": float("inf")}, TypeError, "weight must be a finite real number"),
    ({"text_side": 1}, TypeError, "text_side must be a bool"),
    ({"tau": 0.0}, ValueError, "tau"),
])
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        vsl_ext.daa_loss(torch.zeros(3, 3), torch.zeros(3, 3), **kwargs)


def test_rectangular_scores_are_rejected():
    with pytest.raises(ValueError, match="square"):
        vsl_ext.daa_loss(torch.zeros(3, 4), torch.zeros(3, 4))


@pytest.mark.parametrize("args, error, message", [
    ((torch.zeros(4), torch.zeros(4, 4)), ValueError, "^sims must be a 2-D matrix"),
    ((torch.zeros(4, 4), torch.zeros(3, 4)), ValueError, "^semantic_sims must have the shape of sims"),
    (([[0.0]], torch.zeros(1, 1)), TypeError, "^sims must be a torch.Tensor"),
])
def test_bad_matrices_get_errors_naming_the_argument(args, error, message):
    with pytest.raises(error, match=message):
        vsl_ext.daa_loss(*args)
    with pytest.raises(error, match=message):     # by keyword too: the names in the error are the parameters'
        vsl_ext.daa_loss(sims=args[0], semantic_sims=args[1])
