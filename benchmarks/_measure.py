"""Timing and peak-memory measurement.

* CUDA time: CUDA events around each call after warm-up, median over repeats.
* CUDA memory: ``torch.cuda.max_memory_allocated`` during one call minus what was allocated before.
* CPU memory: the extra peak RSS of one call in a fresh process per case. A small server
  (``python -m benchmarks._rss_server``) imports torch and vsl_ext once and never computes; for each
  case it forks a child that loads the inputs, records VmRSS, resets the peak (``/proc/self/clear_refs``),
  runs the call once and reports VmHWM - VmRSS. Forking a process that never ran an OpenMP region is
  safe, and the child starts with an untouched allocator, as a fresh ``python`` would.
"""
from __future__ import annotations

import json
import math
import os
import select
import statistics
import subprocess
import sys
import time
from typing import Callable, List, Optional, Tuple

import torch

from ._env import REPO


def choose_rounds(seconds_per_call: float, target_s: float, min_rounds: int, max_rounds: int) -> int:
    """Repeats for a case: about ``target_s`` of timing, at least ``min_rounds`` unless one call
    alone exceeds the target (then one timed call; at n^3 cost, warm-up effects are negligible)."""
    if seconds_per_call >= target_s:
        return 1
    return max(min_rounds, min(max_rounds, int(math.ceil(target_s / max(seconds_per_call, 1e-6)))))


def cuda_event_times(call: Callable[[], None], rounds: int, warmup: int = 2) -> List[float]:
    """Seconds per call measured with CUDA events on the current stream, after ``warmup`` calls."""
    for _ in range(warmup):
        call()
    torch.cuda.synchronize()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return times


def cuda_time_and_peak(call: Callable[[], None]) -> Tuple[float, int]:
    """One call: its seconds (CUDA events) and the peak bytes it allocated beyond what was allocated
    before it (``torch.cuda.max_memory_allocated``; the caching allocator's reserve does not count)."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    call()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3, torch.cuda.max_memory_allocated() - before


def median(xs: List[float]) -> float:
    return statistics.median(xs)


class RssProbe:
    """Client of the fork server that measures the extra peak RSS of one call per case (CPU)."""

    def __init__(self, threads: int):
        self.threads = threads
        self.proc: Optional[subprocess.Popen] = None

    def _start(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env["OMP_NUM_THREADS"] = str(self.threads)
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks._rss_server"], cwd=REPO, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def measure(self, case: dict, inputs_path: str, timeout_s: float) -> dict:
        """``{"peak_extra_bytes", "seconds", "method"}`` or ``{"error": ...}``."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        request = {"case": case, "inputs": str(inputs_path), "threads": self.threads}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            self.close()
            return {"error": f"memory probe timed out after {timeout_s:.0f} s"}
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            return {"error": "memory probe server exited"}
        return json.loads(line)

    def close(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()  # our own server (and any child it forked exits with it)
            self.proc.wait()
            self.proc = None


def now() -> float:
    return time.perf_counter()
