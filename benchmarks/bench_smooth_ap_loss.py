"""The benchmark report's ``smooth_ap_loss`` suite (Smooth-AP for any relevance): vsl_ext vs its peers,
forward+backward, time and peak memory, n = 64 ... 8192 on CPU.

    python -m benchmarks.report --suites smooth_ap_loss            # this suite alone
    python -m benchmarks.report                                   # with the others (CPU)

:func:`run_cases` runs the cases and :func:`render_section` writes the report's section. Each case is one
process (``python -m benchmarks.bench_smooth_ap_loss --one IMPL N``): n embeddings (dim 128, L2-normalised)
of n ** 0.5 classes of n ** 0.5 members (rounded to a power of two; classes equal to members, where
pytorch-metric-learning 2.9.0's SmoothAPLoss is right), the loss and its backward to the embeddings,
tau = 0.01. Peers in the same run:

* ``vsl_ext``: ``vsl_ext.smooth_ap_loss(xn @ xn.T, labels equal)``;
* ``pml``: ``pytorch_metric_learning.losses.SmoothAPLoss(0.01)(x, labels)`` (n^3 tensors);
* ``compile``: ``torch.compile`` (inductor) of ``vsl_ext.reference.smooth_ap_loss`` (the formula, n^3);
* ``chunked``: the formula over blocks of query rows, each block checkpointed (``torch.utils.checkpoint``),
  so that no block holds more than 2^24 pair terms: O(n^2) memory, the formula's O(n^3) work.

Time: median of the timed calls after the measured call (perf_counter), the report's torch threads. Memory:
extra peak RSS of the first call at this n in the case's fresh process (VmHWM - VmRSS after
``/proc/self/clear_refs``), after one call at n = 16 that initialises the libraries (``compile``: after
the call at this n that compiles). Cases whose n^3 tensors would exceed 4 GiB are not run ("does not
fit"), nor cases predicted (n^3 from the previous n) to exceed the report's ``--max-case-seconds`` or
its ``--time-budget``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

from benchmarks._env import fmt_bytes, fmt_seconds

REPO = Path(__file__).resolve().parent.parent
IMPLS = ("vsl_ext", "pml", "compile", "chunked")
N_ALL = [64, 128, 256, 512, 1024, 2048, 4096, 8192]
N_QUICK = [64, 128]
QUICK_IMPLS = ("vsl_ext", "pml", "chunked")  # torch.compile's compilation alone takes longer than a quick run
CUBIC = {"pml": 8, "compile": 6}  # about this many float32 n^3 tensors alive at the peak
CHUNK_TERMS = 1 << 24


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _inputs(n: int):
    import torch
    classes = 2 ** int(round(math.log2(n) / 2))
    members = n // classes
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, 128, generator=g)
    labels = torch.arange(classes).repeat_interleave(members)
    return x, labels


def _chunked_formula(sims, rel, tau):
    import torch
    from torch.utils.checkpoint import checkpoint

    from vsl_ext import reference
    rows = max(1, CHUNK_TERMS // (sims.shape[1] ** 2))

    def block(s, p):
        ratio = reference.sigmoid_rank_among(s, p, tau) / reference.sigmoid_rank(s, tau)
        ratio = torch.where(p, ratio, torch.zeros((), dtype=s.dtype))
        return (ratio.sum(-1) / p.sum(-1).clamp(min=1)).sum()

    total = sum(checkpoint(block, sims[a:a + rows], rel[a:a + rows], use_reentrant=False)
                for a in range(0, sims.shape[0], rows))
    return 1.0 - total / rel.any(-1).sum()


def _make_call(impl: str, x, labels):
    import torch
    import torch.nn.functional as F

    import vsl_ext
    from vsl_ext import reference
    tau = 0.01
    rel = labels[:, None] == labels[None, :]
    if impl == "vsl_ext":
        def loss(x):
            xn = F.normalize(x, dim=1)
            return vsl_ext.smooth_ap_loss(xn @ xn.t(), rel, tau)
    elif impl == "pml":
        from pytorch_metric_learning.losses import SmoothAPLoss
        pml = SmoothAPLoss(temperature=tau)

        def loss(x):
            return pml(x, labels)
    elif impl == "compile":
        formula = torch.compile(reference.smooth_ap_loss)

        def loss(x):
            xn = F.normalize(x, dim=1)
            return formula(xn @ xn.t(), rel, tau)
    elif impl == "chunked":
        def loss(x):
            xn = F.normalize(x, dim=1)
            return _chunked_formula(xn @ xn.t(), rel, tau)
    else:
        raise ValueError(impl)

    def call():
        xr = x.detach().requires_grad_()
        out = loss(xr)
        out.backward()
        return out.item()
    return call


def run_one(impl: str, n: int, threads: int, target_s: float) -> dict:
    """One case in this (fresh) process."""
    import torch
    torch.set_num_threads(threads)
    x, labels = _inputs(n)
    call = _make_call(impl, x, labels)
    if impl == "compile":
        call()  # compiles for this n
    else:
        _make_call(impl, *_inputs(16))()  # one-time initialisation (libraries, dispatcher) outside the measurement
    before = _rss_kb("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    value = call()
    first = time.perf_counter() - t0
    peak = (_rss_kb("VmHWM") - before) * 1024
    times = []
    while len(times) < 3 and sum(times) < target_s or sum(times) < target_s and len(times) < 50:
        if first > target_s and times:
            break  # one more call after the measured one is enough at this cost
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"impl": impl, "n": n, "loss": value, "time_s": times[len(times) // 2], "rounds": len(times),
            "peak_extra_bytes": peak, "threads": threads}


def _run_one_process(impl: str, n: int, threads: int, target_s: float,
                     timeout_s: Optional[float]) -> subprocess.CompletedProcess:
    """``--one IMPL N`` in a fresh process."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "benchmarks.bench_smooth_ap_loss", "--one", impl, str(n),
                           "--threads", str(threads), "--target-seconds", str(target_s)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)


def run_cases(threads: int, quick: bool = False, max_n: Optional[int] = None, target_s: float = 2.0,
              max_case_seconds: float = 600.0, cube_limit_bytes: float = 4 << 30,
              deadline: Optional[float] = None) -> List[dict]:
    """Every case, ascending n, each in a fresh process; returns the records (``"suite":
    "smooth_ap_loss"``; ``status`` "ok", or why a case was not run). A case is not run when its n^3
    tensors exceed ``cube_limit_bytes``, when a smaller n of the implementation was not run, when it is
    predicted (n^3 from the previous n) to exceed ``max_case_seconds``, or when ``deadline``
    (time.monotonic()) would pass first."""
    impls = QUICK_IMPLS if quick else IMPLS
    records, last = [], {}
    for n in [n for n in (N_QUICK if quick else N_ALL) if max_n is None or n <= max_n]:
        for impl in impls:
            rec = {"suite": "smooth_ap_loss", "impl": impl, "n": n, "threads": threads}
            cube = CUBIC.get(impl, 0) * 4 * n ** 3
            prev = last.get(impl)
            predicted = prev[1] * (n / prev[0]) ** 3 if prev else None
            left = None if deadline is None else deadline - time.monotonic()
            if cube > cube_limit_bytes:
                rec["status"] = f"does not fit (needs about {fmt_bytes(cube)} of n^3 tensors)"
            elif left is not None and (left <= 0 or (predicted is not None and 3 * predicted > left)):
                rec["status"] = "not run (time budget)"
            elif impl in last and last[impl] is None:
                rec["status"] = "not run (a smaller n was not run)"
            elif predicted is not None and predicted > max_case_seconds:
                rec["status"] = f"not run (predicted {fmt_seconds(predicted)} per call)"
            else:
                try:
                    proc = _run_one_process(impl, n, threads, target_s, left)
                except subprocess.TimeoutExpired:
                    rec["status"] = "not run (time budget)"
                else:
                    if proc.returncode != 0:
                        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                        rec["status"] = f"failed: {tail[:120]}"
                    else:
                        rec.update(json.loads(proc.stdout.strip().splitlines()[-1]), status="ok")
            if rec["status"] == "ok":
                last[impl] = (n, rec["time_s"])
            elif impl not in last:
                last[impl] = None
            records.append(rec)
            print(json.dumps(rec), flush=True)
    return records


def _ratio(ours: dict, peers: List[dict]) -> str:
    best = min(peers, key=lambda r: r["time_s"])
    return f"{best['time_s'] / ours['time_s']:.1f}× ({best['impl']})"


def _rows_by_n(records: List[dict]):
    for n in sorted({r["n"] for r in records}):
        row = {r["impl"]: r for r in records if r["n"] == n}
        ours = row.get("vsl_ext", {})
        peers = [r for i, r in row.items() if i != "vsl_ext" and r.get("status") == "ok"]
        yield n, row, ours if ours.get("status") == "ok" else None, peers


def summary_line(records: List[dict]) -> str:
    """The report summary's line for the suite ("" without records)."""
    ratios = [f"n = {n}: {_ratio(ours, peers)}" for n, _, ours, peers in _rows_by_n(records) if ours and peers]
    ran = [(n, ours) for n, _, ours, _ in _rows_by_n(records) if ours]
    if not ran:
        return ""
    n, ours = ran[-1]
    return (f"- smooth_ap_loss, forward+backward: ratio to the fastest peer {', '.join(ratios) or '-'}; vsl_ext runs "
            f"up to n = {n} ({fmt_seconds(ours['time_s'])}, peak memory {fmt_bytes(ours['peak_extra_bytes'])}).")


def render_section(records: List[dict]) -> List[str]:
    """The report's Markdown section for the suite's records (empty without any)."""
    if not records:
        return []
    impls = [i for i in IMPLS if any(r["impl"] == i for r in records)]
    threads = sorted({r.get("threads") for r in records if r.get("threads")})
    lines = [
        "## Smooth-AP (smooth_ap_loss): forward+backward vs peers",
        "",
        "Inputs: n embeddings (dim 128, L2-normalised) in sqrt(n) classes of sqrt(n) members (powers of two; "
        "pytorch-metric-learning 2.9.0's SmoothAPLoss is right only with as many classes as members), relevance "
        "= same class, diagonal included, tau = 0.01; the loss from the embeddings and its backward to them, "
        f"{'/'.join(map(str, threads))} torch threads. Peers: `pml` = PML's SmoothAPLoss (n³ tensors), "
        "`compile` = torch.compile of the formula (`vsl_ext.reference.smooth_ap_loss`), `chunked` = the "
        "formula over checkpointed blocks of query rows (O(n²) memory, O(n³) work). Time: median after the "
        "measured call; memory: extra peak RSS of that call in the case's fresh process (compile: its second "
        "call).",
        "",
        "| n | " + " | ".join(f"{i} time" for i in impls) + " | " + " | ".join(f"{i} peak mem" for i in impls)
        + " | ratio to the fastest peer | pml / vsl_ext |",
        "|---|" + "---|" * (2 * len(impls) + 2),
    ]
    for n, row, ours, peers in _rows_by_n(records):
        def cell(impl, key, row=row):
            r = row.get(impl)
            if r is None:
                return ""
            if r["status"] != "ok":
                return r["status"].split(" (")[0]
            return fmt_seconds(r["time_s"]) if key == "time" else fmt_bytes(r["peak_extra_bytes"])
        ratio = _ratio(ours, peers) if ours and peers else ""
        pml = [r for r in peers if r["impl"] == "pml"]
        vs_pml = f"{pml[0]['time_s'] / ours['time_s']:.1f}×" if ours and pml else ""
        lines.append(f"| {n} | " + " | ".join(cell(i, "time") for i in impls) + " | "
                     + " | ".join(cell(i, "peak") for i in impls) + f" | {ratio} | {vs_pml} |")
    skipped = [r for r in records if r["status"] != "ok"]
    if skipped:
        lines += ["", "Not run: " + "; ".join(f"{r['impl']} n = {r['n']}: {r['status']}" for r in skipped) + "."]
    lines.append("")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="one case of the report's smooth_ap_loss suite (internal)")
    ap.add_argument("--one", nargs=2, metavar=("IMPL", "N"), required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--target-seconds", type=float, default=2.0)
    args = ap.parse_args(argv)
    print(json.dumps(run_one(args.one[0], int(args.one[1]), args.threads, args.target_seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
