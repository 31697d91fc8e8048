"""Runs a test body in each process of a gloo process group started by ``torch.multiprocessing.spawn``."""
import os
import sys

import torch
import torch.distributed as dist


def run(rank: int, world: int, init_file: str, body, *args) -> None:
    """Joins the group, runs ``body(rank, world, *args)`` on one thread, and leaves with os._exit.

    Tearing a gloo group down from Python was unsafe here: torch < 2.8 destroys it holding the GIL
    while joining gloo's worker threads, and a worker that is still freeing the tensors of a
    finished collective waits for the GIL, a deadlock (seen with torch 2.4.1 in about 1 run in 6);
    and a group that survives destroy_process_group() (a failed collective's traceback holds it, or
    torch.distributed.nn.functional was imported after the group existed, see vsl_ext.distributed)
    keeps gloo threads that can abort the process at interpreter shutdown ("terminate called
    without an active exception"). So a process that passed waits for the others and ends with
    os._exit(0), running no destructors; a failing body raises as usual (spawn reports its
    traceback however the process then ends). tests/test_distributed_exit.py covers the ordinary
    exits of real runs.
    """
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    body(rank, world, *args)
    dist.barrier()  # no rank leaves while another still uses the group
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
