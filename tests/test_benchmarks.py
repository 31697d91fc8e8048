"""The benchmark tooling's logic (no timing): case lists, the window-share inputs, report rendering."""
import sys
from pathlib import Path

import pytest
import torch

# benchmarks/ is not installed; append (not prepend) the repository root so that vsl_ext stays the
# installed package.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from benchmarks import _cases  # noqa: E402
from benchmarks import report as report_mod  # noqa: E402
from vsl_ext.kernels.cuda import window_fraction  # noqa: E402


def test_sections_run_in_the_order_given():
    cases = _cases.make_cases("cuda", quick=True, sections=["window", "large-n"])
    sections = [c["section"] for c in cases]
    assert sections == sorted(sections, key=["window", "large-n"].index)
    assert set(sections) == {"window", "large-n"}
    assert all(c["window"] in _cases.WINDOW_FRACTIONS_QUICK for c in cases if c["section"] == "window")
    assert all(c["n"] <= 512 for c in _cases.make_cases("cpu", quick=False, max_n=512))
    ids = [_cases.case_id(c) for c in _cases.make_cases("cpu", quick=False)]
    assert len(ids) == len(set(ids))


def test_unknown_section_is_rejected():
    with pytest.raises(ValueError, match="sections"):
        _cases.make_cases("cpu", quick=True, sections=["main", "huge"])


@pytest.mark.parametrize("fraction", _cases.WINDOW_FRACTIONS)
def test_window_input_has_the_share_it_is_made_for(fraction):
    n = 512
    m = _cases.window_input(n, fraction)
    assert m.shape == (n, n) and m.dtype == torch.float32 and m.is_contiguous()
    measured = float(window_fraction(m, None, 1e-3, sample_rows=n))
    expected = (1 + (n - 1) * fraction) / n  # window_fraction counts each centre itself
    assert measured == pytest.approx(expected, abs=0.01)
    assert torch.equal(m, _cases.window_input(n, fraction))  # deterministic


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_window_input_rejects_shares_outside_0_1(fraction):
    with pytest.raises(ValueError, match="fraction"):
        _cases.window_input(8, fraction)


def _rank_record(n, window, algorithm, seconds, status="ok"):
    case = {"suite": "rank", "section": "window", "op": "sigmoid_rank", "impl": "vsl_ext", "variant": None,
            "algorithm": algorithm, "pass": "forward+backward", "n": n, "device": "cpu", "window": window}
    rec = dict(case, label=_cases.label(case), status=status)
    if status == "ok":
        rec.update(time_s=seconds, peak_extra_bytes=1 << 20, window_fraction=window + 0.001)
    return rec


def test_report_renders_the_window_table_and_the_time_budget_note():
    # sorted wins at 1 % and 10 %, loses at 50 %, wins again at 100 %: the limit stops at the first loss
    times = {0.01: (1.0, 0.1), 0.1: (1.0, 0.5), 0.5: (1.0, 1.5), 1.0: (1.0, 0.9)}
    records = [_rank_record(1024, w, a, t) for w, (d, s) in times.items() for a, t in (("dense", d), ("sorted", s))]
    assert report_mod.window_limit(records, 1024) == pytest.approx(0.101)
    assert report_mod.window_limit([r for r in records if r["window"] != 0.01 or r["algorithm"] == "dense"]
                                   + [_rank_record(1024, 0.01, "sorted", 2.0)], 1024) is None
    records.append(_rank_record(4096, 0.01, "dense", None, status="over session budget"))
    report = {"stamp": {"slug": "cpu-test", "device": "cpu", "device_name": "test CPU", "threads": 2},
              "settings": {"time_budget_seconds": 60.0}, "records": records}
    md = report_mod.render_markdown(report, plots={})
    assert "## Dense vs sorted by window share" in md
    assert "| 10% (10.1%) | 1 s | 500 ms | 2× |" in md
    assert "n = 1024: sorted ≤ dense up to 10% of pairs in the window" in md
    assert "not run (time budget)" in md
    assert "1 case(s) not run: the run's time budget (60 s) was spent" in md


def _main_record(impl, seconds, check_error=1e-7, n=128):
    case = {"suite": "rank", "section": "main", "op": "vsl_loss", "impl": impl, "variant": "row",
            "algorithm": "auto" if impl == "vsl_ext" else None, "pass": "forward+backward", "n": n, "device": "cpu",
            "window": None}
    return dict(case, label=_cases.label(case), status="ok", time_s=seconds, peak_extra_bytes=1 << 20,
                check_error=check_error, check_ok=check_error <= 1e-4)


def test_every_peer_is_a_main_case_of_its_device():
    cases = _cases.make_cases("cpu", quick=True, max_n=128, sections=["main"])
    row = {c["impl"] for c in cases if c["op"] == "vsl_loss" and c["variant"] == "row"}
    assert row == {"vsl_ext", "reference", "compile", "chunked", "numba"}
    cuda = {c["impl"] for c in _cases.make_cases("cuda", quick=True, max_n=128, sections=["main"])}
    assert {"numba-cuda", "cupy", "compile"} <= cuda and "numba" not in cuda


def test_quick_main_section_on_cuda_is_the_gpu_sessions_rows():
    cases = [c for c in _cases.make_cases("cuda", quick=True, sections=["main"]) if c["impl"] == "vsl_ext"]
    assert sorted({(c["op"], c["variant"]) for c in cases}) == [("vsl_loss", "public-code"), ("vsl_loss", "row")]
    assert sorted({c["n"] for c in cases}) == [128, 1024, 4096, 16384]
    assert {c["pass"] for c in cases} == {"forward+backward"}
    full = _cases.make_cases("cpu", quick=False, sections=["main"])
    assert {c["pass"] for c in full} == set(_cases.PASSES) and {c["op"] for c in full} == {"sigmoid_rank", "vsl_loss"}


def test_report_leads_with_the_ratio_to_the_fastest_peer():
    # the fastest peer (numba, 40 ms) sets the ratio, not the reference; a failed check is marked
    records = [_main_record("vsl_ext", 0.002), _main_record("reference", 0.150), _main_record("compile", 0.075),
               _main_record("numba", 0.040, check_error=3e-3)]
    report = {"stamp": {"slug": "cpu-test", "device": "cpu", "device_name": "test CPU", "threads": 2},
              "settings": {}, "records": records}
    md = report_mod.render_markdown(report, plots={})
    header = next(line for line in md.splitlines() if line.startswith("| n | ratio to fastest peer"))
    assert header.split(" | ")[1:3] == ["ratio to fastest peer", "fastest peer"]
    row = next(line for line in md.splitlines() if line.startswith("| 128 | "))
    assert row.startswith("| 128 | 20× | numba parallel | 2 ms |")
    assert "40 ms ✗" in row and "3.0e-03" in row


def _smooth_ap_record(impl, n, seconds=None, status="ok"):
    rec = {"suite": "smooth_ap_loss", "impl": impl, "n": n, "threads": 2, "status": status}
    if status == "ok":
        rec.update(time_s=seconds, peak_extra_bytes=n * n * 4)
    return rec


def test_report_renders_the_smooth_ap_section_with_its_peers():
    from benchmarks import bench_smooth_ap_loss

    records = [_smooth_ap_record("vsl_ext", 256, 0.002), _smooth_ap_record("pml", 256, 6.0),
               _smooth_ap_record("chunked", 256, 3.0), _smooth_ap_record("vsl_ext", 8192, 12.0),
               _smooth_ap_record("pml", 8192, status="does not fit (needs about 16 TB of n^3 tensors)")]
    report = {"stamp": {"slug": "cpu-test", "device": "cpu", "device_name": "test CPU", "threads": 2},
              "settings": {}, "records": records}
    md = report_mod.render_markdown(report, plots={})
    assert "## Smooth-AP (smooth_ap_loss): forward+backward vs peers" in md
    assert "| 256 | 2 ms | 6 s | 3 s | 262 kB | 262 kB | 262 kB | 1500.0× (chunked) | 3000.0× |" in md
    assert "| 8192 | 12 s | does not fit |  | 268 MB | does not fit |  |  |  |" in md
    assert "pml n = 8192: does not fit (needs about 16 TB of n^3 tensors)" in md
    assert ("- smooth_ap_loss, forward+backward: ratio to the fastest peer n = 256: 1500.0× (chunked); vsl_ext runs "
            "up to n = 8192 (12 s, peak memory 268 MB).") in md
    assert "pytest-benchmark" not in md  # no pytest suite ran: none of its settings are described
    assert bench_smooth_ap_loss.render_section([]) == [] and bench_smooth_ap_loss.summary_line([]) == ""


def test_smooth_ap_suite_stops_at_its_deadline_without_running_a_case():
    import time

    from benchmarks import bench_smooth_ap_loss

    records = bench_smooth_ap_loss.run_cases(1, quick=True, deadline=time.monotonic() - 1)
    assert {r["status"] for r in records} == {"not run (time budget)"}
    assert {(r["impl"], r["n"]) for r in records} == {(i, n) for i in bench_smooth_ap_loss.QUICK_IMPLS
                                                      for n in bench_smooth_ap_loss.N_QUICK}
