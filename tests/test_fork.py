"""Forked children finish with the parent's results (issue 21, item 3): every native parallel loop
(rank kernels, caption index) runs on the package's own pool, which a forked child starts afresh,
so a child of a process that used them on 2 threads does not wait for threads it does not have.

Each parent state runs tests/fork_scenarios.py in a fresh process (children: os.fork,
multiprocessing "fork", DataLoader workers; each running the index and the rank kernel on 2 threads);
a child that hangs is killed there after 60 s, and the whole script after TIMEOUT, so a hang fails
the test instead of blocking the suite."""
import os
import subprocess
import sys

import pytest

import vsl_ext
from vsl_ext import build_info

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 300

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")


@pytest.mark.parametrize("parent", ["index", "rank", "both"])
def test_forked_children_finish_with_the_parents_results(parent):
    try:
        done = subprocess.run([sys.executable, os.path.join(HERE, "fork_scenarios.py"), parent], cwd=HERE,
                              capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the fork scenarios hung (no end after {TIMEOUT} s): {exc.stdout}")
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert len([line for line in lines if line.endswith(")") and ": ok (" in line]) == 6, done.stdout


def test_the_native_module_loads_no_openmp_runtime():
    """GNU libgomp does not survive fork; the module links none (build_info and its dependencies)."""
    from vsl_ext import _native

    assert build_info()["openmp"] is False
    if sys.platform.startswith("linux"):
        maps = open("/proc/self/maps").read()
        module = _native._C.__file__
        needed = subprocess.run(["ldd", module], capture_output=True, text=True).stdout if module in maps else ""
        assert "gomp" not in needed and "libomp" not in needed, needed


def test_results_do_not_depend_on_the_thread_count():
    """Each row / item of the pool's loops is computed whole by one thread: 1, 2 and 4 threads give
    the same bits (caption index tf-idf and CIDEr-D Gram matrices, the VSL loss and its gradient)."""
    import numpy as np
    import torch

    sys.path.insert(0, HERE)
    import fork_scenarios as fs
    from vsl_ext import CaptionIndex

    groups, ids = fs.groups(), np.random.default_rng(1).integers(0, fs.IMAGES, 1024)
    s, c = fs.rank_inputs()
    before = torch.get_num_threads()
    got = {}
    try:
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            x = s.clone().requires_grad_(True)
            loss = vsl_ext.vsl_loss(x, c)
            loss.backward()
            got[threads] = [CaptionIndex.from_captions(groups, mode=m).image_similarity(ids).numpy()
                            for m in ("tfidf", "cider-d")] + [loss.detach().numpy(), x.grad.numpy()]
    finally:
        torch.set_num_threads(before)
    for threads in (2, 4):
        assert all(np.array_equal(a, b) for a, b in zip(got[1], got[threads])), threads


_CONCURRENT = """
import sys, threading
import numpy as np, torch
sys.path.insert(0, {here!r})
import fork_scenarios as fs
torch.set_num_threads(4)
index = fs.CaptionIndex.from_captions(fs.groups())
ids = np.random.default_rng(1).integers(0, fs.IMAGES, 512)
want = (fs.run_rank(), index.image_similarity(ids).numpy())
bad = []
def work():
    for _ in range(15):
        got = (fs.run_rank(), index.image_similarity(ids).numpy())
        if not all(np.array_equal(a, b) for a, b in zip(got, want)):
            bad.append(1)
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print("bad", len(bad))
"""


def test_the_pool_under_concurrent_callers():
    """4 Python threads call the rank kernel and the caption index at once (the GIL is released), 15
    times each, on 4 threads: a second concurrent caller runs its rows alone, every result equals
    the serial one, and nothing hangs (the script is killed after TIMEOUT)."""
    done = subprocess.run([sys.executable, "-c", _CONCURRENT.format(here=HERE)], capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0 and done.stdout.strip().endswith("bad 0"), done.stdout + done.stderr[-3000:]
