"""Runs a K-process torch.distributed job many times and reports how each process ended.

    python tests/exit_runner.py train=20,train_error_one_rank=2 --world 2 --data DIR --out DIR

The runner imports torch and vsl_ext once, in the order the vsl-train CLI does, and forks the ranks
of every repetition, so a repetition costs a fork instead of an interpreter start. Each child joins
a gloo group through ``env://`` (as under torchrun), runs the scenario and leaves through the
ordinary interpreter exit: ``sys.exit`` or an uncaught exception unwinds to the top of this script,
then atexit hooks and interpreter finalization run - the exit on which a gloo group that is still
alive can abort the process ("terminate called without an active exception", see
vsl_ext/distributed.py).

Prints one JSON line per repetition: ``{"scenario": name, "rep": i, "codes": [...], "aborted": [...],
"threads_at_exit": [[...], ...], "timed_out": bool, "seconds": s, "logs": [...]}``. A code < 0 is a
signal (-6 SIGABRT; -2 SIGINT, which is how Python ends after an uncaught KeyboardInterrupt).
``threads_at_exit``: each rank's native threads when its last atexit hook ran, right before
finalization; gloo's are ``pt_gloo_runloop`` and ``gloo_tcp_loop``.
"""
import argparse
import atexit
import gc
import json
import os
import signal
import socket
import sys
import time

# The CLI's import order: the harness (its global-batch module imports vsl_ext.distributed, and
# through it torch.distributed.nn.functional) before any group exists ...
import torch
import torch.distributed as dist

import vsl_ext.distributed
from vsl_ext.harness import global_batch  # noqa: F401
from vsl_ext.harness import trainer as trainer_mod
from vsl_ext.harness.train import TrainConfig, train

# ... then torch._dynamo, which the first VSL call imports: here once instead of in every child.
# That saves time without changing what is tested only because vsl_ext.distributed has imported
# torch.distributed.nn.functional already (else importing torch._dynamo here, before any group
# exists, would hide the reference to the group that it makes when imported after init); so
# without that import, or with --lazy-dynamo, every child imports it at its first VSL call.
if "--lazy-dynamo" not in sys.argv and "torch.distributed.nn.functional" in sys.modules:
    import torch._dynamo  # noqa: F401

ABORT = "terminate called"
GLOO_THREADS = ("pt_gloo_runloop", "gloo_tcp_loop")
THREADS_AT_EXIT = "native threads at interpreter shutdown: "


def _cfg(data, out, **kw):
    base = dict(data=data, dataset="synthetic", output=out, model="vse", embed_size=16, word_dim=8, batch_size=20,
                epochs=1, progress=False, tensorboard=False, seed=0, global_batch=True, overwrite=True)
    base.update(kw)
    return TrainConfig(**base)


def _fail_at(step, error, ranks):
    """Makes Trainer.train_step raise ``error`` (or, for "SIGINT", signal this process) at ``step``
    on the given ranks."""
    original = trainer_mod.Trainer.train_step

    def train_step(self, caption_ids):
        if self.global_step == step and int(os.environ["RANK"]) in ranks:
            if error == "SIGINT":
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(30)                      # the KeyboardInterrupt arrives during this sleep
            raise error(f"injected at step {step} on rank {os.environ['RANK']}")
        return original(self, caption_ids)

    trainer_mod.Trainer.train_step = train_step


def _library_steps(rank, world, fail=None):
    """What a user script does with vsl_ext.distributed: a few global-batch VSL steps."""
    torch.manual_seed(rank)
    for step in range(3):
        img = torch.randn(4, 8, requires_grad=True)
        txt = torch.randn(4, 8, requires_grad=True)
        sims = img @ vsl_ext.distributed.gather_rows(txt).t()
        vsl_ext.distributed.vsl_loss(sims, torch.rand(4, 4 * world)).backward()
        if fail is not None and step == 1 and rank == 1:
            raise fail("injected on rank 1")


def scenario(name, rank, world, data, out):
    if name == "train":                               # the README example, normal end
        train(_cfg(data, out), log=lambda m: None)
    elif name == "train_error_one_rank":              # rank 1 raises mid-epoch; rank 0 waits in a collective
        _fail_at(1, RuntimeError, {1})
        train(_cfg(data, out), log=lambda m: None)
    elif name == "train_interrupt_all":               # Ctrl-C reaches every rank
        _fail_at(1, KeyboardInterrupt, set(range(world)))
        train(_cfg(data, out), log=lambda m: None)
    elif name == "train_sigint_one_rank":             # a real SIGINT, on rank 0 only
        _fail_at(1, "SIGINT", {0})
        train(_cfg(data, out), log=lambda m: None)
    elif name == "train_bad_data":                    # every rank fails after joining, before training
        train(_cfg(data, out, captions_per_image=3), log=lambda m: None)
    elif name in ("library", "library_error_one_rank", "library_interrupt_one_rank"):
        fail = {"library": None, "library_error_one_rank": RuntimeError,
                "library_interrupt_one_rank": KeyboardInterrupt}[name]
        dist.init_process_group("gloo")               # a user script, as vsl_ext.distributed asks
        try:
            _library_steps(rank, world, fail)
            dist.barrier()
        finally:
            dist.destroy_process_group()
    elif name == "no_destroy":                        # control: the group is never destroyed
        dist.init_process_group("gloo")
        _library_steps(rank, world)
    else:
        raise ValueError(f"unknown scenario {name}")


def _native_threads():
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass
    return sorted(names)


def _report_threads_at_exit():
    """Registered first, so it runs after every other atexit hook, right before finalization."""
    print(THREADS_AT_EXIT + json.dumps(_native_threads()), flush=True)


def _child(name, rank, world, port, data, out, log):
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    atexit.register(_report_threads_at_exit)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # Python raises KeyboardInterrupt on SIGINT only if SIGINT was not ignored when it started, and a
    # shell starts background jobs (nohup ..., cmd &) with SIGINT ignored: restore what a terminal gives.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    scenario(name, rank, world, data, os.path.join(out, "run"))
    sys.exit(0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(pids, timeout):
    codes, deadline, timed_out = {}, time.monotonic() + timeout, False
    while len(codes) < len(pids):
        for pid in pids:
            if pid not in codes:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes[pid] = os.waitstatus_to_exitcode(status)
        if len(codes) < len(pids) and time.monotonic() > deadline:
            timed_out = True
            for pid in pids:
                if pid not in codes:
                    os.kill(pid, signal.SIGKILL)
                    codes[pid] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        time.sleep(0.02)
    return [codes[pid] for pid in pids], timed_out


def repetition(name, rep, args):
    started = time.monotonic()
    port = _free_port()
    out = os.path.join(args.out, f"{name}_{rep}")
    os.makedirs(out, exist_ok=True)
    logs = [os.path.join(out, f"rank{r}.log") for r in range(args.world)]
    pids = []
    for rank in range(args.world):
        pid = os.fork()
        if pid == 0:  # the child ends through sys.exit or an exception: the top of this script
            _child(name, rank, args.world, port, args.data, out, logs[rank])
        pids.append(pid)
    codes, timed_out = _wait(pids, args.timeout)
    aborted, threads = [], []
    for log in logs:
        with open(log, errors="replace") as f:
            text = f.read()
        aborted.append(ABORT in text)
        lines = [ln for ln in text.splitlines() if ln.startswith(THREADS_AT_EXIT)]
        threads.append(json.loads(lines[-1][len(THREADS_AT_EXIT):]) if lines else None)
    print(json.dumps({"scenario": name, "rep": rep, "codes": codes, "aborted": aborted, "threads_at_exit": threads,
                      "timed_out": timed_out, "seconds": round(time.monotonic() - started, 2), "logs": logs}),
          flush=True)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("plan", help="SCENARIO=REPETITIONS[,SCENARIO=REPETITIONS...]")
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per repetition before its ranks are killed")
    p.add_argument("--lazy-dynamo", action="store_true", help="do not import torch._dynamo before forking")
    args = p.parse_args(argv)
    # Everything that exists now is shared by all children: keeping it out of their garbage
    # collections makes their interpreter shutdown ~3x faster, and changes nothing created later.
    gc.freeze()
    for item in args.plan.split(","):
        name, reps = item.split("=")
        for rep in range(int(reps)):
            repetition(name, rep, args)


if __name__ == "__main__":
    main()
