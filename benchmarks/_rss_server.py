"""Fork server for CPU peak-memory measurement (see benchmarks/_measure.py).

Protocol: one JSON request per stdin line ``{"case", "inputs", "threads"}``, one JSON answer per
stdout line. This process imports torch and vsl_ext but never computes, so forking it is safe.
"""
from __future__ import annotations

import gc
import json
import os
import resource
import signal
import sys
import time

import torch  # noqa: F401  (imported once here so that children start warm)

import vsl_ext  # noqa: F401
from benchmarks import _cases, _peers  # noqa: F401 (_peers: numba compiles here, before forking)


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _child(request: dict, wfd: int) -> None:
    try:
        torch.set_num_threads(int(request["threads"]))
        inputs = torch.load(request["inputs"], weights_only=True)
        call = _cases.make_call(request["case"], inputs)
        if request["case"]["impl"] in _peers.JIT_PEERS:
            call()  # compiles (numba: starts its thread pool), which is not the call's cost
        gc.collect()
        base = _status("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            method = "VmHWM after clear_refs"
        except OSError:
            method = "VmHWM since fork (clear_refs unavailable)"
        t0 = time.perf_counter()
        call()
        seconds = time.perf_counter() - t0
        peak = _status("VmHWM")
        answer = {"peak_extra_bytes": max(0, peak - base), "base_rss_bytes": base, "seconds": seconds,
                  "method": method, "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    except BaseException as exc:  # report, never hang the parent
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    os.write(wfd, (json.dumps(answer) + "\n").encode())
    os.close(wfd)


def main() -> None:
    _cases.warm_up_lazy_imports()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(rfd)
            _child(request, wfd)
            os._exit(0)
        os.close(wfd)
        with os.fdopen(rfd) as r:
            text = r.read()
        _, status = os.waitpid(pid, 0)
        if not text.strip():
            if os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                hint = " (out of memory?)" if sig == signal.SIGKILL else ""
                text = json.dumps({"error": f"killed by {signal.Signals(sig).name}{hint}"})
            else:
                text = json.dumps({"error": f"exited with status {os.WEXITSTATUS(status)} without an answer"})
        sys.stdout.write(text.strip() + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
