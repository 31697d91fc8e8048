#!/usr/bin/env bash
# The GPU work of a session that is lent a GPU machine, in stages that each finish inside one device
# call (10 minutes at most; a machine left idle is given back after ~30 s, so every stage installs
# the package itself if the machine is fresh). Run from the repository root on the GPU machine;
# everything worth keeping is copied to $OUT (the device tool brings that folder back, 8 files at
# most) and the reports are also written to benchmarks/results/.
#
#   bash benchmarks/gpu_session.sh build        # install (CUDA kernels), CUDA tests, compute-sanitizer
#   bash benchmarks/gpu_session.sh bench        # report: large-n (n to 16,384) and window-share sections
#   bash benchmarks/gpu_session.sh bench-main   # report: vs the reference and the peers (torch.compile/Triton,
#                                               # chunked, numba.cuda, cupy), caption index; merges both
#   bash benchmarks/gpu_session.sh profile      # Nsight Compute on vsl_loss n=4096, dense and sorted
#
# Every step runs under a timeout cut from the stage's budget (STAGE_SECONDS, default 540), a failed
# or timed-out step does not stop the later ones, and steps.txt lists how each ended. The reports
# stop starting cases when the budget is spent and are written anyway (benchmarks.report
# --time-budget). VSL_EXT_CUDA_ARCHS (default here: 90, the H100/H200) shortens the build;
# BENCH_ARGS adds options to benchmarks.report.
set -uo pipefail
stage="${1:?usage: bash benchmarks/gpu_session.sh build|bench|bench-main|profile}"
out="${OUT:-/tmp/vsl_gpu_session}"
budget="${STAGE_SECONDS:-540}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
: > "$out/steps.txt"

# step NAME CAP_SECONDS COMMAND...: run COMMAND (a program or a function below) under
# min(CAP, what is left of the budget - 10 s), which it finds in STEP_LIMIT
step() {
  local name="$1" cap="$2" left rc
  shift 2
  left=$((budget - SECONDS - 10))
  if ((left < 15)); then
    echo "$name: not run (stage budget of ${budget}s spent)" | tee -a "$out/steps.txt"
    return 0
  fi
  export STEP_LIMIT=$((cap < left ? cap : left))
  timeout --kill-after=10 "$STEP_LIMIT" bash -c '"$@"' step "$@"
  rc=$?
  case "$rc" in
    0) echo "$name: ok (${SECONDS}s into the stage)" ;;
    124 | 137) echo "$name: TIMED OUT after ${STEP_LIMIT}s" ;;
    *) echo "$name: FAILED (exit code $rc)" ;;
  esac | tee -a "$out/steps.txt"
  return 0
}

# CUDA kernels that see a GPU, both in the installed package and in the source tree, which is what
# `python -m benchmarks...` from the repository root imports (the build places the module there too)
installed() {
  local check="import sys, vsl_ext; i = vsl_ext.build_info(); sys.exit(not (i['cuda'] and i['cuda_devices']))"
  (cd / && python -c "$check") 2>/dev/null && python -c "$check" 2>/dev/null
}

install() {
  VSL_EXT_CUDA=1 VSL_EXT_CUDA_ARCHS="${VSL_EXT_CUDA_ARCHS:-90}" \
    pip install --no-build-isolation --no-deps . > "$out/pip-install.log" 2>&1 || { tail -40 "$out/pip-install.log"; return 1; }
  (cd / && python -c "import vsl_ext, json; print(json.dumps(vsl_ext.build_info()))") | tee "$out/build_info.json"
}

ensure_installed() {
  installed || step install 300 install
  installed || { echo "vsl_ext with CUDA kernels is not usable here; see $out/pip-install.log" >&2; exit 1; }
}

sanitize() {  # sanitize TOOL NAME COMMAND...: compute-sanitizer TOOL on COMMAND, its tail in $out (a file per tool)
  local tool="$1" name="$2" log rc
  shift 2
  log="$(mktemp)"
  compute-sanitizer --tool "$tool" --error-exitcode 99 "$@" > "$log" 2>&1
  rc=$?
  { echo "== $name: exit code $rc"; tail -30 "$log"; } >> "$out/sanitizer-$tool.txt"
  rm -f "$log"
  return "$rc"
}

report() {  # report ARGS...: the GPU benchmark report, finishing inside the step's time limit
  # shellcheck disable=SC2086
  python -m benchmarks.report --device cuda --time-budget "$((STEP_LIMIT - 15))" "$@" ${BENCH_ARGS:-} 2>&1 \
    | tee -a "$out/report.log" | tail -25
  return "${PIPESTATUS[0]}"
}

export out
export -f install sanitize report

case "$stage" in
  build)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/nvidia-smi.csv"
    step install 300 install
    installed || { echo "vsl_ext with CUDA kernels is not usable; see $out/pip-install.log" | tee -a "$out/steps.txt"; exit 1; }
    # The emulated CUDA tests (tests/test_cuda_emulated.py) are what CI runs in place of these: not here.
    step cuda-tests 240 bash -c "pytest -q -p no:cacheprovider -k 'cuda and not emulated' -rs > '$out/pytest-cuda.txt' 2>&1; rc=\$?; tail -15 '$out/pytest-cuda.txt'; exit \$rc"
    target=(python -m benchmarks._profile_target --n 300 --warmup 0)
    for tool in memcheck racecheck synccheck; do
      step "$tool-dense" 60 sanitize "$tool" "vsl_loss dense" "${target[@]}" --op vsl_loss --algorithm dense
    done
    for tool in memcheck racecheck; do
      step "$tool-sorted" 60 sanitize "$tool" "vsl_loss public-code sorted" "${target[@]}" --op vsl_loss \
        --variant public-code --algorithm sorted
      step "$tool-sorted-rank" 60 sanitize "$tool" "sigmoid_rank sorted" "${target[@]}" --op sigmoid_rank --algorithm sorted
    done
    step memcheck-caption-index 90 sanitize memcheck "caption index tests" \
      pytest -q -p no:cacheprovider tests/test_caption_index.py tests/test_caption_index_phrases.py \
      -k "cuda and not emulated"
    ;;
  bench)
    ensure_installed
    step report-large-n 600 report --suites rank --sections large-n window \
      --save-raw benchmarks/results/cuda-raw-large.json
    cp benchmarks/results/cuda-raw-large.json "$(ls -t benchmarks/results/cuda-*.md | head -1)" "$out/" 2>/dev/null
    ;;
  bench-main)
    ensure_installed
    # The GPU peers (benchmarks/_peers.py): torch.compile (Triton) comes with torch; numba.cuda and the cupy
    # RawKernel need these packages, which a machine without a package index cannot install: those
    # peers are then listed as "not available" and the rest of the report runs.
    python -c "import numba, cupy" 2>/dev/null || step peer-packages 120 pip install -q numba cupy-cuda13x
    step report-main 600 report --suites rank caption_index --sections main --save-raw benchmarks/results/cuda-raw-main.json
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
    echo "unknown stage $stage: build, bench, bench-main or profile" >&2
    exit 2
    ;;
esac
echo "stage $stage: ${SECONDS}s"
