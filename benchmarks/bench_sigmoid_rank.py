"""sigmoid_rank (smoothed row ranks): vsl_ext vs the pure-PyTorch reference (see benchmarks/_rank_suite.py for
the cases, the timing and the memory measurement, and benchmarks/README.md for what runs).

    python -m pytest benchmarks/bench_sigmoid_rank.py --vsl-quick --benchmark-json=/tmp/sigmoid_rank.json
"""
from benchmarks._rank_suite import parametrize_cases, run_case


def pytest_generate_tests(metafunc):
    parametrize_cases(metafunc, "sigmoid_rank")


def test_sigmoid_rank(request, bench_env, case):
    run_case(request, bench_env, case)
