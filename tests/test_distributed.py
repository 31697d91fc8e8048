"""Row-sharded global-batch VSL over gloo processes equals the single-process full batch."""
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import gloo_worker
import vsl_ext
import vsl_ext.distributed

# (shards: rows per rank, dtype, algorithm, semantic_grad, masked: -inf padding captions and +inf
# overflows in S); one spawned process group per world size.
CASES = {
    2: [([40, 40], torch.float32, "auto", False, False), ([1, 79], torch.float32, "auto", True, False),
        ([70, 10], torch.float64, "dense", False, False), ([33, 47], torch.float32, "auto", True, True)],
    3: [([30, 30, 30], torch.float32, "auto", False, False), ([17, 0, 64], torch.float32, "sorted", True, False),
        ([5, 12, 3], torch.float64, "dense", True, False), ([20, 1, 59], torch.float64, "sorted", True, True),
        ([4, 6, 10], torch.float32, "dense", False, True)],
}


def _global_batch(n, seed=0, masked=False):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, n, generator=g, dtype=torch.float64) * 5e-3
    c = torch.randint(0, 4, (n, n), generator=g).double() * 2e-3
    if masked:
        s[:, n - n // 5:] = -float("inf")  # padding captions
        s[::3, 2] = float("inf")           # overflowed similarities
    return s, (c + c.t()) / 2


def _check_case(rank, world, shards, dtype, algorithm, semantic_grad, masked):
    n = sum(shards)
    s, c = (t.to(dtype) for t in _global_batch(n, masked=masked))
    full_s = s.clone().requires_grad_()
    full_c = c.clone().requires_grad_(semantic_grad)
    full = vsl_ext.vsl_loss(full_s, full_c, algorithm=algorithm)
    full.backward()
    lo = sum(shards[:rank])
    hi = lo + shards[rank]
    local_s = s[lo:hi].clone().requires_grad_()
    local_c = c[lo:hi].clone().requires_grad_(semantic_grad)
    loss = vsl_ext.distributed.vsl_loss(local_s, local_c, algorithm=algorithm)
    loss.backward()
    assert torch.isfinite(full) and torch.isfinite(full_s.grad).all()
    torch.testing.assert_close(loss, full, rtol=1e-5, atol=1e-7)
    scale = full_s.grad.abs().max().item()
    torch.testing.assert_close(local_s.grad, full_s.grad[lo:hi], rtol=1e-5, atol=1e-5 * scale)
    if semantic_grad:
        scale = full_c.grad.abs().max().item()
        torch.testing.assert_close(local_c.grad, full_c.grad[lo:hi], rtol=1e-5, atol=1e-5 * scale)
    values = [torch.zeros((), dtype=loss.dtype) for _ in range(world)]
    dist.all_gather(values, loss.detach())
    assert all(v.item() == loss.item() for v in values), "every rank reports the same loss"


def _cases(rank, world):
    for case in CASES[world]:
        _check_case(rank, world, *case)
    with pytest.raises(ValueError, match="must be square"):
        vsl_ext.distributed.vsl_loss(torch.rand(3, 10), torch.rand(3, 10))
    with pytest.raises(ValueError, match="public-code"):
        vsl_ext.distributed.vsl_loss(torch.rand(5, 10), torch.rand(5, 10), variant="public-code")
    # one rank's bad input: it raises its own error, the others learn of it instead of hanging
    rows = 10 // world + (rank < 10 % world)
    bad = torch.ones(rows, 10, dtype=torch.int64) if rank == 0 else torch.rand(rows, 10)
    with pytest.raises(TypeError if rank == 0 else ValueError, match="floating-point" if rank == 0 else "other rank"):
        vsl_ext.distributed.vsl_loss(bad, torch.rand(rows, 10))


@pytest.mark.parametrize("world", sorted(CASES))
def test_sharded_equals_full_batch(world):
    """Even and uneven shards, a rank with one row and one with none, float32/64, both CPU paths,
    gradients to S and C, S with -inf-masked captions and +inf entries; bad shards and the
    public-code variant are rejected on every rank."""
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(gloo_worker.run, args=(world, os.path.join(d, "init"), _cases), nprocs=world, join=True)


def test_needs_a_process_group():
    with pytest.raises(RuntimeError, match="init_process_group"):
        vsl_ext.distributed.vsl_loss(torch.rand(2, 2), torch.rand(2, 2))
