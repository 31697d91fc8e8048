"""Dropout whose mask for each sample is drawn from that sample's own seed.

``nn.Dropout`` draws the masks of a whole batch from one generator, so the mask of a sample
depends on where in the batch it sits and on which other samples the process holds: two ranks
that each encode half of a global batch draw different masks than one process encoding all of it.
:class:`SampleDropout` draws the mask of sample ``b`` from a generator seeded with ``seeds[b]``
and shaped by that sample alone (its length x features), so any split of a batch over processes
gives every sample the same mask. :func:`sample_seeds` derives the seeds from the run's seed, the
optimisation step and each sample's position in the (global) batch.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function (Steele, Lea, Flood 2014) on uint64 arrays (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def sample_seeds(run_seed: int, step: int, positions) -> np.ndarray:
    """uint64 (B,) seeds, one per sample: a hash of (run seed, step, position in the global batch).

    Args:
        run_seed: the run's ``--seed`` (any int; used modulo 2**64).
        step: the optimisation step counted over the whole run (the trainer's ``global_step``).
        positions: int (B,) positions of the samples in the global batch (0 .. global B - 1).
    """
    pos = np.asarray(positions, dtype=np.int64).reshape(-1)
    if pos.size and pos.min() < 0:
        raise ValueError("positions must be >= 0")
    with np.errstate(over="ignore"):
        h = _splitmix64(np.full(pos.shape, np.uint64(int(run_seed) % (1 << 64))) + _GOLDEN)
        h = _splitmix64(h ^ (np.uint64(int(step) % (1 << 64)) + _GOLDEN))
        return _splitmix64(h ^ (pos.astype(np.uint64) + _GOLDEN))


class SampleDropout(nn.Module):
    """Dropout on (B, L, D) sequences with per-sample masks.

    ``forward(x, lengths, seeds)``: in training mode with ``seeds`` (B,) given, the keep-mask of
    sample ``b`` is ``torch.rand((lengths[b], D), generator=Generator().manual_seed(seeds[b])) >= p``
    (positions past ``lengths[b]`` are kept; they are padding), and kept values are scaled by
    ``1 / (1 - p)`` as in ``nn.Dropout``. Without ``seeds`` it is ``nn.Dropout`` (torch's global
    generator); in eval mode or with ``p == 0`` it is the identity. Masks are drawn on the CPU and
    moved to ``x``'s device (B x L x D booleans per step).
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = float(p)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: Tensor, lengths: Tensor, seeds: Optional[np.ndarray] = None) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if seeds is None:
            return F.dropout(x, self.p, True)
        if self.p == 1.0:
            return x * 0.0
        seeds = np.asarray(seeds).reshape(-1)
        B, L, D = x.shape
        if len(seeds) != B:
            raise ValueError(f"seeds must hold one seed per sample ({B}), got {len(seeds)}")
        keep = torch.ones(B, L, D, dtype=torch.bool)
        for b, (seed, n) in enumerate(zip(seeds.tolist(), lengths.tolist())):
            g = torch.Generator().manual_seed(int(seed))
            keep[b, :n] = torch.rand((n, D), generator=g) >= self.p
        return x * keep.to(x.device) / (1.0 - self.p)
