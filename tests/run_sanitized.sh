#!/usr/bin/env bash
# The kernel and bad-input tests under AddressSanitizer + UndefinedBehaviorSanitizer:
#
#     tests/run_sanitized.sh [more pytest arguments]
#
# Builds the CPU native module with VSL_EXT_SANITIZE=1 (setup.py) into a venv of its own and runs
# the tests there with the compiler's libasan preloaded. The normal build is left alone: the
# sanitized objects live in build/cmake.<platform>-<python>-sanitize/, the venv in
# build/sanitize-venv/ (or $VSL_SANITIZE_VENV), and the sanitized module is installed into that
# venv only (not into the source tree). A memory error or undefined behaviour in native code ends
# the test process with the sanitizer's report, so pytest fails. A second run recompiles only what
# changed. Docs: docs/reliability.md.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VSL_SANITIZE_VENV:-$repo/build/sanitize-venv}"
cxx="${CXX:-c++}"
libasan="$("$cxx" -print-file-name=libasan.so)"
if [[ ! -f $libasan ]]; then
  echo "run_sanitized.sh: $cxx has no AddressSanitizer runtime (libasan.so); install the compiler's sanitizer libraries" >&2
  exit 2
fi

if [[ ! -x $venv/bin/python ]]; then
  python3 -m venv "$venv"
fi
. "$venv/bin/activate"
if ! python -c "import torch, pytest, hypothesis" 2>/dev/null; then
  pip install --quiet torch==2.13.0   # the CPU build from local disk (README)
  VSL_EXT_SANITIZE=1 VSL_EXT_CUDA=0 pip install --quiet "$repo[test]"
fi
# Every run rebuilds from the current sources (ninja recompiles only what changed).
VSL_EXT_SANITIZE=1 VSL_EXT_CUDA=0 pip install --quiet --no-deps --force-reinstall "$repo"

# libstdc++ too: python is a C program, and without it ASan's __cxa_throw interceptor finds no real
# __cxa_throw when torch throws its first C++ exception (an ASan CHECK failure ends the process).
libstdcxx="$(readlink -f "$("$cxx" -print-file-name=libstdc++.so.6)")"
export LD_PRELOAD="$libasan:$libstdcxx${LD_PRELOAD:+:$LD_PRELOAD}"
# detect_leaks=0: CPython keeps some allocations until exit by design; the rest of the defaults stand
# (a report ends the process). UBSan prints where, then ends the process (-fno-sanitize-recover).
export ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

# Outside the source tree, so that `import vsl_ext` finds the venv's sanitized module.
cd "$venv"
python -c "import vsl_ext, sys; info = vsl_ext.build_info(); \
sys.exit(0 if info.get('sanitize') else 'the venv holds an unsanitized vsl_ext: ' + repr(info))"
# VSL_SANITIZE_TESTS (test files under tests/, space-separated) runs a subset instead: CI's.
default_tests="test_bad_input_tensors.py test_bad_input_files.py test_bad_input_cli.py test_op_checks.py
       test_infinities.py test_sigmoid_rank.py test_sigmoid_rank_sorted.py test_vsl_loss.py test_criterion.py
       test_caption_index.py test_caption_files.py test_metrics.py"
read -r -a tests <<< "$(echo ${VSL_SANITIZE_TESTS:-$default_tests})"
# The CUDA emulator is a separate library with a sanitized build of its own (test_cuda_emulated.py):
# its device cases are left out here (-k), the CPU kernels run every case.
exec python -m pytest -q -p no:cacheprovider -k "not cuda-emulated" "${tests[@]/#/$repo/tests/}" "$@"
