"""smooth_ap_loss (Smooth-AP for any relevance, issue 24): vsl_ext vs its peers, forward+backward, time and
peak memory, n = 64 ... 8192 on CPU; writes the report section ``benchmarks/results/smooth_ap_loss-<device>.md``.

    python -m benchmarks.bench_smooth_ap_loss --threads 2                 # the committed section
    python -m benchmarks.bench_smooth_ap_loss --threads 2 --max-n 256     # a quick look

Each case is one process (``--one``): n embeddings (dim 128, L2-normalised) of n ** 0.5 classes of n ** 0.5
members (rounded to a power of two; classes equal to members, where pytorch-metric-learning 2.9.0's
SmoothAPLoss is right), the loss and its backward to the embeddings, tau = 0.01. Peers in the same run:

* ``vsl_ext``: ``vsl_ext.smooth_ap_loss(xn @ xn.T, labels equal)``;
* ``pml``: ``pytorch_metric_learning.losses.SmoothAPLoss(0.01)(x, labels)`` (n^3 tensors);
* ``compile``: ``torch.compile`` (inductor) of ``vsl_ext.reference.smooth_ap_loss`` (the formula, n^3);
* ``chunked``: the formula over blocks of query rows, each block checkpointed (``torch.utils.checkpoint``),
  so that no block holds more than 2^24 pair terms: O(n^2) memory, the formula's O(n^3) work.

Time: median of the timed calls after the measured call (perf_counter), ``--threads`` torch threads. Memory:
extra peak RSS of the first call at this n in the case's fresh process (VmHWM - VmRSS after
``/proc/self/clear_refs``), after one call at n = 16 that initialises the libraries (``compile``: after
the call at this n that compiles). Cases whose n^3
tensors would exceed ``--cube-limit-mb`` are not run ("does not fit"), nor cases predicted (n^3 from the
previous n) to exceed ``--max-case-seconds``.
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

from benchmarks._env import cpu_name, write_atomic

REPO = Path(__file__).resolve().parent.parent
IMPLS = ("vsl_ext", "pml", "compile", "chunked")
N_ALL = [64, 128, 256, 512, 1024, 2048, 4096, 8192]
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


def _fmt_bytes(b: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= size:
            return f"{b / size:.1f} {unit}"
    return f"{b:.0f} B"


def _fmt_s(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def _run_one_process(impl: str, n: int, args) -> subprocess.CompletedProcess:
    """``--one IMPL N`` in a fresh process with this run's options."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "benchmarks.bench_smooth_ap_loss", "--one", impl, str(n),
                           "--threads", str(args.threads), "--target-seconds", str(args.target_seconds)],
                          cwd=REPO, env=env, capture_output=True, text=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--one", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-n", type=int, default=8192)
    ap.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    ap.add_argument("--target-seconds", type=float, default=2.0)
    ap.add_argument("--max-case-seconds", type=float, default=120.0)
    ap.add_argument("--cube-limit-mb", type=float, default=4096.0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--add", nargs=2, metavar=("IMPL", "N"),
                    help="run one more case and put it into the existing records (re-rendering the section)")
    ap.add_argument("--from-json", type=Path, help="re-render the section from these records")
    ap.add_argument("--note", default="", help="a line in the section's notes (e.g. the machine's load)")
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.threads, args.target_seconds)))
        return 0

    import torch

    import vsl_ext
    records, last = [], {}
    if args.from_json:
        records = json.loads(args.from_json.read_text())
    todo = [] if args.from_json else [n for n in N_ALL if n <= args.max_n]
    if args.add:
        impl, n_add = args.add[0], int(args.add[1])
        proc = _run_one_process(impl, n_add, args)
        proc.check_returncode()
        out = proc.stdout
        added = dict(json.loads(out.strip().splitlines()[-1]), status="ok", note="added with --add")
        records = [r for r in records if (r["impl"], r["n"]) != (impl, n_add)] + [added]
    for n in todo:
        for impl in args.impls:
            rec = {"impl": impl, "n": n}
            cube = CUBIC.get(impl, 0) * 4 * n ** 3
            prev = last.get(impl)
            predicted = prev[1] * (n / prev[0]) ** 3 if prev else None
            if cube > args.cube_limit_mb * (1 << 20):
                rec["status"] = f"does not fit (needs about {_fmt_bytes(cube)} of n^3 tensors)"
            elif impl in last and last[impl] is None:
                rec["status"] = "not run (a smaller n was not run)"
            elif predicted is not None and predicted > args.max_case_seconds:
                rec["status"] = f"not run (predicted {_fmt_s(predicted)} per call)"
            else:
                proc = _run_one_process(impl, n, args)
                if proc.returncode != 0:
                    tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                    rec["status"] = f"failed: {tail[:120]}"
                else:
                    rec.update(json.loads(proc.stdout.strip().splitlines()[-1]), status="ok")
            if rec["status"] == "ok":
                last[impl] = (n, rec["time_s"])
            elif impl not in last:
                last[impl] = None if rec["status"].startswith(("failed", "does not")) else last.get(impl)
            records.append(rec)
            print(json.dumps(rec), flush=True)

    slug = "cpu"
    lines = [
        "# Smooth-AP: vsl_ext vs peers (forward+backward, CPU)",
        "",
        f"Command: `python -m benchmarks.bench_smooth_ap_loss --threads {args.threads}"
        + (f" --max-n {args.max_n}" if args.max_n != 8192 else "") + "`",
        "",
        f"Device: {cpu_name()}, {args.threads} torch threads; torch {torch.__version__}, vsl_ext "
        f"{vsl_ext.__version__}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. A shared machine: other "
        "load shows in the medians." + (f" {args.note}" if args.note else ""),
        "",
        "Inputs: n embeddings (dim 128) in sqrt(n) classes of sqrt(n) members (powers of two), tau = 0.01; "
        "the loss from the embeddings and its backward to them. Time: median after a warm-up call. Memory: "
        "extra peak RSS of one call in a fresh process (torch.compile: its second call).",
        "",
        "| n | " + " | ".join(f"{i} time" for i in args.impls) + " | " + " | ".join(f"{i} peak" for i in args.impls)
        + " | PML / vsl_ext |",
        "|---|" + "---|" * (2 * len(args.impls) + 1),
    ]
    for n in sorted({r["n"] for r in records}):
        row = {r["impl"]: r for r in records if r["n"] == n}

        def cell(impl, key, row=row):
            r = row.get(impl)
            if r is None:
                return ""
            if r["status"] != "ok":
                return r["status"].split(" (")[0]
            return _fmt_s(r["time_s"]) if key == "time" else _fmt_bytes(r["peak_extra_bytes"])
        ratio = ""
        if row.get("pml", {}).get("status") == "ok" and row.get("vsl_ext", {}).get("status") == "ok":
            ratio = f"{row['pml']['time_s'] / row['vsl_ext']['time_s']:.1f}x"
        lines.append(f"| {n} | " + " | ".join(cell(i, "time") for i in args.impls) + " | "
                     + " | ".join(cell(i, "peak") for i in args.impls) + f" | {ratio} |")
    skipped = [r for r in records if r["status"] != "ok"]
    if skipped:
        lines += ["", "Not run:", ""] + [f"- {r['impl']} n={r['n']}: {r['status']}" for r in skipped]
    added = [r for r in records if r.get("note")]
    if added:
        lines += ["", "Added to this run's records afterwards (`--add IMPL N`, same options): "
                  + ", ".join(f"{r['impl']} n={r['n']}" for r in added) + "."]
    lines += ["", "Raw records: the `.json` file beside this one.", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"smooth_ap_loss-{slug}"
    write_atomic(stem.with_suffix(".md"), "\n".join(lines))
    write_atomic(stem.with_suffix(".json"), json.dumps(records, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
