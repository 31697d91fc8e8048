"""Exact global-batch training over ``torch.distributed`` ranks (``vsl-train --global-batch``).

``torchrun --nproc_per_node K -m vsl_ext.train --data ... --model vse --global-batch`` trains on the
same global batches, with the same loss and the same parameter updates, as one process with
``--batch-size B`` (up to floating-point summation order):

* every global batch of B pairs is split into K contiguous shards, one per rank (this plays the
  part of a DistributedSampler, but keeps the single-process batch composition exactly);
* each rank encodes its shard; image and caption embeddings are gathered with autograd, so every
  rank holds the global (B, B) similarity matrix S and computes the VSE++ triplet loss on it
  (hardest negatives over the whole global batch);
* the VSL is computed row-sharded by :func:`vsl_ext.distributed.vsl_loss` (each rank ranks only
  its own rows: its O(B^3 / K) share of the work);
* gradients are averaged over ranks after every backward, like DistributedDataParallel;
* dropout masks are drawn per caption from a seed of (run seed, step, position in the global batch)
  (:mod:`.models.dropout`), in one process as in K, so dropout does not break the equality.

Only the ``vse`` model (dot-product similarity of separate embeddings) and the row VSL variant
fit this scheme; rank 0 logs, validates and writes checkpoints.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from .. import distributed
from ..distributed import gather_rows
from ..criterion import triplet_loss


@dataclass
class GlobalBatch:
    rank: int
    world: int
    owns_group: bool = False  # True when start() created the process group (close() destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, device: torch.device) -> "GlobalBatch":
        """Joins the process group torchrun describes (or one the caller already initialised)."""
        if not dist.is_initialized():
            if "WORLD_SIZE" not in os.environ:
                raise RuntimeError("--global-batch runs under torchrun (torchrun --nproc_per_node K -m vsl_ext.train "
                                   "... --global-batch); WORLD_SIZE is not set")
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            return cls(dist.get_rank(), dist.get_world_size(), owns_group=True)
        return cls(dist.get_rank(), dist.get_world_size())

    def shard(self, ids: np.ndarray) -> tuple:
        """This rank's contiguous share of a global batch: (its ids, offset of its first row)."""
        bounds = np.linspace(0, len(ids), self.world + 1).round().astype(np.int64)
        lo, hi = int(bounds[self.rank]), int(bounds[self.rank + 1])
        return ids[lo:hi], lo

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        """Waits for every rank, then destroys the process group if :meth:`start` created it.

        Without the barrier a rank that is done tears down its gloo connections while another is
        still using them, and the other process aborts at exit ("terminate called without an
        active exception")."""
        dist.barrier()
        if self.owns_group:
            dist.destroy_process_group()

    def average_gradients(self, params: List[Tensor]) -> None:
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def global_batch_losses(model, batch: dict, offset: int, image_sem: Optional[Tensor], margin: float,
                        max_violation: bool, alpha: float, beta: float, tau: float, device: torch.device,
                        ctx: GlobalBatch, seeds: Optional[np.ndarray] = None) -> Dict[str, Tensor]:
    """Losses of one global batch from this rank's shard.

    ``seeds``: (local B,) dropout seeds of this shard's captions, those of their positions
    ``offset ..`` in the global batch (:func:`..models.dropout.sample_seeds`).

    Returns ``objective`` (what this rank back-propagates: alpha * triplet + beta * world * L_vs, so
    that averaging gradients over ranks yields the exact global-batch gradient) and the global
    ``loss``, ``triplet`` and ``vsl`` values (the same on every rank).
    """
    img = model.encode_images(batch["images"].to(device))
    cap = model.encode_captions(batch["tokens"].to(device), batch["lengths"].to(device), seeds)
    sims = gather_rows(img) @ gather_rows(cap).t()  # (B, B), identical on every rank
    triplet = triplet_loss(sims, margin, max_violation)
    out = {"triplet": triplet, "vsl": sims.new_zeros(())}
    # Every rank back-propagates the whole triplet; averaging over ranks leaves it once.
    objective = alpha * triplet
    if beta > 0:
        rows = slice(offset, offset + img.shape[0])
        out["vsl"] = distributed.vsl_loss(sims[rows], image_sem[rows], tau)
        objective = objective + beta * ctx.world * out["vsl"]
    out["loss"] = alpha * triplet + beta * out["vsl"]
    out["objective"] = objective
    return out
