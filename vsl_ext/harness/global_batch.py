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

A group that :meth:`GlobalBatch.start` creates is destroyed before the interpreter shuts down on
every exit path: :meth:`GlobalBatch.close` at the end of a run (after a barrier), and an ``atexit``
hook when an exception or KeyboardInterrupt ends the process (no barrier: the other ranks may never
reach it; their pending collective fails once this rank's connections close, and they exit too).
A gloo group still alive during interpreter finalization aborts the process (see
:mod:`vsl_ext.distributed`).
"""
from __future__ import annotations

import atexit
import gc
import os
import sys
import traceback
import warnings
import weakref
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from .. import distributed
from ..criterion import triplet_loss
from ..distributed import collective, gather_rows


def _destroy_group_at_exit() -> None:
    """atexit hook of a group that :meth:`GlobalBatch.start` created and :meth:`GlobalBatch.close`
    did not destroy (an exception or KeyboardInterrupt ended the run). The uncaught exception's
    frames, kept for post-mortem debugging, are cleared first: one of them may hold the group."""
    if dist.is_available() and dist.is_initialized():
        last_exc = getattr(sys, "last_exc", None)
        for tb in (getattr(sys, "last_traceback", None), getattr(last_exc, "__traceback__", None)):
            if tb is not None:
                traceback.clear_frames(tb)
        _destroy_default_group()


def _destroy_default_group() -> None:
    """destroy_process_group(), and a warning if something still holds the group afterwards (its
    gloo threads then live on into interpreter shutdown, where they can abort the process)."""
    group = weakref.ref(dist.group.WORLD)
    dist.destroy_process_group()
    if group() is not None:
        gc.collect()
    if group() is not None:
        warnings.warn("the torch.distributed process group is still referenced after destroy_process_group(), so "
                      "its threads outlive it; was torch.distributed.nn.functional first imported after "
                      "init_process_group? (see vsl_ext.distributed)", RuntimeWarning, stacklevel=3)


@dataclass
class GlobalBatch:
    rank: int
    world: int
    owns_group: bool = False  # True when start() created the process group (close() destroys it)
    closed: bool = False

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
            # vsl_ext.distributed (imported above) has imported torch.distributed.nn.functional already,
            # so nothing binds the group created here as a default argument (see its docstring).
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            atexit.register(_destroy_group_at_exit)
            return cls(dist.get_rank(), dist.get_world_size(), owns_group=True)
        return cls(dist.get_rank(), dist.get_world_size())

    def shard(self, ids: np.ndarray) -> tuple:
        """This rank's contiguous share of a global batch: (its ids, offset of its first row)."""
        bounds = np.linspace(0, len(ids), self.world + 1).round().astype(np.int64)
        lo, hi = int(bounds[self.rank]), int(bounds[self.rank + 1])
        return ids[lo:hi], lo

    def barrier(self) -> None:
        collective(dist.barrier)

    def close(self) -> None:
        """End of a run: waits for every rank (a rank that is done must not close its connections
        while another still uses them), then destroys the process group if :meth:`start` created
        it. Runs once; an exception or KeyboardInterrupt that skips it leaves the group to the
        ``atexit`` hook."""
        if self.closed:
            return
        self.closed = True
        collective(dist.barrier)
        if self.owns_group and dist.is_initialized():
            _destroy_default_group()

    def average_gradients(self, params: List[Tensor]) -> None:
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        collective(dist.all_reduce, flat)
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
