#!/usr/bin/env bash
# The GPU work of a session that has the GPU machine, in stages that each fit one device call
# (at most 10 minutes). Run from the repository root on the GPU machine; everything worth keeping
# is copied to $OUT (the device tool brings that folder back) and, for the report, also written
# to benchmarks/results/.
#
#   bash benchmarks/gpu_session.sh build     # pip install (CUDA kernels), CUDA tests, compute-sanitizer
#   bash benchmarks/gpu_session.sh bench     # the GPU benchmark report (incl. large n up to 16,384)
#   bash benchmarks/gpu_session.sh profile   # Nsight Compute on the rank kernels, dense and sorted
#
# VSL_EXT_CUDA_ARCHS (default here: 90, the H100/H200) shortens the build; BENCH_ARGS adds options
# to benchmarks.report (e.g. "--quick" or "--max-case-seconds 30").
set -euo pipefail
stage="${1:?usage: bash benchmarks/gpu_session.sh build|bench|profile}"
out="${OUT:-/tmp/vsl_gpu_session}"
mkdir -p "$out"
cd "$(dirname "$0")/.."

case "$stage" in
  build)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/nvidia-smi.csv"
    VSL_EXT_CUDA=1 VSL_EXT_CUDA_ARCHS="${VSL_EXT_CUDA_ARCHS:-90}" \
      pip install --no-build-isolation --no-deps . > "$out/pip-install.log" 2>&1 || { tail -40 "$out/pip-install.log"; exit 1; }
    (cd / && python -c "import vsl_ext, json; print(json.dumps(vsl_ext.build_info()))") | tee "$out/build_info.json"
    # `pytest`, not `python -m pytest`: the latter would import the unbuilt source tree.
    pytest -q -p no:cacheprovider -k cuda -rs 2>&1 | tee "$out/pytest-cuda.txt" | tail -15
    for tool in memcheck racecheck synccheck; do
      compute-sanitizer --tool "$tool" --error-exitcode 99 \
        python -m benchmarks._profile_target --op vsl_loss --n 300 --algorithm dense --warmup 0 \
        > "$out/sanitizer-$tool-dense.txt" 2>&1 && echo "$tool dense: clean" || echo "$tool dense: FAILED (see $out)"
    done
    for tool in memcheck racecheck; do
      compute-sanitizer --tool "$tool" --error-exitcode 99 \
        python -m benchmarks._profile_target --op vsl_loss --variant public-code --n 300 --algorithm sorted --warmup 0 \
        > "$out/sanitizer-$tool-sorted.txt" 2>&1 && echo "$tool sorted: clean" || echo "$tool sorted: FAILED (see $out)"
    done
    compute-sanitizer --tool memcheck --error-exitcode 99 pytest -q -p no:cacheprovider tests/test_caption_index.py -k cuda \
      > "$out/sanitizer-memcheck-caption-index.txt" 2>&1 && echo "memcheck caption index: clean" \
      || echo "memcheck caption index: FAILED (see $out)"
    ;;
  bench)
    # shellcheck disable=SC2086
    python -m benchmarks.report --device cuda --save-raw benchmarks/results/cuda-raw.json ${BENCH_ARGS:-} \
      2>&1 | tee "$out/report.log" | tail -20
    cp benchmarks/results/cuda-* "$out/"
    ;;
  profile)
    metrics=sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__throughput.avg.pct_of_peak_sustained_elapsed,gpu__time_duration.sum
    for algorithm in dense sorted; do
      ncu --profile-from-start off --target-processes all --section SpeedOfLight --section Occupancy \
        --metrics "$metrics" -o "$out/ncu-vsl-loss-n4096-$algorithm" -f \
        python -m benchmarks._profile_target --op vsl_loss --n 4096 --algorithm "$algorithm" > "$out/ncu-$algorithm.log" 2>&1
      ncu --import "$out/ncu-vsl-loss-n4096-$algorithm.ncu-rep" --page details --csv > "$out/ncu-vsl-loss-n4096-$algorithm.csv"
    done
    ;;
  *)
    echo "unknown stage $stage: build, bench or profile" >&2
    exit 2
    ;;
esac
