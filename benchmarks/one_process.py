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
``--record FILE``: also write the table of docs/benchmarks.md's one-process runs as a results record
(``vsl_ext.harness.results_record``: per n the load, vsl_ext's median, the goal's peer and the
others, the ratio and the goal of issue 13; the raw times in seconds under ``data``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from benchmarks import _cases, _peers


def _case(impl: str, n: int) -> dict:
    return {"suite": "rank", "section": "main", "op": "vsl_loss", "impl": impl, "variant": "row",
            "algorithm": "auto" if impl == "vsl_ext" else None, "pass": "forward+backward", "n": n}


PEER_NAMES = {"reference": "eager formula", "compile": "torch.compile", "numba": "numba", "chunked": "chunked"}
# issue 13: n -> (the peer compared, None for the fastest one; the least ratio to it)
GOALS = {8: ("reference", 2.0), 128: (None, 5.0), 512: (None, 30.0), 1024: (None, 80.0)}
RECORD_COLUMNS = ["n", "command", "load", "vsl_ext", "goal's peer (other peers)", "ratio", "goal"]


def duration(seconds: float) -> str:
    """A time with 3 significant digits in ms below 1 s, else in s: ``0.149 ms``, ``572 ms``, ``26.9 s``."""
    return f"{seconds * 1e3:.3g} ms" if seconds < 1.0 else f"{seconds:.3g} s"


def record_row(n: int, medians: dict, command: str, load: str) -> list:
    """One row of the record: ``medians`` maps each implementation to its median time in seconds."""
    peers = {impl: t for impl, t in medians.items() if impl != "vsl_ext"}
    compared, least = GOALS.get(n, (None, None))
    if compared not in peers:
        compared = min(peers, key=peers.get) if peers else None
    if compared is None:
        return [f"{n:,}", f"`{command}`", load, duration(medians["vsl_ext"]), "-", "-", "-"]
    others = ", ".join(f"{PEER_NAMES.get(i, i)} {duration(t)}" for i, t in sorted(peers.items(), key=lambda x: x[1])
                       if i != compared)
    ratio = peers[compared] / medians["vsl_ext"]
    goal = "-" if least is None else (f"≥ {least:g}×{' the eager formula' if compared == 'reference' else ''}: "
                                      f"{'met' if ratio >= least else '**not met**'}")
    return [f"{n:,}", f"`{command}`", load, duration(medians["vsl_ext"]),
            f"{PEER_NAMES.get(compared, compared)} {duration(peers[compared])}" + (f" ({others})" if others else ""),
            f"{ratio:.1f}×", goal]


def write_record(path: str, times: dict, command: str, threads: int, load: str, commit=None) -> None:
    """Write the runs' medians as a results record to ``path`` (``times``: {n: {impl: [seconds]}};
    ``commit``: of the code measured, default the checkout's now)."""
    from vsl_ext.harness import results_record

    rows = [record_row(n, {impl: statistics.median(ts) for impl, ts in by_impl.items()}, command, load)
            for n, by_impl in times.items()]
    results_record.write_record(path, RECORD_COLUMNS, rows, "python -m benchmarks.one_process " + command,
                                results_record.environment(threads, load), align="lllrrrr",
                                data={"seconds": {str(n): by_impl for n, by_impl in times.items()}}, commit=commit)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.one_process", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[8, 1024])
    p.add_argument("--impls", nargs="+", default=["vsl_ext", "reference", "numba"])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-seconds", type=float, default=1.0)
    p.add_argument("--slow-rounds", type=int, default=3)
    p.add_argument("--record", metavar="FILE", help="also write the medians as a results record (JSON) to FILE")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    if args.record:
        from vsl_ext.harness.results_record import current_commit

        commit = current_commit()           # the code measured, before anyone edits the checkout
    print(f"threads {torch.get_num_threads()}, load average before {load_before}", flush=True)
    measured = {}
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
        measured[n] = times
        base = statistics.median(times["vsl_ext"])
        for impl, ts in times.items():
            med = statistics.median(ts)
            ratio = "" if impl == "vsl_ext" else f"  {med / base:7.1f}x vsl_ext"
            print(f"n = {n:5d}  {impl:10s} {med * 1e3:10.3f} ms  (median of {len(ts)}; min {min(ts) * 1e3:.3f}){ratio}",
                  flush=True)
    load_after = os.getloadavg()
    print(f"load average after {load_after}")
    if args.record:
        from vsl_ext.harness.results_record import load_range

        shown = list(sys.argv[1:] if argv is None else argv)
        at = shown.index("--record")
        command = " ".join(shown[:at] + shown[at + 2:])
        write_record(args.record, measured, command, torch.get_num_threads(), load_range(load_before[0], load_after[0]),
                     commit)
        print(f"wrote {args.record}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
