"""Row VSL forward+backward of vsl_ext against the report's peers, timed in one process.

    python -m benchmarks.one_process --n 8 1024 --impls vsl_ext reference numba --rounds 9

Each round times every implementation once at each n, back to back, on the report's inputs
(``_cases.make_inputs``) and calls (``_cases.make_call``: a fresh leaf S requiring its gradient,
forward and backward); medians over the rounds, so the ratios compare implementations under the
same momentary load. Prints the load average (``os.getloadavg``) before and after, the thread count
and, per n, each implementation's median and the ratio of every other one to vsl_ext. Implementations:
``vsl_ext``, ``reference`` (the eager formula, ``vsl_ext.reference.vsl_loss``) and the peers of
``_peers`` (``compile``, ``chunked``, ``numba``). A peer's first call (compilation) is not timed.
``--max-seconds``: an implementation whose second call at some n took longer is timed only
``--slow-rounds`` times there (numba takes ~10 s per call at n = 1,024 on 2 cores).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from benchmarks import _cases, _peers


def _case(impl: str, n: int) -> dict:
    return {"suite": "rank", "section": "main", "op": "vsl_loss", "impl": impl, "variant": "row",
            "algorithm": "auto" if impl == "vsl_ext" else None, "pass": "forward+backward", "n": n}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.one_process", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[8, 1024])
    p.add_argument("--impls", nargs="+", default=["vsl_ext", "reference", "numba"])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-seconds", type=float, default=1.0)
    p.add_argument("--slow-rounds", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"threads {torch.get_num_threads()}, load average before {os.getloadavg()}", flush=True)
    for n in args.n:
        inputs = _cases.make_inputs(n)
        calls, rounds = {}, {}
        for impl in args.impls:
            if impl in _peers.PEERS and _peers.unavailable(impl, "cpu"):
                print(f"n = {n}: {impl} not available ({_peers.unavailable(impl, 'cpu')})")
                continue
            calls[impl] = _cases.make_call(_case(impl, n), inputs)
            calls[impl]()                                  # warm-up (a peer compiles here)
            started = time.perf_counter()
            calls[impl]()
            slow = time.perf_counter() - started > args.max_seconds
            rounds[impl] = min(args.rounds, args.slow_rounds) if slow else args.rounds
        times = {impl: [] for impl in calls}
        for r in range(args.rounds):
            for impl, call in calls.items():
                if r < rounds[impl]:
                    started = time.perf_counter()
                    call()
                    times[impl].append(time.perf_counter() - started)
        base = statistics.median(times["vsl_ext"])
        for impl, ts in times.items():
            med = statistics.median(ts)
            ratio = "" if impl == "vsl_ext" else f"  {med / base:7.1f}x vsl_ext"
            print(f"n = {n:5d}  {impl:10s} {med * 1e3:10.3f} ms  (median of {len(ts)}; min {min(ts) * 1e3:.3f}){ratio}",
                  flush=True)
    print(f"load average after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
