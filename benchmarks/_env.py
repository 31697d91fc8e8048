"""Where the numbers come from: device name, versions, commit, thread count, memory limits, atomic writes."""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
from pathlib import Path

import torch

from vsl_ext._atomic import atomic_write

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "benchmarks" / "results"
COCO_CAPTIONS = REPO.parent / "shared" / "data" / "coco_captions"


def default_threads() -> int:
    """The CPUs this process may run on (the whole machine unless pinned)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(torch.cuda.current_device())
    return cpu_name()


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def device_slug(device: str) -> str:
    """File stem of a report: ``cpu-amd-epyc`` or ``cuda-nvidia-h100-80gb-hbm3``."""
    return f"{device}-{slug(device_name(device))}"


def git_commit() -> str:
    """Short commit of the checkout, with ``+dirty`` when tracked files differ from it."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git checkout)"


def total_memory_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    return _meminfo("MemTotal")


def available_memory_bytes(device: str) -> int:
    """Memory a new allocation can use now: free GPU memory, or MemAvailable on CPU."""
    if device == "cuda":
        free, _ = torch.cuda.mem_get_info()
        return free
    return _meminfo("MemAvailable")


def _meminfo(key: str) -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30  # unknown: assume a small machine


def stamp(device: str, threads: int) -> dict:
    """Everything a reader needs to judge a number: what ran, where, when."""
    from vsl_ext import build_info
    from vsl_ext._version import __version__

    info = {
        "device": device,
        "device_name": device_name(device),
        "slug": device_slug(device),
        "cpu": cpu_name(),
        "threads": threads,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device == "cuda" else None,
        "vsl_ext": __version__,
        "build_info": {k: v for k, v in build_info().items() if k != "version"},
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "memory_total_gb": round(total_memory_bytes(device) / 2**30, 1),
    }
    return info


write_atomic = atomic_write  # text or bytes, via a temp file in the same folder and os.replace


def write_json_atomic(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def _fmt(value, units) -> str:
    """``units``: (name, scale) largest first; picks the largest unit that keeps 3 significant digits below 1000."""
    for i, (unit, scale) in enumerate(units):
        if abs(value) >= scale * 0.9995 or i == len(units) - 1:
            v = value / scale
            if i == 0 and abs(v) >= 1000:
                return f"{v:,.0f} {unit}"
            return f"{v:.3g} {unit}" if abs(v) < 1000 or i == 0 else f"{value / units[i - 1][1]:.3g} {units[i - 1][0]}"
    raise AssertionError


def fmt_bytes(b) -> str:
    if b is None:
        return "-"
    return _fmt(float(b), (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3), ("B", 1.0)))


def fmt_seconds(s) -> str:
    if s is None:
        return "-"
    return _fmt(float(s), (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)))
