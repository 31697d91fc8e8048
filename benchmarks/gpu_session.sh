#!/usr/bin/env bash
# The GPU check of a session that is lent a GPU machine, in one command of at most 9 minutes (a fresh
# machine gives about 15 minutes of GPU time in all, start and retries included). Run from anywhere in
# the clone, on the GPU machine:
#
#   bash benchmarks/gpu_session.sh                                # everything below, <= 540 s
#   GPU_SESSION_REHEARSAL=1 bash benchmarks/gpu_session.sh        # the same on a CPU machine (CI)
#
# Steps, each under its own time cap (`timeout`; never past the session's budget), a failing or
# timed-out step not stopping the next ones:
#   device      nvidia-smi: the GPU, its memory, the driver
#   build       pip install for sm_90 only (VSL_EXT_CUDA_ARCHS, default 90), no dependencies, no index
#   self-check  python -m vsl_ext --require-cuda: every kernel family against its float64 formula and
#               the CPU kernels (vsl_ext/self_check.py)
#   cuda-tests  the test suite's CUDA cases (pytest -k "cuda and not emulated")
#   memcheck-*, racecheck-*  compute-sanitizer on small workloads (benchmarks/_profile_target.py at
#               n = 300: vsl_loss dense and public-code sorted, sigmoid_rank sorted) and the caption
#               index's CUDA tests
#   large-n     one vsl_loss (row) forward+backward at n = 65,536: its time and peak memory
#   bench       python -m benchmarks.report --device cuda --quick --sections main: vsl_loss row and
#               public-code forward+backward at n = 128, 1,024, 4,096, 16,384 against the reference,
#               torch.compile (Triton), the chunked formula, numba.cuda and the cupy RawKernel, with
#               peak memory; the caption index against cupyx (benchmarks/_cases.py: --quick on CUDA)
#
# It writes at most 8 files into $OUT (default /tmp/vsl_gpu_session): summary.md (read it first: the
# device, every step's outcome, the self-check's verdict, the benchmark table), the report's JSON and
# markdown (<slug>-quick.{json,md}; render the plots with `python -m benchmarks.report --from-json`),
# and the logs build.log, self-check.log, cuda-tests.log, sanitizer.log, bench.log.
#
# GPU_SESSION_REHEARSAL=1 runs the same script on a CPU machine in under 5 minutes: the GPU-only steps
# are replaced by their CPU or emulated counterparts (self-check on the CPU; the CUDA kernels' source
# on the CUDA emulator, tests/test_cuda_emulated.py; a CPU report at n <= 128; the large loss at
# n = 2,048) or listed in summary.md
# as skipped with the reason (the sm_90 build, compute-sanitizer). GPU_SESSION_SECONDS sets the
# budget (default 540); GPU_SESSION_CAP_PERCENT scales every step's cap (default 100; the tests use
# it). Exit code: 0 if every step that ran passed, 1 otherwise.
#
# The staged mode, for longer GPU runs (each stage fits one 10-minute call; STAGE_SECONDS, default 540):
#   bash benchmarks/gpu_session.sh build        # install (CUDA kernels), CUDA tests, compute-sanitizer
#   bash benchmarks/gpu_session.sh bench        # report: large-n (n to 16,384) and window-share sections
#   bash benchmarks/gpu_session.sh bench-main   # report: vs the reference and the peers (torch.compile/Triton,
#                                               # chunked, numba.cuda, cupy), caption index; merges both
#   bash benchmarks/gpu_session.sh profile      # Nsight Compute on vsl_loss n=4096, dense and sorted
# BENCH_ARGS adds options to benchmarks.report in every mode.
set -uo pipefail
stage="${1:-all}"
out="${OUT:-/tmp/vsl_gpu_session}"
rehearsal="${GPU_SESSION_REHEARSAL:-0}"
if [[ "$stage" == all ]]; then
  budget="${GPU_SESSION_SECONDS:-540}"
else
  budget="${STAGE_SECONDS:-540}"
fi
cap_percent="${GPU_SESSION_CAP_PERCENT:-100}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
: > "$work/steps.tsv"
if [[ "$stage" == all ]]; then  # steps go to summary.md
  steps_txt="$work/steps.txt"
  export REPORT_LOG="$out/bench.log"
else
  steps_txt="$out/steps.txt"
fi
: > "$steps_txt"

# step NAME CAP_SECONDS COMMAND...: run COMMAND (a program or a function below) under
# min(CAP, what is left of the budget - 10 s), which it finds in STEP_LIMIT; record how it ended
step() {
  local name="$1" cap="$2" left rc start=$SECONDS outcome
  shift 2
  cap=$((cap * cap_percent / 100))
  ((cap >= 1)) || cap=1
  left=$((budget - SECONDS - 10))
  if ((left < 15)); then
    outcome="not run (budget of ${budget} s spent)"
    echo "$name: $outcome" | tee -a "$steps_txt"
    printf '%s\t%s\t%s\t%s\n' "$name" "NOT RUN" 0 "budget of ${budget} s spent" >> "$work/steps.tsv"
    failed=1
    return 0
  fi
  export STEP_LIMIT=$((cap < left ? cap : left))
  timeout --kill-after=10 "$STEP_LIMIT" bash -c '"$@"' step "$@"
  rc=$?
  case "$rc" in
    0) outcome="ok" ;;
    124 | 137) outcome="TIMED OUT after ${STEP_LIMIT} s" ;;
    *) outcome="FAILED (exit code $rc)" ;;
  esac
  ((rc == 0)) || failed=1
  echo "$name: $outcome (${SECONDS} s in)" | tee -a "$steps_txt"
  printf '%s\t%s\t%s\t%s\n' "$name" "$outcome" "$((SECONDS - start))" "cap ${STEP_LIMIT} s" >> "$work/steps.tsv"
  return 0
}

skip_step() {  # skip_step NAME REASON: listed in summary.md as skipped
  echo "$1: skipped: $2"
  printf '%s\t%s\t%s\t%s\n' "$1" "skipped" 0 "$2" >> "$work/steps.tsv"
}

# CUDA kernels that see a GPU, both in the installed package and in the source tree, which is what
# `python -m benchmarks...` from the repository root imports (the build places the module there too)
installed() {
  local check="import sys, vsl_ext; i = vsl_ext.build_info(); sys.exit(not (i['cuda'] and i['cuda_devices']))"
  (cd / && python -c "$check") 2>/dev/null && python -c "$check" 2>/dev/null
}

install() {  # install [LOG]: the CUDA build for VSL_EXT_CUDA_ARCHS (default sm_90)
  local log="${1:-$out/pip-install.log}"
  VSL_EXT_CUDA=1 VSL_EXT_CUDA_ARCHS="${VSL_EXT_CUDA_ARCHS:-90}" \
    pip install --no-build-isolation --no-deps --no-index . > "$log" 2>&1 || { tail -40 "$log"; return 1; }
  (cd / && python -c "import vsl_ext, json; print(json.dumps(vsl_ext.build_info()))") | tee -a "$log"
}

ensure_installed() {
  installed || step install 300 install
  installed || { echo "vsl_ext with CUDA kernels is not usable here; see $out/pip-install.log" >&2; exit 1; }
}

sanitize() {  # sanitize TOOL NAME LOG COMMAND...: compute-sanitizer TOOL on COMMAND, its tail appended to LOG
  local tool="$1" name="$2" log="$3" tmp rc
  shift 3
  tmp="$(mktemp)"
  compute-sanitizer --tool "$tool" --error-exitcode 99 "$@" > "$tmp" 2>&1
  rc=$?
  { echo "== $tool, $name: exit code $rc"; tail -30 "$tmp"; } >> "$log"
  rm -f "$tmp"
  return "$rc"
}

report() {  # report ARGS...: the benchmark report, finishing inside the step's time limit
  # shellcheck disable=SC2086
  python -m benchmarks.report --time-budget "$((STEP_LIMIT - 15))" "$@" ${BENCH_ARGS:-} 2>&1 \
    | tee -a "${REPORT_LOG:-$out/report.log}" | tail -25
  return "${PIPESTATUS[0]}"
}

large_loss() {  # large_loss N DEVICE: one vsl_loss (row) forward+backward at n, its time and peak memory
  python - "$@" <<'PY'
import resource
import sys
import time

import torch

import vsl_ext

n, device = int(sys.argv[1]), sys.argv[2]
cuda = device == "cuda"


def sync():
    if cuda:
        torch.cuda.synchronize()


def call(n):
    # training-like S (cosines of random 1,024-d embeddings: spread ~0.03 = 30 tau, matching pairs
    # boosted) and C with ties (16 levels), made on the device: n^2 floats each
    g = torch.Generator(device=device).manual_seed(n)
    s = torch.randn(n, n, generator=g, device=device).mul_(1 / 32)
    s.diagonal().add_(0.5)
    c = torch.randint(0, 16, (n, n), generator=g, device=device, dtype=torch.float32).div_(16)
    s.requires_grad_(True)
    sync()
    start = time.perf_counter()
    loss = vsl_ext.vsl_loss(s, c)
    loss.backward()
    sync()
    return time.perf_counter() - start, float(loss.detach()), bool(torch.isfinite(s.grad).all())


call(256)  # the first call's one-time costs
if cuda:
    torch.cuda.reset_peak_memory_stats()
seconds, loss, finite = call(n)
peak = (f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB peak allocated" if cuda else
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB peak RSS")
print(f"vsl_loss row forward+backward, n = {n:,} on {device}: {seconds:.3f} s, {peak}; loss {loss:.6f}, "
      f"gradient {'finite' if finite else 'NOT FINITE'}")
sys.exit(0 if finite and 0 <= loss < 1 else 1)
PY
}

logged() {  # logged LOG COMMAND...: COMMAND's output to LOG (appended), its last lines to the console
  local log="$1" rc
  shift
  "$@" >> "$log" 2>&1
  rc=$?
  tail -5 "$log"
  return "$rc"
}

export out work
export -f install sanitize report logged large_loss

# ------------------------------------------------------------------------------- the one command
summary() {  # summary.md from the steps and the logs
  local device="$1" s="$out/summary.md" md
  {
    if [[ "$rehearsal" == 1 ]]; then
      echo "# GPU session (CPU rehearsal): $device"
      echo
      echo "GPU_SESSION_REHEARSAL=1: GPU-only steps ran their CPU or emulated counterparts or are skipped (below)."
    else
      echo "# GPU session: $device"
    fi
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)," \
      "${SECONDS} s of a ${budget} s budget. Verdict: $([[ $failed == 0 ]] && echo "every step passed" || echo "SOME STEPS FAILED")."
    echo
    echo "| step | outcome | seconds | cap / reason |"
    echo "|---|---|---|---|"
    while IFS=$'\t' read -r name outcome secs note; do
      echo "| $name | $outcome | $secs | $note |"
    done < "$work/steps.tsv"
    echo
    echo "## Self-check (self-check.log)"
    echo
    if [[ -s "$out/self-check.log" ]]; then
      echo '```'
      grep -E '^(build|torch|threads|device|CUDA not checked|checks|timing)|^ +(ok|FAIL) |^ {7}' "$out/self-check.log" | head -80
      tail -1 "$out/self-check.log"
      echo '```'
    else
      echo "no output"
    fi
    echo
    echo "## Tests (cuda-tests.log)"
    echo
    [[ -s "$out/cuda-tests.log" ]] && { echo '```'; grep -E "passed|failed|error|FAILED" "$out/cuda-tests.log" | tail -15; echo '```'; } \
      || echo "no output"
    echo
    echo "## compute-sanitizer (sanitizer.log)"
    echo
    if [[ -s "$out/sanitizer.log" ]]; then
      echo '```'
      grep -E "^== |ERROR SUMMARY" "$out/sanitizer.log"
      echo '```'
    else
      echo "not run"
    fi
    echo
    echo "## Benchmarks"
    echo
    grep -h "^vsl_loss row forward+backward, n = " "$out/bench.log" 2>/dev/null && echo
    md="$(ls -t "$out"/*-quick.md 2>/dev/null | head -1)"
    if [[ -n "$md" ]]; then
      echo "From $(basename "$md") (the whole report; JSON next to it):"
      echo
      sed -e 's/^#/##/' "$md"
    else
      echo "no report (see bench.log)"
    fi
  } > "$s.tmp" && mv "$s.tmp" "$s"
}

session() {
  local device tests_cmd
  failed=0
  rm -f "$out"/{summary.md,build.log,self-check.log,cuda-tests.log,sanitizer.log,bench.log} \
    "$out"/*-quick.md "$out"/*-quick.json
  if [[ "$rehearsal" == 1 ]]; then
    device="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //' || uname -m)"
    skip_step device "rehearsal: no GPU (CPU: $device)"
    skip_step build "rehearsal: the sm_90 CUDA build needs the GPU machine's nvcc run; the vsl_ext installed here is used"
    step self-check 120 logged "$out/self-check.log" python -m vsl_ext
    # the CUDA kernels' own source, compiled for the CPU: every kernel family against the CPU kernels
    # or its definition, on rows past the 1,024-column tile (15 of the emulator's 202 tests; CI's pytest
    # runs them all)
    tests_cmd=(python -m pytest -q -p no:cacheprovider tests/test_cuda_emulated.py -k
      "f32 and 1025 and (dense_rank or fused_vsl or fused_smooth_ap or sorted_sums) or caption_index or empty_batches")
    step cuda-tests 150 logged "$out/cuda-tests.log" "${tests_cmd[@]}"
    for tool in memcheck racecheck; do
      skip_step "$tool" "rehearsal: compute-sanitizer needs a GPU (the emulator's AddressSanitizer run in tests/test_cuda_emulated.py stands in for memcheck, in CI's pytest)"
    done
    step bench 150 report --device cpu --quick --suites rank caption_index --sections main --max-n 128 \
      --out "$work/report" --note "GPU session rehearsal on a CPU: n <= 128"
    step large-n 60 logged "$out/bench.log" large_loss 2048 cpu  # n = 65,536 on the GPU
  else
    device="$(timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
    step device 15 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv"
    step build 240 install "$out/build.log"
    step self-check 60 logged "$out/self-check.log" python -m vsl_ext --require-cuda
    step cuda-tests 120 logged "$out/cuda-tests.log" python -m pytest -q -p no:cacheprovider -rs \
      -k "cuda and not emulated" tests
    local target=(python -m benchmarks._profile_target --n 300 --warmup 0)
    step memcheck-vsl-dense 20 sanitize memcheck "vsl_loss dense" "$out/sanitizer.log" "${target[@]}" --op vsl_loss \
      --algorithm dense
    step racecheck-vsl-dense 20 sanitize racecheck "vsl_loss dense" "$out/sanitizer.log" "${target[@]}" --op vsl_loss \
      --algorithm dense
    step memcheck-sorted 20 sanitize memcheck "vsl_loss public-code sorted" "$out/sanitizer.log" "${target[@]}" \
      --op vsl_loss --variant public-code --algorithm sorted
    step racecheck-rank-sorted 20 sanitize racecheck "sigmoid_rank sorted" "$out/sanitizer.log" "${target[@]}" \
      --op sigmoid_rank --algorithm sorted
    step memcheck-caption-index 30 sanitize memcheck "caption index tests" "$out/sanitizer.log" \
      python -m pytest -q -p no:cacheprovider tests/test_caption_index.py -k "cuda and not emulated"
    step large-n 90 logged "$out/bench.log" large_loss 65536 cuda
    step bench 600 report --device cuda --quick --sections main --out "$work/report" \
      --note "benchmarks/gpu_session.sh: one command on a fresh machine"
  fi
  cp "$work"/report/*-quick.md "$work"/report/*-quick.json "$out/" 2>/dev/null
  summary "${device:-unknown device}"
  echo "GPU session: ${SECONDS} s; $out/summary.md ($([[ $failed == 0 ]] && echo "every step passed" || echo "some steps failed"))"
  return "$failed"
}

case "$stage" in
  all)
    session
    exit $?
    ;;
  build)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/nvidia-smi.csv"
    step install 300 install
    installed || { echo "vsl_ext with CUDA kernels is not usable; see $out/pip-install.log" | tee -a "$out/steps.txt"; exit 1; }
    # The emulated CUDA tests (tests/test_cuda_emulated.py) are what CI runs in place of these: not here.
    step cuda-tests 240 bash -c "pytest -q -p no:cacheprovider -k 'cuda and not emulated' -rs > '$out/pytest-cuda.txt' 2>&1; rc=\$?; tail -15 '$out/pytest-cuda.txt'; exit \$rc"
    target=(python -m benchmarks._profile_target --n 300 --warmup 0)
    for tool in memcheck racecheck synccheck; do
      step "$tool-dense" 60 sanitize "$tool" "vsl_loss dense" "$out/sanitizer-$tool.txt" "${target[@]}" --op vsl_loss \
        --algorithm dense
    done
    for tool in memcheck racecheck; do
      step "$tool-sorted" 60 sanitize "$tool" "vsl_loss public-code sorted" "$out/sanitizer-$tool.txt" "${target[@]}" \
        --op vsl_loss --variant public-code --algorithm sorted
      step "$tool-sorted-rank" 60 sanitize "$tool" "sigmoid_rank sorted" "$out/sanitizer-$tool.txt" "${target[@]}" \
        --op sigmoid_rank --algorithm sorted
    done
    step memcheck-caption-index 90 sanitize memcheck "caption index tests" "$out/sanitizer-memcheck.txt" \
      pytest -q -p no:cacheprovider tests/test_caption_index.py tests/test_caption_index_phrases.py \
      -k "cuda and not emulated"
    ;;
  bench)
    ensure_installed
    step report-large-n 600 report --device cuda --suites rank --sections large-n window \
      --save-raw benchmarks/results/cuda-raw-large.json
    cp benchmarks/results/cuda-raw-large.json "$(ls -t benchmarks/results/cuda-*.md | head -1)" "$out/" 2>/dev/null
    ;;
  bench-main)
    ensure_installed
    # The GPU peers (benchmarks/_peers.py): torch.compile (Triton) comes with torch; numba.cuda and the cupy
    # RawKernel need these packages, which a machine without a package index cannot install: those
    # peers are then listed as "not available" and the rest of the report runs.
    python -c "import numba, cupy" 2>/dev/null || step peer-packages 120 pip install -q numba cupy-cuda13x
    step report-main 600 report --device cuda --suites rank caption_index --sections main \
      --save-raw benchmarks/results/cuda-raw-main.json
    raws=(benchmarks/results/cuda-raw-main.json)
    [[ -f benchmarks/results/cuda-raw-large.json ]] && raws+=(benchmarks/results/cuda-raw-large.json)
    step report-merged 60 python -m benchmarks.report --from-json "${raws[@]}" \
      --note "GPU session: benchmarks/gpu_session.sh bench (large-n, window) and bench-main (main, caption_index)"
    # raw JSON (re-render anywhere with --from-json) and the merged markdown
    cp benchmarks/results/cuda-raw-main.json "$(ls -t benchmarks/results/cuda-*.md | head -1)" "$out/" 2>/dev/null
    ;;
  profile)
    ensure_installed
    metrics=sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__throughput.avg.pct_of_peak_sustained_elapsed,gpu__time_duration.sum
    for algorithm in dense sorted; do
      step "ncu-$algorithm" 240 ncu --profile-from-start off --target-processes all --section SpeedOfLight \
        --section Occupancy --metrics "$metrics" -o "$out/ncu-vsl-loss-n4096-$algorithm" -f \
        python -m benchmarks._profile_target --op vsl_loss --n 4096 --algorithm "$algorithm"
      [[ -f "$out/ncu-vsl-loss-n4096-$algorithm.ncu-rep" ]] && ncu --import "$out/ncu-vsl-loss-n4096-$algorithm.ncu-rep" \
        --page details --csv > "$out/ncu-vsl-loss-n4096-$algorithm.csv"
    done
    ;;
  *)
    echo "unknown stage $stage: all (the default), build, bench, bench-main or profile" >&2
    exit 2
    ;;
esac
echo "stage $stage: ${SECONDS}s"
