"""Benchmark report: run the suites (or read their JSON) and write tables and plots.

    python -m benchmarks.report                    # full CPU report (all CPUs as threads)
    python -m benchmarks.report --quick            # a few minutes on 2 cores: small sizes, few repeats
    python -m benchmarks.report --device cuda      # GPU report
    python -m benchmarks.report --from-json a.json [b.json ...]   # re-render without running

Writes ``benchmarks/results/<device-slug>[-quick].json`` and ``.md`` and PNG plots next to them
(``-time``, ``-speedup``, ``-memory``, ``-large-n``, ``-captions``), every file stamped with the device,
torch/CUDA versions, commit, date and thread count; files are replaced atomically.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from benchmarks import _peers, bench_smooth_ap_loss
from benchmarks._cases import PASSES, SECTIONS, label, make_inputs
from benchmarks._env import (
    REPO,
    RESULTS_DIR,
    default_threads,
    fmt_bytes,
    fmt_seconds,
    stamp,
    write_atomic,
    write_json_atomic,
)

# suite -> its pytest files: "rank" is the ops' suite (records with "suite": "rank"), one file per op;
# "smooth_ap_loss" runs its cases one process each (benchmarks/bench_smooth_ap_loss.py; CPU only)
SUITES = {"rank": ("benchmarks/bench_sigmoid_rank.py", "benchmarks/bench_vsl_loss.py"),
          "caption_index": ("benchmarks/bench_caption_index.py",),
          "smooth_ap_loss": ()}
LEGACY_SUITE_NAMES = {"captions": "caption_index"}  # records of earlier runs (--from-json)
RENDER_RESERVE_S = 45  # --time-budget: kept for rendering tables and plots after the suites
# (title, op, variant, ours label, reference label)
RANK_TABLES = [
    ("vsl_loss, row variant (the paper's Eq. 5)", "vsl_loss", "row", "vsl_ext row", "reference row"),
    ("vsl_loss, public-code variant", "vsl_loss", "public-code", "vsl_ext public-code", "public_code_vsl_loss"),
    ("sigmoid_rank", "sigmoid_rank", None, "vsl_ext", "reference"),
]


def peer_labels(op: str, variant: Optional[str], ref: str) -> List[str]:
    """The published formula (the reference) and the peers of benchmarks/_peers.py, in table order."""
    labels = [ref]
    for peer in _peers.PEERS_OF[(op, variant)]:
        labels.append(label({"impl": peer, "op": op, "variant": variant}))
    return labels


def fastest(idx, section: str, op: str, p: str, labels: List[str], n: int) -> Optional[dict]:
    """The fastest measured peer record at n (None if none ran)."""
    recs = [idx.get((section, op, p, lab, n)) for lab in labels]
    recs = [r for r in recs if _ok(r)]
    return min(recs, key=lambda r: r["time_s"]) if recs else None


def _check_mark(rec: Optional[dict]) -> str:
    if rec is None or rec.get("check_error") is None:
        return ""
    return "" if rec.get("check_ok") else " ✗"


# ---------------------------------------------------------------------------------------------- loading
def records_from_pytest_json(data: dict) -> dict:
    """pytest-benchmark JSON (with the suites' ``vsl`` section) -> report dict."""
    vsl = data.get("vsl") or {}
    records = []
    for bench in data.get("benchmarks", []):
        rec = dict(bench.get("extra_info", {}))
        if "suite" not in rec:
            continue
        stats = bench.get("stats", {})
        rec["stats"] = {k: stats.get(k) for k in ("min", "median", "mean", "max", "stddev", "rounds")}
        rec["name"] = bench.get("name")
        records.append(rec)
    records.extend(vsl.get("records", []))
    return {"stamp": vsl.get("stamp") or data.get("machine_info", {}).get("vsl_stamp", {}),
            "settings": vsl.get("settings", {}), "records": records}


def load(paths: List[Path]) -> dict:
    report = None
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        part = data if "records" in data else records_from_pytest_json(data)
        for rec in part["records"]:
            rec["suite"] = LEGACY_SUITE_NAMES.get(rec.get("suite"), rec.get("suite"))
        if report is None:
            report = part
            continue
        if part["stamp"].get("slug") != report["stamp"].get("slug"):
            print(f"warning: {path} is from {part['stamp'].get('slug')}, not {report['stamp'].get('slug')}",
                  file=sys.stderr)
        report["records"].extend(part["records"])
    if report is None or not report["stamp"]:
        raise SystemExit("no benchmark results with a device stamp in " + ", ".join(map(str, paths)))
    return report


def run_suites(args, json_path: Path) -> int:
    """The pytest suites of ``args.suites``; their pytest-benchmark JSON goes to ``json_path``."""
    cmd = [sys.executable, "-m", "pytest", *[f for s in args.suites for f in SUITES[s]], "-p", "no:cacheprovider",
           "-q", f"--benchmark-json={json_path}", "--benchmark-columns=min,median,max,rounds",
           "--benchmark-sort=name", f"--vsl-device={args.device}"]
    if args.quick:
        cmd.append("--vsl-quick")
    for opt in ("threads", "max_n", "max_case_seconds", "target_seconds"):
        value = getattr(args, opt)
        if value is not None:
            cmd.append(f"--vsl-{opt.replace('_', '-')}={value}")
    if args.sections:
        cmd += ["--vsl-sections", *args.sections]
    if args.time_budget is not None:
        # what is left of the budget, less a reserve for rendering the report afterwards
        left = args.time_budget - (time.monotonic() - args.started) - RENDER_RESERVE_S
        cmd.append(f"--vsl-time-budget={max(left, 1.0):.0f}")
    cmd.extend(args.pytest_args)
    print("+ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    return subprocess.call(cmd, cwd=REPO)


# ---------------------------------------------------------------------------------------------- tables
def _index(records: List[dict]) -> Dict[tuple, dict]:
    """(section, op, pass, label, n) -> record, for rank records (the window section has its own table)."""
    out = {}
    for rec in records:
        if rec.get("suite") == "rank" and rec.get("window") is None:
            out[(rec["section"], rec["op"], rec["pass"], rec.get("label") or label(rec), rec["n"])] = rec
    return out


def _time_cell(rec: Optional[dict]) -> str:
    if rec is None:
        return "-"
    if rec["status"] == "ok":
        return fmt_seconds(rec["time_s"])
    if rec["status"] == "does not fit":
        return f"does not fit (needs {fmt_bytes(rec['predicted_bytes'])})"
    if rec["status"] == "over time budget":
        return f"skipped (est. {fmt_seconds(rec['predicted_seconds'])})"
    if rec["status"] == "over session budget":
        return "not run (time budget)"
    return f"{rec['status']}"


def _mem_cell(rec: Optional[dict]) -> str:
    if rec is None:
        return "-"
    if rec["status"] == "ok":
        return fmt_bytes(rec["peak_extra_bytes"])
    if rec.get("predicted_bytes"):
        return f"≈ {fmt_bytes(rec['predicted_bytes'])} (n³ count)"
    return "-"


def _ok(rec):
    return rec is not None and rec["status"] == "ok"


def _speedup(ours, ref) -> str:
    if _ok(ours) and _ok(ref):
        return f"{ref['time_s'] / ours['time_s']:.3g}×"
    return "-"


def _md_table(header: List[str], rows: List[List[str]]) -> str:
    align = "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"
    lines = ["| " + " | ".join(header) + " |", align]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def window_fraction_note(n: int) -> str:
    """How much of the dense work the sorted paths can skip on these inputs: the share of each
    row's pairs inside the +-30 tau window (vsl_ext.kernels.cuda.window_fraction, 16 rows)."""
    from vsl_ext.kernels.cuda import window_fraction

    inputs = make_inputs(n)
    parts = [f"{name} {float(window_fraction(inputs[name], None, 1e-3)):.0%}" for name in ("S", "C")]
    return (f"Pairs inside the ±30 tau window at n = {n} (what the sorted paths evaluate; the rest is "
            f"counted): {', '.join(parts)}. The CPU sorted path gains even where this is high (a pair "
            "there costs a multiply-add and a divide, no exp); the CUDA one only by the pairs it skips.")


def crossover(idx, op: str, dense: str, sorted_: str) -> Optional[int]:
    """Smallest measured n from which the sorted path is at least as fast as dense at every larger n."""
    ns = sorted(n for (sec, o, p, lab, n) in idx if sec == "large-n" and o == op and lab == dense)
    pairs = [(n, idx.get(("large-n", op, "forward+backward", dense, n)),
              idx.get(("large-n", op, "forward+backward", sorted_, n))) for n in ns]
    pairs = [(n, d["time_s"], s["time_s"]) for n, d, s in pairs if _ok(d) and _ok(s)]
    best = None
    for n, d, s in reversed(pairs):
        if s <= d:
            best = n
        else:
            break
    return best


def stamp_line(stamp: dict) -> str:
    parts = [stamp.get("device_name", "?"), f"{stamp.get('threads')} CPU threads",
             f"torch {stamp.get('torch')}"]
    if stamp.get("cuda"):
        parts.append(f"CUDA {stamp['cuda']}")
    parts += [f"vsl_ext {stamp.get('vsl_ext')} @ {stamp.get('commit')}", stamp.get("date", "")]
    return " · ".join(parts)


def render_markdown(report: dict, plots: Dict[str, str]) -> str:
    stamp, settings, records = report["stamp"], report["settings"], report["records"]
    idx = _index(records)
    out = io.StringIO()
    w = lambda s="": out.write(s + "\n")  # noqa: E731
    quick = settings.get("quick")
    w(f"# vsl_ext benchmarks: {stamp.get('device_name')} ({stamp.get('device')}){' — quick run' if quick else ''}")
    w()
    w(f"**{stamp_line(stamp)}**")
    w()
    bi = stamp.get("build_info", {})
    w(f"- Reproduce: `{report.get('command', 'python -m benchmarks.report')}` (from the repository root)")
    arch = f" {bi['cuda_arch']}" if bi.get("cuda_arch") else ""
    w(f"- Build: OpenMP {bi.get('openmp')}, CUDA kernels {bi.get('cuda')}{arch}, "
      f"compiler {bi.get('compiler')}; Python {stamp.get('python')}; memory {stamp.get('memory_total_gb')} GiB")
    if idx:
        w("- Inputs: S = cosine similarities of random unit embeddings (d = 1024) with +0.5 on the diagonal; "
          f"C = {settings.get('semantic_source', '?')}; float32; tau = 1e-3.")
    if any(r.get("suite") in ("rank", "caption_index") for r in records):  # the pytest suites' settings
        if stamp.get("device") == "cuda":
            w("- Time: CUDA events around each call after warm-up, median of the repeats.")
            w("- Peak memory: `torch.cuda.max_memory_allocated` during one call minus the memory allocated before it.")
        else:
            w(f"- Time: median wall time of the repeats (pytest-benchmark, perf_counter) after a warm-up call; "
              f"torch.set_num_threads({stamp.get('threads')}). A case whose single call exceeds the timing target "
              f"({fmt_seconds(settings.get('target_seconds'))}) is timed by that one call, made in the memory probe's "
              "fresh process.")
            w("- Peak memory: extra peak RSS of one call in a fresh process per case (VmHWM - VmRSS after loading "
              "the inputs).")
        limit = settings.get("memory_limit_bytes")
        w(f"- \"does not fit\": the reference's n³ tensors (counted: peak number alive at once × n³ × 4 B) exceed "
          f"{settings.get('memory_fraction')} of the free memory{f' ({fmt_bytes(limit)})' if limit else ''}; "
          "never attempted. \"skipped (est.)\": one call was predicted (n³ from the previous n) to exceed "
          f"{fmt_seconds(settings.get('max_case_seconds'))}.")
    if quick:
        w("- **Quick run**: small sizes and few repeats; times are indicative only.")
    w()

    # summary
    w("## Summary")
    w()
    for title, op, variant, ours, ref in RANK_TABLES:
        for p in PASSES:
            ns = sorted(n for (sec, o, pp, lab, n) in idx if sec == "main" and o == op and pp == p and lab == ours)
            both = [n for n in ns if _ok(idx.get(("main", op, p, ours, n))) and _ok(idx.get(("main", op, p, ref, n)))]
            ran = [n for n in ns if _ok(idx.get(("main", op, p, ours, n)))]
            if not ran:
                continue
            line = f"- {title.split(',')[0]}{' ' + variant if variant else ''}, {p}: "
            peers = peer_labels(op, variant, ref)
            ratios = []
            for n in ran:
                best = fastest(idx, "main", op, p, peers, n)
                if best is not None:
                    ratios.append(f"n = {n}: {_speedup(idx[('main', op, p, ours, n)], best)} "
                                  f"({best.get('label')})")
            if ratios:
                line += "ratio to the fastest peer " + ", ".join(ratios) + "; "
            if both:
                n = both[-1]
                o, r = idx[("main", op, p, ours, n)], idx[("main", op, p, ref, n)]
                line += (f"at n = {n}, {fmt_seconds(o['time_s'])} vs {fmt_seconds(r['time_s'])} "
                         f"(speed-up {_speedup(o, r)}), peak memory {fmt_bytes(o['peak_extra_bytes'])} vs "
                         f"{fmt_bytes(r['peak_extra_bytes'])}; ")
            line += f"vsl_ext runs up to n = {ran[-1]} ({fmt_seconds(idx[('main', op, p, ours, ran[-1])]['time_s'])})."
            w(line)
    for op in ("sigmoid_rank", "vsl_loss"):
        dense, srt = ("vsl_ext dense", "vsl_ext sorted") if op == "sigmoid_rank" else ("vsl_ext row dense",
                                                                                         "vsl_ext row sorted")
        x = crossover(idx, op, dense, srt)
        if any(k[0] == "large-n" and k[1] == op for k in idx):
            w(f"- {op} dense vs sorted (forward+backward): "
              + (f"sorted is as fast or faster from n = {x} on." if x else "sorted never overtook dense here."))
    summary = bench_smooth_ap_loss.summary_line([r for r in records if r.get("suite") == "smooth_ap_loss"])
    if summary:
        w(summary)
    w()
    if plots:
        w(" ".join(f"[{name}]({path})" for name, path in plots.items()))
        w()

    # rank tables
    for title, op, variant, ours, ref in RANK_TABLES:
        for p in PASSES:
            ns = sorted({n for (sec, o, pp, lab, n) in idx if sec == "main" and o == op and pp == p
                         and lab in (ours, ref)})
            if not ns:
                continue
            w(f"## {title}: {p}")
            w()
            peers = [lab for lab in peer_labels(op, variant, ref)
                     if any(k[0] == "main" and k[1] == op and k[2] == p and k[3] == lab for k in idx)]
            rows = []
            for n in ns:
                o = idx.get(("main", op, p, ours, n))
                best = fastest(idx, "main", op, p, peers, n)
                row = [str(n), _speedup(o, best), best.get("label") if best else "-",
                       _time_cell(o) + _check_mark(o), _mem_cell(o),
                       _time_cell(best) if best else "-", _mem_cell(best) if best else "-"]
                for lab in peers:
                    r = idx.get(("main", op, p, lab, n))
                    row.append(_time_cell(r) + _check_mark(r) + (f" · {_mem_cell(r)}" if _ok(r) else ""))
                errs = [rec.get("check_error") for rec in [o] + [idx.get(("main", op, p, lab, n)) for lab in peers]
                        if rec is not None and rec.get("check_error") is not None]
                row.append(f"{max(errs):.1e}" if errs else "-")
                rows.append(row)
            w(_md_table(["n", "ratio to fastest peer", "fastest peer", f"{ours} time", f"{ours} peak mem",
                         "fastest peer time", "its peak mem"] + [f"{lab} (time · peak mem)" for lab in peers]
                        + ["max check error"], rows))
            w()
            w(f"Ratio: the fastest peer's time / {ours}'s at each n. Check: every implementation's value and "
              f"gradient against the formula in float64 on the same inputs, in the same run, max |x - x64| / "
              f"max |x64| (n ≤ {_peers.CHECK_MAX_N.get(stamp.get('device'), '?')}); ✗ marks one above "
              f"{_peers.CHECK_TOLERANCE:g}.")
            w()

    # large n
    large = sorted({n for (sec, o, p, lab, n) in idx if sec == "large-n"})
    if large:
        w("## Large n: dense vs sorted paths (forward+backward, issue 6)")
        w()
        rows = []
        for n in large:
            row = [str(n)]
            for op, dense, srt in (("sigmoid_rank", "vsl_ext dense", "vsl_ext sorted"),
                                   ("vsl_loss", "vsl_ext row dense", "vsl_ext row sorted")):
                d, s = idx.get(("large-n", op, "forward+backward", dense, n)), \
                    idx.get(("large-n", op, "forward+backward", srt, n))
                row += [_time_cell(d), _time_cell(s), _speedup(s, d), _mem_cell(s)]
            rows.append(row)
        w(_md_table(["n", "sigmoid_rank dense", "sorted", "sorted speed-up", "sorted peak mem",
                     "vsl_loss dense", "sorted", "sorted speed-up", "sorted peak mem"], rows))
        w()
        for op, dense, srt in (("sigmoid_rank", "vsl_ext dense", "vsl_ext sorted"),
                               ("vsl_loss", "vsl_ext row dense", "vsl_ext row sorted")):
            x = crossover(idx, op, dense, srt)
            w(f"- {op}: crossover (sorted ≤ dense from here on): {'n = ' + str(x) if x else 'none measured'}")
        w(f"- {window_fraction_note(min(max(large), 2048))}")
        w()

    _render_window(w, [r for r in records if r.get("suite") == "rank" and r.get("window") is not None],
                   stamp.get("device"))
    _render_caption_index(w, [r for r in records if r.get("suite") == "caption_index"])
    for line in bench_smooth_ap_loss.render_section([r for r in records if r.get("suite") == "smooth_ap_loss"]):
        w(line)

    w("## Notes")
    w()
    not_run = [r for r in records if r.get("suite") != "smooth_ap_loss"  # listed in its section
               and r.get("status") not in (None, "ok", "does not fit", "over time budget", "over session budget")]
    for r in not_run:
        w(f"- {r.get('label') or r.get('impl')} {r.get('op', '')} {r.get('pass', '')} n={r.get('n', '')}: "
          f"{r['status']}: {r.get('reason', '')}")
    budget = settings.get("time_budget_seconds")
    cut = [r for r in records if r.get("status") == "over session budget"]
    if cut:
        w(f"- {len(cut)} case(s) not run: the run's time budget ({fmt_seconds(budget)}) was spent; "
          "rerun with a larger `--time-budget` or fewer `--sections` to fill them in.")
    for note in report.get("notes", []):
        w(f"- {note}")
    if stamp.get("device") != "cuda":
        w("- CPU report. GPU figures come from `python -m benchmarks.report --device cuda` on a GPU machine "
          "(see benchmarks/README.md, also for the ncu profiling command).")
    w()
    return out.getvalue()


def window_limit(recs: List[dict], n: int) -> Optional[float]:
    """Largest measured window share up to which the sorted path is at least as fast as dense at this
    n (every smaller share included); None if dense wins already at the smallest."""
    by = {(r["window"], r["algorithm"]): r for r in recs if r["n"] == n and _ok(r)}
    best = None
    for fraction in sorted({f for f, _ in by}):
        d, s = by.get((fraction, "dense")), by.get((fraction, "sorted"))
        if d is None or s is None or s["time_s"] > d["time_s"]:
            break
        best = s.get("window_fraction", fraction)
    return best


def _render_window(w, recs: List[dict], device: str) -> None:
    if not recs:
        return
    ns = sorted({r["n"] for r in recs})
    fractions = sorted({r["window"] for r in recs})
    by = {(r["n"], r["window"], r["algorithm"]): r for r in recs}
    w("## Dense vs sorted by window share (sigmoid_rank, forward+backward)")
    w()
    w("Rows of i.i.d. uniform values spread so that a set share of each row's pairs lies inside the "
      "±30 tau window (`benchmarks/_cases.window_input`; measured share in brackets); dense does the "
      "same work whatever the share, the sorted path evaluates only the pairs inside the window.")
    w()
    rows = []
    for fraction in fractions:
        measured = [by[k]["window_fraction"] for k in by if k[1] == fraction and "window_fraction" in by[k]]
        row = [f"{fraction:.0%}" + (f" ({sum(measured) / len(measured):.1%})" if measured else "")]
        for n in ns:
            d, s = by.get((n, fraction, "dense")), by.get((n, fraction, "sorted"))
            row += [_time_cell(d), _time_cell(s), _speedup(s, d)]
        rows.append(row)
    header = ["pairs in window"]
    for n in ns:
        header += [f"n={n} dense", "sorted", "speed-up"]
    w(_md_table(header, rows))
    w()
    for n in ns:
        limit = window_limit(recs, n)
        w(f"- n = {n}: sorted ≤ dense " + (f"up to {limit:.0%} of pairs in the window" if limit is not None
                                           else "at no measured share"))
    if device == "cuda":
        from vsl_ext.kernels import cuda as cuda_kernels
        w(f"- `algorithm=\"auto\"` on CUDA takes the sorted algorithm from {cuda_kernels.SORTED_FROM_COLS} columns "
          f"when at most {cuda_kernels.SORTED_MAX_WINDOW_FRACTION:.0%} of the sampled pairs are in the window "
          "(`csrc/vsl_constants.h`, applied in `vsl_ext/kernels/cuda.py`).")
    w()


def _render_caption_index(w, recs: List[dict]) -> None:
    if not recs:
        return
    w("## Caption index (issue 3)")
    w()
    build = [r for r in recs if r.get("kind") == "build" and r["status"] == "ok"]
    if build:
        rows = [[r["impl"], fmt_seconds(r["time_s"]), fmt_bytes(r.get("nbytes")), str(r.get("num_captions", "")),
                 str(r.get("vocab_size", ""))] for r in build]
        w(f"Build over {build[0].get('corpus', '')}:")
        w()
        w(_md_table(["index", "build time", "bytes", "captions", "vocab / features"], rows))
        w()
    sims = [r for r in recs if r.get("kind") == "image_similarity" and r["status"] == "ok"]
    if sims:
        impls = [i for i in ("vsl_ext tfidf", "vsl_ext cider-d", "published dense tfidf", "cupyx sparse tfidf")
                 if any(r["impl"] == i for r in sims)]
        by = {(r["impl"], r["B"]): r for r in sims}
        rows = []
        for b in sorted({r["B"] for r in sims}):
            row = [str(b)] + [fmt_seconds(by[(i, b)]["time_s"]) if (i, b) in by else "-" for i in impls]
            row.append(_speedup(by.get(("vsl_ext tfidf", b)), by.get(("published dense tfidf", b))))
            diff = by.get(("vsl_ext tfidf", b), {}).get("max_abs_diff_vs_published")
            row.append(f"{diff:.1e}" if diff is not None else "-")
            rows.append(row)
        w("Per-batch `image_similarity` (B images, 5 captions each; the published route is dense tf-idf rows -> "
          "float32 tensor -> torch.mm -> 5x5 avg-pool, timed including building the dense batch tensor):")
        w()
        w(_md_table(["B"] + impls + ["tfidf speed-up vs published", "max abs diff"], rows))
        w()
    cider = {r["impl"]: r for r in recs if r.get("kind") == "cider_d" and r["status"] == "ok"}
    if cider:
        rows = []
        for impl, r in cider.items():
            diff = r.get("max_abs_diff_vs_pycocoevalcap")
            rows.append([impl + (" (index build included)" if impl == "vsl_ext" else ""), fmt_seconds(r["time_s"]),
                         _speedup(r, cider.get("pycocoevalcap")) if impl == "vsl_ext" else "1×",
                         f"{diff:.1e}" if diff is not None else "-"])
        n_img = next(iter(cider.values())).get("num_images")
        w(f"CIDEr-D of {n_img} candidates (caption 0 of each image vs its captions 1-4):")
        w()
        w(_md_table(["implementation", "time", "speed-up", "max abs diff vs pycocoevalcap"], rows))
        w()


# ---------------------------------------------------------------------------------------------- plots
# one colour per implementation (the same in every plot), one marker and line style per variant, so
# that no two series of a panel look alike; the first matching prefix wins
FAMILY_COLOURS = (("vsl_ext", "C0"), ("public_code_vsl_loss", "C1"), ("published", "C1"), ("reference", "C1"),
                  ("torch.compile", "C2"), ("chunked", "C3"), ("numba.cuda", "C5"), ("numba", "C4"),
                  ("cupy", "C6"))
SPARE_COLOURS = ("C7", "C8", "C9", "tab:olive", "tab:cyan", "navy", "maroon")


def series_style(lab: str, variant_key: str = "") -> dict:
    """Line style of a series: colour by implementation family, marker and line by variant
    (public-code: squares, dashed; cider-d: triangles, dash-dotted; else circles, solid)."""
    colour = next((c for prefix, c in FAMILY_COLOURS if lab.startswith(prefix)), None)
    if colour is None:
        colour = SPARE_COLOURS[sum(map(ord, lab)) % len(SPARE_COLOURS)]
    text = f"{lab} {variant_key}"
    if "public-code" in text or "public_code" in text:
        return {"color": colour, "marker": "s", "linestyle": "--"}
    if "cider" in text:
        return {"color": colour, "marker": "^", "linestyle": "-."}
    if "sorted" in text:
        return {"color": colour, "marker": "D", "linestyle": "--"}
    return {"color": colour, "marker": "o", "linestyle": "-"}


def _legend_outside(ax, fontsize: int = 7) -> None:
    """The axes' legend to their right, outside the data area (it hides no point)."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=fontsize, frameon=False)


def build_figures(report: dict) -> List[tuple]:
    """The report's plots as matplotlib Figures: ``[(file suffix, title, figure)]``. Every figure
    has its legends outside the data areas, one style per series of a panel, and the stamp line
    (wrapped) as its bottom label, inside the figure."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.transforms as mtransforms
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogFormatterSciNotation, LogLocator, NullFormatter

    class _MinorInUnits(LogFormatterSciNotation):
        """Labels the minor ticks matplotlib labels on a short log axis (under about a decade), in the
        axis' units (10 ms, 20 ms) rather than as powers of ten (2 x 10^-2)."""

        def __init__(self, fmt):
            super().__init__(labelOnlyBase=False)
            self.fmt = fmt

        def __call__(self, x, pos=None):
            return self.fmt(x) if super().__call__(x, pos) else ""

    stamp, records = report["stamp"], report["records"]
    idx = _index(records)
    figures = []

    def new_figure(rows, cols, width, height, **kw):
        fig, grid = plt.subplots(rows, cols, figsize=(width, height), layout="constrained", squeeze=False, **kw)
        chars = int(width * 72 / (7 * 0.62))    # characters of 7-pt text that fit the figure's width
        fig.supxlabel("\n".join(textwrap.wrap(stamp_line(stamp), chars)), fontsize=7, color="0.35")
        return fig, grid

    def style(ax, title, xlabel, ylabel, yfmt, xs):
        ax.set_xscale("log")
        ax.set_yscale("log")
        if xs:
            ax.set_xticks(sorted(xs))
            if len(xs) == 1:   # one n (--quick): centred, not at the edge of a decade matplotlib adds
                ax.set_xlim(xs[0] / 2, xs[0] * 2)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(round(v))}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        if yfmt is not None:
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: yfmt(v)))
            ax.yaxis.set_minor_formatter(_MinorInUnits(yfmt))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)

    def series(section, op, p, lab, key="time_s"):
        pts = sorted((n, r[key]) for (s, o, pp, l_, n), r in idx.items()
                     if s == section and o == op and pp == p and l_ == lab and _ok(r))
        return [a for a, _ in pts], [b for _, b in pts]

    ops = {"sigmoid_rank": ["vsl_ext"] + peer_labels("sigmoid_rank", None, "reference"),
           "vsl_loss": ["vsl_ext row"] + peer_labels("vsl_loss", "row", "reference row")
           + ["vsl_ext public-code"] + peer_labels("vsl_loss", "public-code", "public_code_vsl_loss")}
    all_n = sorted({k[4] for k in idx if k[0] == "main"})
    passes = [p for p in PASSES if any(k[0] == "main" and k[2] == p for k in idx)]   # --quick: fwd+bwd only
    if all_n:
        # time vs n with an n^3 line: one row per op, one column per pass
        fig, grid = new_figure(len(ops), len(passes), max(8.0, 6.5 * len(passes)), 8.6)
        for row, op in zip(grid, ops):
            for ax, p in zip(row, passes):
                anchor = None
                for lab in ops[op]:
                    xs, ys = series("main", op, p, lab)
                    if xs:
                        ax.plot(xs, ys, label=lab, **series_style(lab))
                        if lab.startswith("reference") or lab.startswith("public"):
                            anchor = anchor or (xs[-1], ys[-1])
                if anchor is None:
                    xs, ys = series("main", op, p, ops[op][0])
                    anchor = (xs[-1], ys[-1]) if xs else None
                if anchor and len(all_n) > 1:   # a slope needs two n
                    ax.plot(all_n, [anchor[1] * (x / anchor[0]) ** 3 for x in all_n], "k:", lw=1, label="∝ n³")
                style(ax, f"{op}, {p}", "n", "time per call", fmt_seconds, all_n)
            _legend_outside(row[-1])
        figures.append(("time", "time vs n", fig))

        # speed-up vs n
        fig, grid = new_figure(1, len(passes), max(8.0, 6.5 * len(passes)), 4.6, sharey=True)
        for ax, p in zip(grid[0], passes):
            for _title, op, variant, ours, ref in RANK_TABLES:
                pts = []
                for n in all_n:
                    o = idx.get(("main", op, p, ours, n))
                    r = fastest(idx, "main", op, p, peer_labels(op, variant, ref), n)
                    if _ok(o) and _ok(r):
                        pts.append((n, r["time_s"] / o["time_s"]))
                if pts:
                    st = series_style(ours, op)
                    st["color"] = {"sigmoid_rank": "C2", "vsl_loss": "C0"}.get(op, st["color"])
                    ax.plot(*zip(*pts), label=f"{op}: {ours} vs the fastest peer", **st)
            ax.axhline(1, color="k", lw=0.8)
            style(ax, f"ratio to the fastest peer, {p}", "n", "fastest peer's time / vsl_ext time",
                  lambda v: f"{v:g}×", all_n)
            ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2, 5)))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
            ax.tick_params(axis="y", which="minor", labelsize=7)
        _legend_outside(grid[0][-1])
        figures.append(("speedup", "speed-up vs n", fig))

        # peak memory vs n: one row per op; the references' predicted n^3 memory (not run) dotted and
        # hollow; a measured 0 B (nothing allocated) cannot sit on a log axis: a triangle on the bottom edge
        fig, grid = new_figure(len(ops), len(passes), max(8.0, 6.5 * len(passes)), 8.6, sharey=True)
        limit = report["settings"].get("memory_limit_bytes")
        zeros_at: Dict[tuple, int] = {}
        for row, (op, labs) in zip(grid, ops.items()):
            zero_seen = predicted_seen = False
            for ax, p in zip(row, passes):
                for lab in labs:
                    pts = sorted((n, r["peak_extra_bytes"]) for (s, o, pp, l_, n), r in idx.items()
                                 if s == "main" and o == op and pp == p and l_ == lab and _ok(r))
                    if not pts:
                        continue
                    st = series_style(lab)
                    pos = [(n, b) for n, b in pts if b > 0]
                    # a 0 B point breaks the line (NaN): no line is drawn through values that are not there
                    ax.plot([a for a, _ in pts], [b if b > 0 else float("nan") for _, b in pts], label=lab, **st)
                    for n in (n for n, b in pts if b <= 0):
                        zero_seen = True
                        stacked = zeros_at.setdefault((id(ax), n), 0)   # several 0 B series at one n: stacked
                        zeros_at[(id(ax), n)] += 1
                        shift = mtransforms.ScaledTranslation(0, (3 + 8 * stacked) / 72, fig.dpi_scale_trans)
                        ax.plot([n], [0.0], linestyle="none", marker="v", color=st["color"], markersize=6,
                                mfc="none" if st["linestyle"] != "-" else st["color"],   # hollow: public-code
                                transform=ax.get_xaxis_transform() + shift, clip_on=False)
                    pred = sorted((n, r["predicted_bytes"]) for (s, o, pp, l_, n), r in idx.items()
                                  if s == "main" and o == op and pp == p and l_ == lab
                                  and r["status"] == "does not fit")
                    if pred and pos:
                        predicted_seen = True
                        ax.plot([pos[-1][0]] + [a for a, _ in pred], [pos[-1][1]] + [b for _, b in pred],
                                linestyle=":", marker=st["marker"], mfc="none", color=st["color"])
                if limit:
                    ax.axhline(limit, color="r", lw=0.8, ls=(0, (1, 3)), label="memory limit")
                style(ax, f"{op}: peak extra memory, {p}", "n", "peak extra memory", fmt_bytes, all_n)
            handles, labels = row[-1].get_legend_handles_labels()
            if zero_seen:
                handles.append(Line2D([], [], linestyle="none", marker="v", color="0.3"))
                labels.append("0 B measured (above the n axis)")
            if predicted_seen:
                handles.append(Line2D([], [], linestyle=":", marker="o", mfc="none", color="0.3"))
                labels.append("the reference's n³ tensors, not run")
            row[-1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                           fontsize=7, frameon=False)
        figures.append(("memory", "peak memory vs n", fig))

    if any(k[0] == "large-n" for k in idx):
        fig, grid = new_figure(1, 2, 13, 4.6)
        for ax, (op, labs) in zip(grid[0], [("sigmoid_rank", ["vsl_ext dense", "vsl_ext sorted"]),
                                            ("vsl_loss", ["vsl_ext row dense", "vsl_ext row sorted"])]):
            for lab in labs:
                xs, ys = series("large-n", op, "forward+backward", lab)
                if xs:
                    st = series_style(lab)
                    if "dense" in lab:
                        st["color"] = "C1"
                    ax.plot(xs, ys, label=lab, **st)
            x = crossover(idx, op, *labs)
            if x:
                ax.axvline(x, color="k", ls=":", lw=0.8, label=f"crossover n = {x}")
            style(ax, f"{op} forward+backward: dense vs sorted", "n", "time per call", fmt_seconds,
                  sorted({k[4] for k in idx if k[0] == "large-n"}))
            _legend_outside(ax)
        figures.append(("large-n", "dense vs sorted", fig))

    sims = [r for r in records if r.get("kind") == "image_similarity" and r.get("status") == "ok"]
    if sims:
        fig, grid = new_figure(1, 1, 8, 4.6)
        ax = grid[0][0]
        for impl in sorted({r["impl"] for r in sims}):
            pts = sorted((r["B"], r["time_s"]) for r in sims if r["impl"] == impl)
            ax.plot(*zip(*pts), label=impl, **series_style(impl.split()[0], impl))
        style(ax, "image_similarity per batch", "B (images, 5 captions each)", "time per batch", fmt_seconds,
              sorted({r["B"] for r in sims}))
        _legend_outside(ax)
        figures.append(("captions", "caption similarity vs B", fig))
    return figures


def render_plots(report: dict, out_dir: Path, stem: str) -> Dict[str, str]:
    """PNG files of :func:`build_figures` (written atomically); returns {title: file name}."""
    import matplotlib.pyplot as plt

    written = {}
    for suffix, title, fig in build_figures(report):
        buf = io.BytesIO()
        try:
            fig.savefig(buf, format="png", dpi=110)
        finally:
            plt.close(fig)
        name = f"{stem}-{suffix}.png"
        write_atomic(out_dir / name, buf.getvalue())
        written[title] = name
    return written


def run_pytest_suites(args):
    """(report of the pytest suites, pytest's exit code); a report with only a stamp when no pytest suite
    is asked for; (None, code) when the suites wrote nothing."""
    if not any(SUITES[s] for s in args.suites):
        threads = args.threads or default_threads()
        return {"stamp": stamp(args.device, threads), "settings": {"quick": args.quick}, "records": []}, 0
    with tempfile.TemporaryDirectory(prefix="vsl-report-") as tmp:
        raw = Path(tmp) / "suites.json"
        rc = run_suites(args, raw)
        if not raw.exists():
            print(f"the suites wrote no results (pytest exit code {rc})", file=sys.stderr)
            return None, rc
        if args.save_raw:
            write_atomic(args.save_raw, raw.read_text())
        return load([raw]), rc


def run_smooth_ap_suite(args, report: dict) -> None:
    """The smooth_ap_loss suite's records into ``report`` (CPU only: a note on CUDA)."""
    if args.device != "cpu":
        report.setdefault("notes", []).append("smooth_ap_loss suite: CPU only, not run on CUDA")
        return
    deadline = None
    if args.time_budget is not None:
        deadline = args.started + args.time_budget - RENDER_RESERVE_S
    report["records"].extend(bench_smooth_ap_loss.run_cases(
        report["stamp"].get("threads") or args.threads or default_threads(), quick=args.quick, max_n=args.max_n,
        target_s=args.target_seconds or (0.3 if args.quick else 2.0), max_case_seconds=args.max_case_seconds or 600.0,
        deadline=deadline))


# ---------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats (< 3 min on 2 cores)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: all CPUs this process may use)")
    ap.add_argument("--suites", nargs="+", choices=sorted(SUITES),
                    help="suites to run, in this order (default: rank caption_index, and smooth_ap_loss on the CPU)")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS,
                    help="rank suite sections to run, in this order (default: main large-n window)")
    ap.add_argument("--time-budget", type=float, metavar="SECONDS",
                    help="finish within this many seconds: cases with no room left are listed as not run "
                         "and the report is still written (for machines lent for a fixed time)")
    ap.add_argument("--max-n", type=int, help="largest n / B to run")
    ap.add_argument("--max-case-seconds", type=float, help="skip cases predicted to take longer per call")
    ap.add_argument("--target-seconds", type=float, help="timing time per case (sets the repeats)")
    ap.add_argument("--from-json", nargs="+", type=Path, metavar="FILE",
                    help="render from pytest-benchmark JSON of the suites (or a report JSON) instead of running")
    ap.add_argument("--save-raw", type=Path, metavar="FILE", help="also keep the suites' pytest-benchmark JSON")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="output folder (default benchmarks/results)")
    ap.add_argument("--note", action="append", default=[], help="a line for the report's notes (repeatable)")
    ap.add_argument("--pytest-args", nargs=argparse.REMAINDER, default=[], help="passed on to pytest")
    args = ap.parse_args(argv)
    args.started = time.monotonic()
    os.chdir(REPO)

    rc = 0
    if args.from_json:
        report = load(args.from_json)
    else:
        if args.suites is None:
            args.suites = ["rank", "caption_index"] + (["smooth_ap_loss"] if args.device == "cpu" else [])
        report, rc = run_pytest_suites(args)
        if report is None:
            return rc or 1
        if "smooth_ap_loss" in args.suites:
            run_smooth_ap_suite(args, report)
        report["command"] = "python -m benchmarks.report " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    report.setdefault("command", "python -m benchmarks.report" + (" --quick" if report["settings"].get("quick")
                                                                   else ""))
    report["notes"] = list(report.get("notes", [])) + list(args.note)
    if rc not in (0, 5):
        report["notes"].append(f"pytest exit code {rc}: some cases failed; see the run's log")

    stem = report["stamp"]["slug"] + ("-quick" if report["settings"].get("quick") else "")
    plots = render_plots(report, args.out, stem)
    md = render_markdown(report, plots)
    write_json_atomic(args.out / f"{stem}.json", report)
    write_atomic(args.out / f"{stem}.md", md)
    print(f"wrote {args.out / (stem + '.md')}, {stem}.json and {len(plots)} plots", flush=True)
    return 0 if rc in (0, 5) else rc


if __name__ == "__main__":
    sys.exit(main())
