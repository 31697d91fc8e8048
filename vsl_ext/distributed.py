"""Exact global-batch VSL with the rows of S sharded over ``torch.distributed`` ranks.

Every row of the VSL is independent, so a global batch of N images can be split by rows: rank r
holds its images' rows of S against all N (gathered) captions and the same rows of C, computes
its rows' sum of ``min(SR, CR) / max(SR, CR)``, and one all-reduce of that scalar gives the exact
global loss ``1 - total / N^2`` on every rank.

Gradients: ``loss.backward()`` on rank r gives exactly the rows of the full-batch ``dL/dS`` that
rank r holds (no cross-rank terms are needed, the rows are independent). Gradients that reach
shared parameters through an autograd all-gather of the caption embeddings
(:func:`gather_rows`) are summed over ranks by that gather's backward.
DistributedDataParallel then *averages* parameter gradients over ranks, so multiply the loss by the
world size before ``backward()`` to train on the exact global-batch gradient (the training harness
does).

Leaving a process group (every process, every exit path): call
``torch.distributed.destroy_process_group()`` before the interpreter shuts down, also when an
exception or KeyboardInterrupt ends the script (``try: ... finally: destroy_process_group()``).
A gloo group still alive when Python finalizes can abort the process ("terminate called without
an active exception", torch 2.13): its worker threads free the tensors of collectives they ran,
which needs the GIL, and a thread that asks for the GIL during finalization is ended by
``pthread_exit``, whose unwinding through a noexcept C++ frame calls ``std::terminate``.
``destroy_process_group()`` prevents that only if nothing else holds the group, so

* import this module before ``init_process_group``: it imports ``torch.distributed.nn.functional``
  first. That module binds the live default group as the default argument of its functions when
  it is imported after the group exists (``torch._dynamo``, which the first VSL call imports,
  imports it), and those references keep the group and its threads alive for good;
* the collectives here go through :func:`collective`, whose exceptions hold no torch frames (a
  failed collective's frame holds the group while its traceback lives).
"""
from __future__ import annotations

import torch
import torch.distributed as dist

# Imported before any process group exists, so its functions' ``group=group.WORLD`` defaults are
# None and not the live group (see the module docstring): destroy_process_group() then frees it.
import torch.distributed.nn.functional  # noqa: F401
from torch import Tensor

from . import _validate
from .ops.vsl_loss import prepare, ratio_sum


def collective(fn, *args, **kwargs):
    """Runs the ``torch.distributed`` collective ``fn(*args, **kwargs)`` and returns its result.

    If it fails (a RuntimeError, e.g. another rank ended or died and closed its connections) or a
    KeyboardInterrupt arrives while it waits, a new exception of that kind (same message) is
    raised without torch's frames. Those frames hold the process group, and as long as a traceback
    keeps them (an exception handled in a ``finally``, or the last uncaught one at interpreter
    exit), ``destroy_process_group()`` cannot free the group, whose gloo threads then live on into
    interpreter shutdown (see the module docstring).
    """
    try:
        return fn(*args, **kwargs)
    except RuntimeError as exc:
        error = RuntimeError(f"torch.distributed.{getattr(fn, '__name__', fn)} failed: {exc}")
    except KeyboardInterrupt:
        error = KeyboardInterrupt()
    raise error  # outside the handlers: no __context__ that would keep torch's frames


def vsl_loss(local_sims: Tensor, local_semantic_sims: Tensor, tau: float = 1e-3, group=None,
             variant: str = "row", *, algorithm: str = "auto") -> Tensor:
    """Global-batch VSL from this rank's rows.

    Args:
        local_sims: (r, N) this rank's rows of the global (N, N) image-text similarity matrix S
            (its images against all N captions of the global batch, in global order). r may
            differ between ranks and may be 0; the ranks' r must add up to N.
        local_semantic_sims: (r, N) the same rows of the global semantic similarity matrix C.
        tau: sigmoid temperature (> 0).
        group: process group (default: the world).
        variant: only "row": the published code's variant ranks S against its columns, which
            are spread over ranks, so it is not row-local.

    Returns:
        The global L_vs, the same scalar on every rank (float32, float64 for float64 input).
        Infinite and NaN entries are treated as by :func:`vsl_ext.vsl_loss`.

    Raises:
        On every rank, never leaving one waiting: the rank whose arguments are bad raises their error
        (ValueError / TypeError naming the argument, as :func:`vsl_ext.vsl_loss`), the others a
        ValueError saying that another rank's inputs failed; ranks that disagree on the number of
        columns N or on tau, or whose rows do not add up to N, all raise ValueError saying so.
        RuntimeError without a process group.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("vsl_ext.distributed.vsl_loss needs an initialised torch.distributed process group "
                           "(torch.distributed.init_process_group); use vsl_ext.vsl_loss in a single process")
    # Every local check runs before the first collective, whose second entry tells the other ranks
    # that one rank's inputs failed: all raise, none waits forever in a collective.
    problem = None
    try:
        if variant == "public-code":
            raise ValueError("variant='public-code' ranks S[b, c] against column b of S, which is spread over all "
                             "ranks, so it cannot be computed from row shards; use variant='row'")
        _validate.choice("variant", variant, ("row",))
        for name, t in (("local_sims", local_sims), ("local_semantic_sims", local_semantic_sims)):
            if not isinstance(t, Tensor) or t.dim() != 2:
                raise ValueError(f"{name} must be a 2-D (rows, N) tensor, got "
                                 f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}")
        if local_sims.shape[0] == 0:
            _validate.same_shape_and_device("local_semantic_sims", local_semantic_sims, "local_sims", local_sims)
            tau = _validate.tau(tau, _validate.compute_dtype(local_sims, local_semantic_sims))
            _validate.algorithm(algorithm)
        else:   # the checks of prepare(), first under this function's argument names
            _validate.matrix("local_sims", local_sims)
            _validate.matrix("local_semantic_sims", local_semantic_sims)
            _validate.same_shape_and_device("local_semantic_sims", local_semantic_sims, "local_sims", local_sims)
            s, c, tau, algo = prepare(local_sims, local_semantic_sims, tau, variant, algorithm)
    except (ValueError, TypeError) as exc:
        problem = exc
    device = local_sims.device if isinstance(local_sims, Tensor) else torch.device("cpu")
    # One collective tells every rank what every other holds: (rows, failed, columns, tau). A rank
    # that disagrees with another (columns: the global N; tau) would otherwise compute another loss
    # or leave the others waiting in the next collective.
    rows = local_sims.shape[0] if problem is None else 0
    cols = local_sims.shape[1] if problem is None else -1
    mine = torch.tensor([rows, float(problem is not None), cols, -1.0], dtype=torch.float64, device=device)
    if problem is None:  # tau: a float, or (traced) a tensor the graph carries
        mine[3] = tau
    world = dist.get_world_size(group)
    everyone = [torch.empty_like(mine) for _ in range(world)]
    collective(dist.all_gather, everyone, mine, group=group)
    table = torch.stack(everyone).cpu()
    if problem is not None:
        raise problem
    failed = int(table[:, 1].sum().item())
    if failed:
        raise ValueError(f"{failed} other rank(s) passed invalid local_sims / local_semantic_sims / tau (their "
                         "error says what); this rank's inputs are fine")
    n = local_sims.shape[1]
    if (table[:, 2] != n).any():
        raise ValueError(f"the ranks' local_sims have different column counts {table[:, 2].long().tolist()} "
                         "(in rank order): every rank's rows must hold all N captions of the global batch")
    if (table[:, 3] != table[0, 3]).any():
        raise ValueError(f"the ranks passed different tau {table[:, 3].tolist()} (in rank order): one loss "
                         "needs one temperature")
    total_rows = int(table[:, 0].sum().item())
    if total_rows != n:
        raise ValueError(f"the ranks' local_sims hold {total_rows} rows in all but each row has {n} columns: "
                         "the global S must be square (N, N), every image's row against all N captions")
    if rows == 0:
        dtype = _validate.compute_dtype(local_sims, local_semantic_sims)
        # no rows: contributes 0, but both inputs stay in the graph (their grads are empty tensors)
        local = (local_sims.sum() * 0 + local_semantic_sims.sum() * 0).to(torch.float64)
    else:
        dtype = s.dtype
        local = ratio_sum(s, c, tau, False, algo)
    total = local.detach().clone()
    collective(dist.all_reduce, total, group=group)
    # The value is the global sum; the gradient flows to this rank's rows only.
    global_sum = local + (total - local.detach())
    return (1.0 - global_sum / (n * n)).to(dtype)


class _AllGather(torch.autograd.Function):
    """all_gather of equal-shaped tensors; the backward sums every rank's gradient of the gathered
    list and returns this rank's part (one all_reduce, which gloo and NCCL both provide).
    torch.distributed.nn.functional.all_gather does the same but is deprecated from torch 2.13."""

    @staticmethod
    def forward(ctx, x: Tensor):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        collective(dist.all_gather, parts, x.contiguous())
        return tuple(parts)

    @staticmethod
    def backward(ctx, *grads: Tensor):
        stacked = torch.stack(grads).contiguous()
        collective(dist.all_reduce, stacked)
        return stacked[dist.get_rank()]


def gather_rows(x: Tensor) -> Tensor:
    """Concatenates every rank's (r_k, d) rows in rank order, with gradients back to each rank's rows
    (ranks may hold different numbers of rows)."""
    world = dist.get_world_size()
    sizes = torch.tensor([x.shape[0]], device=x.device)
    all_sizes = [torch.zeros_like(sizes) for _ in range(world)]
    collective(dist.all_gather, all_sizes, sizes)
    counts = [int(s.item()) for s in all_sizes]
    padded = torch.nn.functional.pad(x, (0, 0, 0, max(counts) - x.shape[0]))
    parts = _AllGather.apply(padded)
    return torch.cat([part[:n] for part, n in zip(parts, counts)])
