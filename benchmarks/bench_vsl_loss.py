"""vsl_loss (the Visual Semantic Loss): vsl_ext vs the pure-PyTorch reference (see benchmarks/_rank_suite.py for
the cases, the timing and the memory measurement, and benchmarks/README.md for what runs).

    python -m pytest benchmarks/bench_vsl_loss.py --vsl-quick --benchmark-json=/tmp/vsl_loss.json
"""
from benchmarks._rank_suite import parametrize_cases, run_case


def pytest_generate_tests(metafunc):
    parametrize_cases(metafunc, "vsl_loss")


def test_vsl_loss(request, bench_env, case):
    run_case(request, bench_env, case)
