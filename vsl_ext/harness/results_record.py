"""Results records: a table's columns and rows together with what produced them.

A record is the JSON file that ``tools/docs_tables.py`` renders with its ``record`` kind (files
under ``docs/results/`` and ``benchmarks/results/``)::

    {"columns": ["n", "vsl_ext", ...], "align": "lr...",        # align: "l"/"r" per column (optional)
     "rows": [["8", "0.149 ms", ...], ...],                      # cells as printed, strings
     "command": "python -m ...", "commit": "<sha>[+dirty]",
     "environment": {"torch": "2.13.0+cpu", "threads": 2, "machine": "...", "load": "4.6-6.4"},
     "note": "...", "data": {...}}                               # note, raw data: optional

``environment`` says what the numbers depend on: the torch version and CPU thread count, and for
timings the machine and its load average (1-minute, before and after the measurement).
"""
from __future__ import annotations

import json
import os
import subprocess
from typing import Optional, Sequence

from .._atomic import atomic_write


def machine() -> str:
    """The CPU's model name and the number of CPUs, e.g. ``"AMD EPYC 7B13, 2 CPUs"``."""
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    import platform

    return f"{name or platform.machine()}, {os.cpu_count()} CPUs"


def current_commit(repo: Optional[str] = None) -> str:
    """``git rev-parse HEAD`` of ``repo`` (default: the working directory, the checkout the
    measuring commands run from; an installed package has no checkout of its own), with ``+dirty``
    when tracked files differ from it; ``"unknown"`` outside a git checkout."""
    repo = os.getcwd() if repo is None else repo
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=repo).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def load_range(before: float, after: float) -> str:
    """The 1-minute load averages before and after a measurement as ``"low-high"`` (one decimal)."""
    low, high = sorted((before, after))
    return f"{low:.1f}-{high:.1f}"


def environment(threads: int, load: Optional[str] = None) -> dict:
    """What measured numbers depend on: torch version, CPU thread count, machine and (timings) load."""
    import torch

    env = {"torch": torch.__version__, "threads": int(threads), "machine": machine()}
    if load is not None:
        env["load"] = load
    return env


def write_record(path: str, columns: Sequence[str], rows: Sequence[Sequence[str]], command: str,
                 environment: dict, note: Optional[str] = None, align: Optional[str] = None,
                 data: Optional[dict] = None, commit: Optional[str] = None) -> dict:
    """Write a record to ``path`` (atomically) and return it. ``rows``: one list of cell strings per
    row, as many as ``columns``; ``commit`` defaults to :func:`current_commit`. Raises ValueError
    for a row of another width or an ``align`` that is not one "l"/"r" per column."""
    rows = [[str(c) for c in row] for row in rows]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"a row of {len(row)} cells under {len(columns)} columns: {row}")
    if align is not None and (len(align) != len(columns) or set(align) - set("lr")):
        raise ValueError(f"align {align!r} is not one 'l' or 'r' per column ({len(columns)})")
    record = {"columns": list(columns), **({"align": align} if align else {}), "rows": rows,
              "command": command, "commit": commit or current_commit(), "environment": environment,
              **({"note": note} if note else {}), **({"data": data} if data else {})}
    atomic_write(path, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return record
