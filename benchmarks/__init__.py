"""Benchmark suites and report generator for vsl_ext (not part of the CI test run).

Run ``python -m benchmarks.report --quick`` from the repository root; see benchmarks/README.md.
"""
