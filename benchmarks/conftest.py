"""pytest options and shared state of the benchmark suites.

Run from the repository root, e.g.::

    python -m pytest benchmarks/bench_vsl_loss.py --vsl-quick --benchmark-json=/tmp/vsl_loss.json

Cases that are not run (a reference that does not fit in memory, a case over the time budget, a
path the device lacks) are still recorded, under ``"vsl"`` in the ``--benchmark-json`` output,
together with the device stamp; so are CPU cases whose single call already takes longer than the
timing target, which are timed by that one call in the memory probe's fresh process instead of being
run a second time. ``python -m benchmarks.report`` reads both parts.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Optional

import pytest
import torch

from benchmarks import _cases, _env
from benchmarks._measure import RssProbe, now


def pytest_addoption(parser):
    group = parser.getgroup("vsl_ext benchmarks")
    group.addoption("--vsl-device", default="cpu", choices=("cpu", "cuda"), help="device to benchmark")
    group.addoption("--vsl-quick", action="store_true", help="small sizes, few repeats (minutes on 2 cores)")
    group.addoption("--vsl-threads", type=int, default=None,
                    help="torch CPU threads (default: all CPUs this process may use)")
    group.addoption("--vsl-max-n", type=int, default=None, help="largest n (rank) / B (captions) to run")
    group.addoption("--vsl-max-case-seconds", type=float, default=None,
                    help="skip a case whose one call is predicted (n^3 from the previous n) to take longer "
                         "(default 10 quick, 600 full)")
    group.addoption("--vsl-target-seconds", type=float, default=None,
                    help="timing time per case; sets the number of repeats (default 0.3 quick, 5 full)")
    group.addoption("--vsl-sections", nargs="+", default=list(_cases.SECTIONS), choices=_cases.SECTIONS,
                    help="rank suite sections to run, in this order (default: main large-n window)")
    group.addoption("--vsl-time-budget", type=float, default=None,
                    help="seconds for the whole run: a case that would start after the budget is spent, or "
                         "is predicted to end after it, is recorded as over the session budget and not run "
                         "(for machines lent for a fixed time; the JSON is still written)")
    group.addoption("--vsl-memory-fraction", type=float, default=None,
                    help="a reference fits if its n^3 tensors need at most this fraction of the free memory "
                         "(default 0.75 CPU MemAvailable, 0.9 free GPU memory)")


class BenchEnv:
    """Session-wide settings, the not-run records and the per-series timings."""

    def __init__(self, config):
        opt = config.getoption
        self.device = opt("--vsl-device")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise pytest.UsageError("--vsl-device cuda: no CUDA device is visible to torch")
        self.quick = bool(opt("--vsl-quick"))
        self.threads = opt("--vsl-threads") or _env.default_threads()
        torch.set_num_threads(self.threads)
        _cases.warm_up_lazy_imports()
        self.max_n = opt("--vsl-max-n")
        self.sections = list(opt("--vsl-sections"))
        self.time_budget = opt("--vsl-time-budget")
        self.deadline = None if self.time_budget is None else now() + self.time_budget
        self.max_case_s = opt("--vsl-max-case-seconds") or (10.0 if self.quick else 600.0)
        self.target_s = opt("--vsl-target-seconds") or (0.3 if self.quick else 5.0)
        self.min_rounds = 2 if self.quick else 5
        self.max_rounds = 10 if self.quick else 50
        default_fraction = 0.9 if self.device == "cuda" else 0.75
        self.memory_fraction = opt("--vsl-memory-fraction") or default_fraction
        # CPU: measured once, before any case allocates; CUDA: free memory at each case (inputs resident).
        self.cpu_memory_limit = int(self.memory_fraction * _env.available_memory_bytes("cpu"))
        self.records = []      # records outside pytest-benchmark's list: cases not run, single-call cases
        self.last_time = {}    # series -> (n, seconds per call)
        self.cache_dir = Path(tempfile.mkdtemp(prefix="vsl-bench-"))
        self._probe = None
        self._inputs = {}

    # ------------------------------------------------------------------ helpers for the suites
    def memory_limit(self) -> int:
        if self.device == "cuda":
            return int(self.memory_fraction * _env.available_memory_bytes("cuda"))
        return self.cpu_memory_limit

    def skip(self, case: dict, status: str, reason: str, **extra) -> None:
        """Record a case that is not run, then skip its test."""
        record = dict(case, status=status, reason=reason, **extra)
        self.records.append(record)
        pytest.skip(f"{status}: {reason}")

    def over_budget(self, predicted: Optional[float] = None, calls: int = 3) -> Optional[str]:
        """Why the session's time budget leaves no room for ``calls`` calls of ``predicted`` seconds
        (None: it does, or there is no budget)."""
        if self.deadline is None:
            return None
        left = self.deadline - now()
        if left > 0 and (predicted is None or calls * predicted <= left):
            return None
        budget = _env.fmt_seconds(self.time_budget)
        if left <= 0:
            return f"session time budget {budget}: spent"
        return (f"session time budget {budget}: {calls} calls of {_env.fmt_seconds(predicted)} "
                f"would not fit in the {_env.fmt_seconds(left)} left")

    def check_budget(self, case: dict, predicted: Optional[float] = None) -> None:
        """Skip and record a case that the session's time budget leaves no room for."""
        reason = self.over_budget(predicted)
        if reason is not None:
            self.skip(case, "over session budget", reason, predicted_seconds=predicted)

    def predicted_seconds(self, case: dict):
        """n^3 extrapolation from the previous n of the same series (None for the first)."""
        prev = self.last_time.get(_cases.series_key(case))
        if prev is None:
            return None
        n0, t0 = prev
        return t0 * (case["n"] / n0) ** 3

    def inputs(self, n: int):
        """Inputs for size n on the device (one size cached at a time), saved for the memory probe."""
        if n not in self._inputs:
            for old in self._inputs:
                _cases.inputs_file(self.cache_dir, old).unlink(missing_ok=True)
            self._inputs.clear()
            inputs = _cases.make_inputs(n, self.device)
            if self.device == "cpu":
                torch.save(inputs, _cases.inputs_file(self.cache_dir, n))
            self._inputs[n] = inputs
        return self._inputs[n]

    def probe(self) -> RssProbe:
        if self._probe is None:
            self._probe = RssProbe(self.threads)
        return self._probe

    def settings(self) -> dict:
        return {"quick": self.quick, "threads": self.threads, "max_n": self.max_n, "sections": self.sections,
                "time_budget_seconds": self.time_budget,
                "max_case_seconds": self.max_case_s, "target_seconds": self.target_s,
                "min_rounds": self.min_rounds, "max_rounds": self.max_rounds,
                "memory_fraction": self.memory_fraction,
                "memory_limit_bytes": self.memory_limit() if self.device == "cpu" else None,
                "semantic_source": _cases.semantic_source()}

    def close(self):
        if self._probe is not None:
            self._probe.close()
        shutil.rmtree(self.cache_dir, ignore_errors=True)


def pytest_configure(config):
    if config.pluginmanager.hasplugin("benchmark"):
        config._vsl_env = BenchEnv(config)


def pytest_unconfigure(config):
    env = getattr(config, "_vsl_env", None)
    if env is not None:
        env.close()


@pytest.fixture(scope="session")
def bench_env(request) -> BenchEnv:
    return request.config._vsl_env


@pytest.fixture(autouse=True)
def _session_budget(request):
    """Every benchmark stops starting once the time budget is spent. The rank suite checks its cases
    itself, after recording references that do not fit, and also skips cases predicted to overrun."""
    env = getattr(request.config, "_vsl_env", None)
    callspec = getattr(request.node, "callspec", None)
    if env is not None and "case" not in (callspec.params if callspec else {}):
        env.check_budget({"suite": "other", "name": request.node.nodeid})


def pytest_benchmark_update_machine_info(config, machine_info):
    env = getattr(config, "_vsl_env", None)
    if env is not None:
        machine_info["vsl_stamp"] = _env.stamp(env.device, env.threads)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    env = getattr(config, "_vsl_env", None)
    if env is not None:
        output_json["vsl"] = {"stamp": _env.stamp(env.device, env.threads), "settings": env.settings(),
                              "records": env.records}


@pytest.fixture(autouse=True)
def _free_cuda_cache():
    yield
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
