"""The body shared by bench_sigmoid_rank.py and bench_vsl_loss.py: vsl_ext's kernels vs the pure-PyTorch
reference, one case at a time (the suites' record key "suite" is "rank" for both).

Cases (see ``_cases.make_cases``, filtered per op by the two files): forward and forward+backward of
  * ``sigmoid_rank``: vsl_ext (algorithm="auto") vs ``reference.sigmoid_rank``;
  * ``vsl_loss``: vsl_ext row vs ``reference.vsl_loss``, and vsl_ext public-code vs
    ``reference.public_code_vsl_loss``;
each peer of ``_peers`` (torch.compile of the formula, chunked+checkpointed formula, numba; on CUDA
numba.cuda and cupy), every case checked against the float64 formula to one tolerance
(``_peers.check_error``, n <= ``_peers.CHECK_MAX_N``) in the same run; the large-n section
(forward+backward, vsl_ext algorithm="dense" vs "sorted"), and the window
section (``sigmoid_rank`` dense vs sorted on rows with a set share of pairs inside the +-30 tau
window, ``_cases.window_input``). ``--vsl-sections`` picks sections and their order.

A reference whose n^3 tensors would not fit in memory is recorded as "does not fit" and never run;
a case whose time, extrapolated as n^3 from the previous n, exceeds the budget is recorded as
"over time budget". Timing: CPU perf_counter through pytest-benchmark after a warm-up call
(threads fixed, see --vsl-threads), except that a case whose one call already exceeds the timing
target is timed by its single call in the memory probe's fresh process; CUDA events after warm-up
(median, in extra_info) besides pytest-benchmark's synchronised wall time, or the one call after
warm-up when it exceeds the target. Under ``--vsl-time-budget`` a case with no room left is recorded
as "over session budget", and a case whose repeats would overrun it keeps its one measured call.
"""
from __future__ import annotations

import math

import torch

from benchmarks import _cases, _peers
from benchmarks._env import fmt_bytes, fmt_seconds
from benchmarks._measure import choose_rounds, cuda_event_times, cuda_time_and_peak, median, now


def parametrize_cases(metafunc, op: str) -> None:
    """The ``case`` parameters of ``op``'s suite, in run order."""
    if "case" in metafunc.fixturenames:
        env = metafunc.config._vsl_env
        cases = [c for c in _cases.make_cases(env.device, env.quick, env.max_n, env.sections) if c["op"] == op]
        metafunc.parametrize("case", cases, ids=[_cases.case_id(c) for c in cases])


def run_case(request, env, case: dict) -> None:
    """Times and measures one case (or records why it is not run)."""
    n = case["n"]

    def bench():  # requested only when it times something (an unused fixture makes pytest-benchmark warn)
        fixture = request.getfixturevalue("benchmark")
        fixture.group = f"{case['section']} {case['op']} {case['pass']} n={n}"
        return fixture
    extra = {}

    if case["impl"] == "reference":
        need, limit = _cases.reference_bytes(case), env.memory_limit()
        extra["predicted_bytes"] = need
        if need > limit:
            env.skip(case, "does not fit", f"needs {fmt_bytes(need)} for its n^3 tensors "
                     f"({_cases.reference_cube_count(case['op'], case['variant'], case['pass'])} x n^3 x 4 B), "
                     f"limit {fmt_bytes(limit)}", predicted_bytes=need, memory_limit_bytes=limit)
    predicted = env.predicted_seconds(case)
    if predicted is not None and predicted > env.max_case_s:
        env.skip(case, "over time budget", f"one call predicted {fmt_seconds(predicted)} (n^3 from the previous n) "
                 f"> {fmt_seconds(env.max_case_s)}", predicted_seconds=predicted, **extra)
    if case["impl"] in _peers.PEERS:
        why = _peers.unavailable(case["impl"], env.device)
        if why:
            env.skip(case, "not available", why, **extra)
    env.check_budget(case, predicted)

    inputs = env.inputs(n)
    run = _cases.make_run(case, inputs)

    def call():
        run()

    # Checked against the float64 formula in the same run (also the warm-up call: a compiled peer
    # compiles here).
    if n <= _peers.CHECK_MAX_N[env.device]:
        value, grad = run()
        if env.device == "cuda":
            torch.cuda.synchronize()
        err = _peers.check_error(case, value, grad)
        del value, grad
        extra.update(check_error=err, check_ok=err <= _peers.CHECK_TOLERANCE,
                     check_tolerance=_peers.CHECK_TOLERANCE)

    if case.get("window") is not None:
        from vsl_ext.kernels.cuda import window_fraction
        m = _cases.window_input(n, case["window"], env.device)
        extra["window_fraction"] = float(window_fraction(m, None, 1e-3))
        del m

    def record_single_call(seconds, peak, time_method, memory_method):
        # One call is the measurement when it already exceeds the timing target (at n^3 cost, warm-up
        # effects are negligible and a second call would only double the cost) or the time budget
        # has no room for repeats.
        env.records.append(dict(case, label=_cases.label(case), status="ok", time_s=seconds, time_method=time_method,
                                peak_extra_bytes=peak, memory_method=memory_method, rounds=1,
                                threads=env.threads, **extra))
        env.last_time[_cases.series_key(case)] = (n, seconds)

    if env.device == "cuda":
        def timed_call():
            call()
            torch.cuda.synchronize()
        try:
            timed_call()  # warm-up; also rejects paths the device lacks
        except ValueError as exc:
            env.skip(case, "not available", str(exc), **extra)
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            env.skip(case, "out of memory", str(exc).splitlines()[0], **extra)
        estimate, peak = cuda_time_and_peak(call)
        memory_method = "torch.cuda.max_memory_allocated - memory_allocated before"
        rounds = choose_rounds(estimate, env.target_s, env.min_rounds, env.max_rounds)
        if rounds == 1 or env.over_budget(estimate, calls=rounds + 3):
            return record_single_call(estimate, peak, "CUDA events, one call after warm-up", memory_method)
        events = cuda_event_times(call, rounds=rounds, warmup=0)
        # pytest-benchmark's own (synchronised wall-clock) statistics, a few rounds, for its tables
        benchmark = bench()
        benchmark.pedantic(timed_call, rounds=min(rounds, 3), iterations=1, warmup_rounds=0)
        extra.update(time_s=median(events), time_method=f"CUDA events, median of {len(events)} after warm-up",
                     cuda_event_times_s=events)
    else:
        timeout = 60 + 5 * (predicted if predicted is not None else env.max_case_s)
        probe = env.probe().measure(case, _cases.inputs_file(env.cache_dir, n), timeout_s=timeout)
        if "error" in probe:
            env.skip(case, "failed", f"memory probe: {probe['error']}", **extra)
        peak = probe["peak_extra_bytes"]
        memory_method = f"extra peak RSS of one call in a fresh process ({probe['method']})"
        if probe["seconds"] >= env.target_s or env.over_budget(probe["seconds"], calls=env.min_rounds + 1):
            return record_single_call(
                probe["seconds"], peak,
                f"perf_counter, one call in the memory probe's process, {env.threads} threads", memory_method)
        t0 = now()
        call()  # warm-up, and the time per call that sets the number of rounds
        rounds = choose_rounds(now() - t0, env.target_s, env.min_rounds, env.max_rounds)
        benchmark = bench()
        benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=0)
        extra.update(time_s=benchmark.stats.stats.median,
                     time_method=f"perf_counter, median of {rounds} (pytest-benchmark), {env.threads} threads",
                     probe_seconds=probe["seconds"])

    # for the next n's time prediction: the fastest observation, the least disturbed by other load
    fastest = min([extra["time_s"], benchmark.stats.stats.min] + [extra.get("probe_seconds", math.inf)])
    env.last_time[_cases.series_key(case)] = (n, fastest)
    benchmark.extra_info.update(case, label=_cases.label(case), status="ok", peak_extra_bytes=peak,
                                memory_method=memory_method, rounds=rounds, threads=env.threads, **extra)
