"""Runs a test body in each process of a gloo process group started by ``torch.multiprocessing.spawn``."""
import os
import sys

import torch
import torch.distributed as dist


def run(rank: int, world: int, init_file: str, body, *args) -> None:
    """Joins the group, runs ``body(rank, world, *args)`` on one thread, and leaves cleanly.

    A gloo worker thread can still hold the last reference to a tensor of a finished all_reduce
    when Python shuts down; releasing it then needs the GIL and aborts the process ("terminate
    called without an active exception", torch 2.13). Once torch._dynamo is imported (the custom
    ops do), destroy_process_group no longer joins those threads, so a process that passed ends
    with os._exit(0) instead of interpreter shutdown. A failing body raises as usual.
    """
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        body(rank, world, *args)
        dist.barrier()  # no rank tears down its connections while another still uses them
    finally:
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
