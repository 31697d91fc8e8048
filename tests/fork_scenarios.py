"""Fork scenarios of tests/test_fork.py: ``python tests/fork_scenarios.py PARENT`` runs, in a fresh
process, PARENT's native parallel loops on 2 threads, then forks children in three ways (os.fork,
multiprocessing's "fork" context, 2 DataLoader workers with fork), each of which runs the caption
index or the rank kernel on 2 threads.

PARENT: "index" (CaptionIndex.from_captions and image_similarity), "rank" (vsl_ext.vsl_loss forward
and backward, and the fused kernel), "both", "none".
The right value: each child's result equals the parent's, bit for bit (neither kernel's result
depends on the thread count). A child that does not finish within CHILD_SECONDS is killed and
reported as hung. Prints one line per scenario; exit status 0 when all are "ok", 1 otherwise."""
import multiprocessing as mp
import os
import pickle
import signal
import sys
import tempfile
import time

import numpy as np
import torch

import vsl_ext
from vsl_ext import CaptionIndex

N_RANK = 256            # 256^3 pair terms: the rank kernel wakes a helper thread (csrc/cpu_parallel.h)
IMAGES = 2000           # a 1,024-image batch: the Gram kernel runs on 2 threads (csrc/caption_index_common.h)
CHILD_SECONDS = 60.0
THREADS = 2


def groups():
    words = np.array([f"w{i}" for i in range(300)])
    picks = words[np.random.default_rng(0).integers(0, len(words), (IMAGES, 5, 12))]
    return [[" ".join(c) for c in image] for image in picks]


def run_index():
    """from_captions, then the Gram matrix of a 1,024-image batch (native loops on the pool)."""
    index = CaptionIndex.from_captions(groups())
    return index.image_similarity(np.random.default_rng(1).integers(0, IMAGES, 1024)).numpy()


def rank_inputs():
    rng = np.random.default_rng(2)
    return (torch.from_numpy((rng.standard_normal((N_RANK, N_RANK)) * 0.1).astype(np.float32)),
            torch.from_numpy(rng.random((N_RANK, N_RANK), dtype=np.float32)))


def run_rank():
    """The fused VSL kernel (row sums and dL/dS in one native call, torch.get_num_threads() threads),
    called at kernel level on buffers numpy allocates: the child runs no torch operator, whose own
    OpenMP pool (GNU libgomp in torch's Linux wheels) does not survive fork (torch's limitation)."""
    from vsl_ext._native import _C
    from vsl_ext.kernels import cpu

    s, c = rank_inputs()
    row_sums = torch.from_numpy(np.zeros(N_RANK, dtype=np.float64))
    grad = torch.from_numpy(np.zeros((N_RANK, N_RANK), dtype=np.float32))
    cpu.vsl_loss_ratio_sum(s, None, c, None, row_sums, grad, None, None, None, 0.01, False, _C.ALGORITHMS["auto"])
    return np.concatenate([row_sums.numpy(), grad.numpy().ravel()])


def run_rank_public():
    """vsl_ext.vsl_loss forward + backward through the registered ops."""
    s, c = rank_inputs()
    s.requires_grad_(True)
    vsl_ext.vsl_loss(s, c).backward()


RUN = {"index": run_index, "rank": run_rank}


def _result(child):
    torch.set_num_threads(THREADS)
    return RUN[child]()


def by_os_fork(child):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "result")
        pid = os.fork()
        if pid == 0:
            try:
                with open(path, "wb") as f:
                    pickle.dump(_result(child), f)
            finally:
                os._exit(0)
        deadline = time.monotonic() + CHILD_SECONDS
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None
            time.sleep(0.02)
        with open(path, "rb") as f:
            return [pickle.load(f)]


def _mp_child(child, conn):
    conn.send(pickle.dumps(_result(child)))
    conn.close()


def by_multiprocessing(child):
    ctx = mp.get_context("fork")
    a, b = ctx.Pipe()
    p = ctx.Process(target=_mp_child, args=(child, b))
    p.start()
    got = pickle.loads(a.recv()) if a.poll(CHILD_SECONDS) else None
    if got is None:
        p.kill()
    p.join()
    return None if got is None else [got]


class _Dataset(torch.utils.data.Dataset):
    def __init__(self, child):
        self.child = child

    def __len__(self):
        return 2

    def __getitem__(self, i):      # DataLoader workers start on 1 thread: the kernels are asked for 2
        return torch.from_numpy(_result(self.child))


def by_dataloader(child):
    loader = torch.utils.data.DataLoader(_Dataset(child), batch_size=None, num_workers=2,
                                         multiprocessing_context="fork", timeout=CHILD_SECONDS)
    try:
        return [x.numpy() for x in loader]
    except RuntimeError as exc:       # "DataLoader timed out after 60 seconds"
        print(f"  ({exc})")
        return None


HOW = {"os.fork": by_os_fork, "multiprocessing": by_multiprocessing, "dataloader": by_dataloader}


def main(parent):
    torch.set_num_threads(THREADS)
    expected = {}
    if parent in ("index", "both"):
        expected["index"] = run_index()
    if parent in ("rank", "both"):
        run_rank_public()
        expected["rank"] = run_rank()
    outcomes = {}
    for how, fork in HOW.items():
        for child in ("index", "rank"):
            started = time.monotonic()
            outcomes[how, child] = (fork(child), time.monotonic() - started)
    failed = 0
    for (how, child), (results, seconds) in outcomes.items():
        if child not in expected:                 # the parent's own value, computed after every fork
            expected[child] = RUN[child]()
        want = expected[child]
        if results is None:
            verdict = f"hung (killed after {CHILD_SECONDS:.0f} s)"
        elif all(r.shape == want.shape and np.array_equal(r, want) for r in results):
            verdict = "ok"
        else:
            verdict = "differs: max |diff| " + str(max(float(np.abs(r - want).max()) for r in results))
        failed += verdict != "ok"
        print(f"parent used {parent}, {how} child runs {child}: {verdict} ({seconds:.1f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
