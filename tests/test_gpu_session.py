"""benchmarks/gpu_session.sh's logic in its CPU rehearsal, with stand-in programs (a failing self-check,
a test run that hangs, a report) so that it runs in seconds: every step runs under its cap, a failing
or timed-out step does not stop the later ones, at most 8 files land in $OUT and summary.md says what
happened. CI runs the real rehearsal (.ci/run)."""
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_session.sh"

STAND_IN_PYTHON = r"""#!/usr/bin/env bash
# stands in for python: -m vsl_ext fails, -m pytest hangs, -m benchmarks.report writes a report, a
# script on stdin (the large loss) prints its line
case "$1 $2" in
  "-m vsl_ext")
    echo "vsl_ext 0.0 self-check"
    echo "  FAIL cpu sigmoid_rank dense descending forward       worst error 3x the tolerance"
    echo "vsl_ext self-check: FAIL (cpu sigmoid_rank dense descending forward)"
    exit 1 ;;
  "-m pytest") sleep 60 ;;
  "- "*) cat > /dev/null; echo "vsl_loss row forward+backward, n = 2,048 on cpu: 1.000 s, 0.1 GiB peak RSS" ;;
  "-m benchmarks.report")
    while [[ $# -gt 0 && "$1" != --out ]]; do shift; done
    mkdir -p "$2"
    echo "# report" > "$2/cpu-test-quick.md"
    echo "| n | time |" >> "$2/cpu-test-quick.md"
    echo '{}' > "$2/cpu-test-quick.json"
    echo "one stand-in plot" > "$2/cpu-test-quick-time.png"
    echo "wrote the report" ;;
  *) exec "$REAL_PYTHON" "$@" ;;
esac
"""


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                    reason="needs bash and coreutils' timeout")
def test_rehearsal_caps_steps_keeps_going_and_writes_summary(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python"
    python.write_text(STAND_IN_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    out = tmp_path / "out"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", OUT=str(out),
               GPU_SESSION_REHEARSAL="1", GPU_SESSION_CAP_PERCENT="2",  # cuda-tests: 150 s -> 3 s
               REAL_PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # a step failed
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and "summary.md" in files, files
    assert "cpu-test-quick.md" in files and "cpu-test-quick.json" in files
    assert not any(f.endswith(".png") for f in files)  # plots are rendered later from the JSON
    summary = (out / "summary.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in summary.splitlines() if line.startswith("| ")}
    assert "FAILED (exit code 1)" in rows["self-check"]
    assert "TIMED OUT after 3 s" in rows["cuda-tests"]
    assert "| ok |" in rows["bench"] and "| ok |" in rows["large-n"]  # ran after the failure and the time-out
    for skipped in ("device", "build", "memcheck", "racecheck"):
        assert "| skipped |" in rows[skipped] and "rehearsal" in rows[skipped]
    assert "vsl_ext self-check: FAIL (cpu sigmoid_rank dense descending forward)" in summary
    assert "SOME STEPS FAILED" in summary and "| n | time |" in summary
    assert "vsl_loss row forward+backward, n = 2,048 on cpu: 1.000 s" in summary


def test_a_spent_budget_lists_the_remaining_steps_as_not_run(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), GPU_SESSION_REHEARSAL="1", GPU_SESSION_SECONDS="20")
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    summary = (out / "summary.md").read_text()
    for name in ("self-check", "cuda-tests", "bench"):
        assert f"| {name} | NOT RUN |" in summary


GPU_STAND_INS = {
    "nvidia-smi": 'echo "NVIDIA H200, 143771 MiB, 580.65, 9.0"',
    "pip": 'echo "pip $*"',
    "compute-sanitizer": 'echo "========= COMPUTE-SANITIZER"; echo "========= ERROR SUMMARY: 0 errors"',
    "python": r"""case "$1 $2" in
  "-c "*) echo '{"cuda": true, "cuda_arch": ["sm_90", "compute_90"]}' ;;
  "-m vsl_ext") echo "vsl_ext self-check: PASS" ;;
  "-m pytest") echo "12 passed, 3 skipped in 1.00s" ;;
  "-m benchmarks._profile_target") echo "profiled 1 call(s)" ;;
  "-m benchmarks.report")
    while [[ $# -gt 0 && "$1" != --out ]]; do shift; done
    mkdir -p "$2"; echo "# GPU report" > "$2/cuda-nvidia-h200-quick.md"; echo '{}' > "$2/cuda-nvidia-h200-quick.json" ;;
  "- "*) cat > /dev/null; echo "vsl_loss row forward+backward, n = 65,536 on cuda: 0.500 s, 80.0 GiB peak allocated" ;;
  *) echo "unexpected: python $*" >&2; exit 3 ;;
esac""",
}


def test_gpu_mode_runs_every_step_in_order(tmp_path):
    """The GPU branch, which CI cannot run, with stand-ins for the GPU's programs: every step is
    reached and passes, and the outputs are the documented ones."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in GPU_STAND_INS.items():
        path = bin_dir / name
        path.write_text("#!/usr/bin/env bash\n" + body + "\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    out = tmp_path / "out"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", OUT=str(out))
    env.pop("GPU_SESSION_REHEARSAL", None)
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(["summary.md", "build.log", "self-check.log", "cuda-tests.log", "sanitizer.log",
                            "bench.log", "cuda-nvidia-h200-quick.md", "cuda-nvidia-h200-quick.json"])
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# GPU session: NVIDIA H200, 143771 MiB, 580.65")
    steps = [line.split(" | ")[0].strip("| ") for line in summary.splitlines() if line.startswith("| ")][1:]
    assert steps == ["device", "build", "self-check", "cuda-tests", "memcheck-vsl-dense", "racecheck-vsl-dense",
                     "memcheck-sorted", "racecheck-rank-sorted", "memcheck-caption-index", "large-n", "bench"]
    assert summary.count("| ok |") == len(steps) and "every step passed" in summary
    assert summary.count("ERROR SUMMARY: 0 errors") == 5
    assert "n = 65,536 on cuda: 0.500 s" in summary and "# GPU report" in summary
    build = (out / "build.log").read_text()  # pip's output (the stand-in's: its arguments), then build_info
    assert "pip install --no-build-isolation --no-deps --no-index ." in build and '"sm_90"' in build
