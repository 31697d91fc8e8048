"""The results tables of README.md and docs/ are what tools/docs_tables.py renders from the committed
results files: CI fails when a table and its file disagree."""
import importlib.util
import json
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool():
    spec = importlib.util.spec_from_file_location("docs_tables", os.path.join(ROOT, "tools", "docs_tables.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_results_table_matches_its_file():
    tool = _tool()
    stale = tool.run(check=True)
    assert stale == {}, ("tables differ from their results files (run `python tools/docs_tables.py`): "
                         f"{stale}")


def test_the_docs_have_results_tables_and_each_names_an_existing_file():
    tool = _tool()
    specs = []
    for doc in tool.documents():
        with open(doc, encoding="utf-8") as f:
            specs += [m["spec"] for m in map(tool.BEGIN.match, f.read().splitlines()) if m]
    assert any(s.startswith("summary docs/results/demo_vse.json") for s in specs)
    for spec in specs:
        kind, *args = spec.split()
        files = args[:1] if kind == "copy" else args
        for path in files:
            assert os.path.isfile(os.path.join(ROOT, path)), spec


def _write_results(path, baseline, vsl):
    """A one-model demo results file with per-seed rsum/R@K values (three seeds)."""
    def rows(values):
        return [{k: v for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")}
                for v in values]
    diag = [{"consistent": 1.0, "secondary_match": 0.0, "rank_agreement": 0.5, "oracle_t2i_r1": 40.0}] * 3
    path.write_text(json.dumps({
        "command": "vsl-train --demo", "commit": "0" * 40, "seeds": [0, 1, 2],
        "results": {"baseline": rows(baseline), "vsl": rows(vsl)},
        "diagnostics": {"baseline": diag, "vsl": diag},
        "train_config": {"phrase_level": False, "phrase_weight": 0.1, "beta": 10.0, "model": "vse", "threads": 1},
        "environment": {"threads": 1, "torch": "2.13.0+cpu"}}))


def test_a_changed_table_is_found_and_rendered_back(tmp_path, monkeypatch):
    tool = _tool()
    monkeypatch.setattr(tool, "ROOT", str(tmp_path))
    (tmp_path / "docs").mkdir()
    _write_results(tmp_path / "docs" / "r.json", [10.0, 20.0, 30.0], [1.0, 2.0, 4.0])
    doc = tmp_path / "README.md"
    doc.write_text("intro\n\n<!-- results-table: summary docs/r.json -->\n| old |\n<!-- /results-table -->\nend\n")
    assert tool.run(check=True) == {"README.md": ["summary docs/r.json"]}
    assert "| old |" in doc.read_text()                      # --check changes nothing
    tool.run(check=False)
    text = doc.read_text()
    # mean ± sample std: [10, 20, 30] -> 20.0 ± 10.0; [1, 2, 4] -> 2.3 ± 1.5 (sqrt(7/3) = 1.53)
    assert "| rsum | 20.0 ± 10.0 | 2.3 ± 1.5 |" in text
    assert "| i2t R@1 / R@5 / R@10 | 20.0 ± 10.0 / 20.0 ± 10.0 / 20.0 ± 10.0 |" in text
    assert "1 CPU thread" in text and "torch 2.13.0+cpu" in text
    assert text.startswith("intro\n") and text.endswith("<!-- /results-table -->\nend\n")
    assert tool.run(check=True) == {}
    # a hand edit inside the table is caught
    doc.write_text(text.replace("20.0 ± 10.0 | 2.3", "20.0 ± 10.0 | 2.4"))
    assert tool.run(check=True) == {"README.md": ["summary docs/r.json"]}


def test_a_table_without_its_closing_marker_is_an_error(tmp_path, monkeypatch):
    tool = _tool()
    monkeypatch.setattr(tool, "ROOT", str(tmp_path))
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("<!-- results-table: summary docs/r.json -->\n| x |\n")
    with pytest.raises(ValueError, match="no closing"):
        tool.run(check=True)


def test_add_keeps_a_runs_results_with_what_produced_them(tmp_path, monkeypatch):
    tool = _tool()
    monkeypatch.setattr(tool, "ROOT", str(tmp_path))
    run = tmp_path / "results.json"
    run.write_text(json.dumps({"seeds": [0], "results": {"baseline": [], "vsl": []}}))
    path = tool.add_results(str(run), "demo_x", "vsl-train --demo", "a" * 40)
    assert path == os.path.join("docs", "results", "demo_x.json")
    kept = json.loads((tmp_path / path).read_text())
    assert kept == {"command": "vsl-train --demo", "commit": "a" * 40, "seeds": [0],
                    "results": {"baseline": [], "vsl": []}}


def _run_folder(folder, vsl, seed, rsum):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"vsl": vsl, "seed": seed, "threads": 1, "model": "vse"}))
    metrics = {k: rsum / 6 for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")}
    (folder / "results.json").write_text(json.dumps({"test": {"full": {**metrics, "rsum": rsum}}}))


def test_add_runs_gathers_both_arms_of_run_folders_and_renders_them(tmp_path, monkeypatch):
    tool = _tool()
    monkeypatch.setattr(tool, "ROOT", str(tmp_path))
    runs = []
    for seed, (base, vsl) in enumerate([(60.0, 6.0), (120.0, 12.0), (180.0, 24.0)]):
        for arm, rsum in (("baseline", base), ("vsl", vsl)):
            runs.append(str(tmp_path / "runs" / f"{arm}{seed}"))
            _run_folder(tmp_path / "runs" / f"{arm}{seed}", arm == "vsl", seed, rsum)
    path = tool.gather_runs(runs[::-1], "f8k", "vsl-train ...", "b" * 40)   # any order
    kept = json.loads((tmp_path / path).read_text())
    assert kept["seeds"] == [0, 1, 2] and [r["rsum"] for r in kept["results"]["vsl"]] == [6.0, 12.0, 24.0]
    doc = tmp_path / "README.md"
    doc.write_text(f"<!-- results-table: runs {path} -->\n<!-- /results-table -->\n")
    tool.run(check=False)
    text = doc.read_text()
    # rsum 60/120/180 -> 120.0 ± 60.0; 6/12/24 -> 14.0 ± 9.2 (sample std sqrt(84) = 9.17); R@K = rsum / 6
    assert "| triplet | 20.0 ± 10.0 / 20.0 ± 10.0 / 20.0 ± 10.0 | 20.0 ± 10.0 / 20.0 ± 10.0 / 20.0 ± 10.0 | " \
           "120.0 ± 60.0 |" in text
    assert text.split("\n")[4].startswith("| + VSL |") and text.split("\n")[4].endswith("| 14.0 ± 9.2 |")
    with pytest.raises(ValueError, match="both arms for the same seeds"):
        tool.gather_runs(runs[:-1], "f8k", "vsl-train ...", "b" * 40)
    with pytest.raises(ValueError, match="a second vsl run of seed 2"):
        tool.gather_runs(runs + [runs[-1]], "f8k", "vsl-train ...", "b" * 40)


def _record(path, columns, rows, **kw):
    from vsl_ext.harness.results_record import write_record

    env = kw.pop("environment", {"torch": "2.13.0+cpu", "threads": 2, "machine": "AMD EPYC, 2 CPUs", "load": "4.6-6.4"})
    return write_record(str(path), columns, rows, kw.pop("command", "python -m made.up --n 8"), env,
                        commit=kw.pop("commit", "c" * 40), **kw)


def test_record_kind_renders_the_rows_of_its_files_under_one_header(tmp_path, monkeypatch):
    tool = _tool()
    monkeypatch.setattr(tool, "ROOT", str(tmp_path))
    (tmp_path / "docs" / "results").mkdir(parents=True)
    _record(tmp_path / "docs" / "results" / "old.json", ["n", "time"], [["8", "0.088 ms"], ["1,024", "284 ms"]],
            align="lr", command="", note="history: kept as committed", environment={"torch": "not recorded",
                                                                                    "threads": 2, "load": "3.5-3.7"})
    _record(tmp_path / "docs" / "results" / "new.json", ["n", "time"], [["8", "0.137 ms"]], align="lr")
    (tmp_path / "README.md").write_text("no tables\n")
    doc = tmp_path / "docs" / "speed.md"
    doc.write_text("<!-- results-table: record docs/results/old.json docs/results/new.json -->\n"
                   "<!-- /results-table -->\n")
    assert tool.run(check=True) == {os.path.join("docs", "speed.md"): ["record docs/results/old.json "
                                                                        "docs/results/new.json"]}
    tool.run(check=False)
    lines = doc.read_text().split("\n")
    assert lines[1:6] == ["| n | time |", "|---|---:|", "| 8 | 0.088 ms |", "| 1,024 | 284 ms |", "| 8 | 0.137 ms |"]
    source = lines[7]
    assert "[old.json](results/old.json), [new.json](results/new.json)" in source
    assert "measured at commit cccccccccc, torch not recorded, 2 CPU threads, load average 3.5-3.7; " \
           "history: kept as committed" in source
    assert "`python -m made.up --n 8` at commit cccccccccc, torch 2.13.0+cpu, 2 CPU threads, AMD EPYC, 2 CPUs, " \
           "load average 4.6-6.4" in source
    assert tool.run(check=True) == {}


@pytest.mark.parametrize("content, match", [
    (None, "missing.json"),                                                     # no such file
    ({"command": "x"}, "docs/r/missing.json is not a results record"),          # not a record
    ({"columns": ["a", "b"], "rows": [["1"]]}, "docs/r/missing.json: a row of 1 cells under 2 columns"),
    ("{not json", "record docs/r/missing.json"),
])
def test_a_missing_or_wrong_record_file_fails_naming_it(tmp_path, monkeypatch, content, match):
    tool = _tool()
    monkeypatch.setattr(tool, "ROOT", str(tmp_path))
    (tmp_path / "docs" / "r").mkdir(parents=True)
    if content is not None:
        (tmp_path / "docs" / "r" / "missing.json").write_text(content if isinstance(content, str)
                                                              else json.dumps(content))
    (tmp_path / "README.md").write_text("<!-- results-table: record docs/r/missing.json -->\n<!-- /results-table -->\n")
    with pytest.raises(ValueError, match=match):
        tool.run(check=True)


def test_records_of_different_columns_are_not_rendered_as_one_table(tmp_path, monkeypatch):
    tool = _tool()
    monkeypatch.setattr(tool, "ROOT", str(tmp_path))
    _record(tmp_path / "a.json", ["n", "time"], [["8", "1 ms"]])
    _record(tmp_path / "b.json", ["n", "ratio"], [["8", "2×"]])
    with pytest.raises(ValueError, match=r"b\.json: columns \['n', 'ratio'\] differ from a\.json's"):
        tool.render_record("a.json", "b.json")


def test_the_record_writer_checks_widths_and_records_the_commit(tmp_path):
    from vsl_ext.harness import results_record

    with pytest.raises(ValueError, match="a row of 1 cells under 2 columns"):
        _record(tmp_path / "r.json", ["a", "b"], [["1"]])
    with pytest.raises(ValueError, match="one 'l' or 'r' per column"):
        _record(tmp_path / "r.json", ["a", "b"], [["1", "2"]], align="lx")
    assert not (tmp_path / "r.json").exists()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", results_record.current_commit(repo))
    assert results_record.current_commit(str(tmp_path)) == "unknown"          # not a git checkout
    assert results_record.load_range(6.43, 4.61) == "4.6-6.4"
    env = results_record.environment(2, "1.0-2.0")
    assert env["threads"] == 2 and env["load"] == "1.0-2.0" and env["torch"].startswith("2.")


def test_one_process_writes_its_medians_as_a_record(tmp_path):
    from benchmarks import one_process

    times = {8: {"vsl_ext": [1e-4, 1.5e-4, 2e-4], "reference": [3e-4, 3.1e-4, 4e-4], "compile": [2e-4, 2e-4, 2e-4]},
             1024: {"vsl_ext": [0.5, 0.6, 0.7], "numba": [30.0, 31.0, 32.0]}}
    path = tmp_path / "r.json"
    one_process.write_record(str(path), times, "--n 8 1024 --rounds 3", 2, "4.6-6.4")
    rec = json.loads(path.read_text())
    assert rec["columns"] == one_process.RECORD_COLUMNS and rec["environment"]["load"] == "4.6-6.4"
    assert rec["command"] == "python -m benchmarks.one_process --n 8 1024 --rounds 3"
    # n = 8: the goal is the eager formula (median 0.31 ms / 0.15 ms = 2.07x); n = 1,024: numba 31 s / 0.6 s
    assert rec["rows"][0] == ["8", "`--n 8 1024 --rounds 3`", "4.6-6.4", "0.15 ms",
                              "eager formula 0.31 ms (torch.compile 0.2 ms)", "2.1×", "≥ 2× the eager formula: met"]
    assert rec["rows"][1] == ["1,024", "`--n 8 1024 --rounds 3`", "4.6-6.4", "600 ms", "numba 31 s", "51.7×",
                              "≥ 80×: **not met**"]
    assert rec["data"]["seconds"]["1024"]["numba"] == [30.0, 31.0, 32.0]


def test_epoch_times_rows_and_options():
    from vsl_ext.harness import epoch_times

    assert epoch_times.row("vse", 1.834, 40, 40) == ["`vse`", "1.83 s", "the whole epoch (40 batches)"]
    assert epoch_times.row("sgr", 60.0, 3, 40) == ["`sgr`", "800 s", "the first 3 of 40 batches (60 s), × 40/3"]
    assert epoch_times.parse_batches(["sgr=3", "saf=8"]) == {"sgr": 3, "saf": 8}
    for bad in ("sgr", "sgr=0", "xyz=3", "sgr=x"):
        with pytest.raises(ValueError, match="MODEL=K"):
            epoch_times.parse_batches([bad])
    args = epoch_times.train_args("runs/demo/data", "saf", "out/saf")
    assert " ".join(args).startswith("--data runs/demo/data --dataset synthetic --model saf --epochs 1 "
                                     "--embed-size 128 --word-dim 64 --threads 1")


def _phrase_run(folder, weight, phrase, triplet, best, test_rsum, threads=1):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"phrase_level": True, "phrase_weight": weight,
                                                    "threads": threads}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e + 1, "train_phrase": p,
                                                              "train_triplet": triplet}) + "\n"
                                                  for e, p in enumerate(phrase)))
    (folder / "results.json").write_text(json.dumps({"best_val_rsum": best, "best_epoch": len(phrase),
                                                     "test": {"full": {"rsum": test_rsum}}}))


def test_add_phrase_weights_keeps_one_row_per_run(tmp_path, monkeypatch):
    tool = _tool()
    monkeypatch.setattr(tool, "ROOT", str(tmp_path))
    _phrase_run(tmp_path / "w1", 1.0, [86.1, 70.0, 58.4], 50.04, 553.46, 453.38)
    _phrase_run(tmp_path / "w01", 0.1, [92.5, 70.0, 64.0], 47.1, 558.7, 475.3)
    path = tool.gather_phrase_weights([str(tmp_path / "w1"), str(tmp_path / "w01")], "pw", "vsl-train ...", "d" * 40)
    rec = json.loads((tmp_path / path).read_text())
    assert rec["commit"] == "d" * 40 and rec["environment"]["threads"] == 1
    assert rec["columns"][2:4] == ["phrase terms, epoch 1 → 3", "triplet term, epoch 3"]
    assert rec["rows"] == [["1", "553.5 (epoch 3)", "86 → 58", "50", "453.4"],
                           ["0.1", "558.7 (epoch 3)", "92 → 64", "47", "475.3"]]
    _phrase_run(tmp_path / "w2", 2.0, [1.0, 1.0, 1.0], 1.0, 1.0, 1.0, threads=2)
    _phrase_run(tmp_path / "w3", 3.0, [1.0], 1.0, 1.0, 1.0)
    for other in ("w2", "w3"):
        with pytest.raises(ValueError, match="the same thread count and epochs"):
            tool.gather_phrase_weights([str(tmp_path / "w1"), str(tmp_path / other)], "pw", "x", "d" * 40)


def test_phrases_gold_scores_rows():
    spec = importlib.util.spec_from_file_location("gold_tool", os.path.join(ROOT, "tools", "phrases_gold_scores.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    rows = tool.record_rows({"entities": (1.0, 0.98), "triples": (0.9643, 0.9464)},
                            {"entities": (0.96, 0.96), "triples": (0.9, 0.9)})
    assert rows == [["entities", "1.000", "0.980", "0.96, 0.96"], ["triples", "0.964", "0.946", "0.90, 0.90"]]


def test_epoch_times_times_a_whole_epoch_or_its_first_batches_and_writes_the_record(tiny_data, tmp_path):
    from vsl_ext.harness import epoch_times

    def args(name):                      # 40 captions in batches of 10: 4 steps per epoch
        return epoch_times.train_args(tiny_data, "vse", str(tmp_path / name)) + ["--batch-size", "10"]

    seconds, timed, per_epoch = epoch_times.time_epoch(args("whole"))
    logged = json.loads((tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()[0])
    assert (timed, per_epoch) == (4, 4) and seconds == logged["train_seconds"] > 0
    seconds, timed, per_epoch = epoch_times.time_epoch(args("part"), batches=2)
    assert (timed, per_epoch) == (2, 4) and seconds > 0
    assert (tmp_path / "part" / "metrics.jsonl").read_text() == ""        # stopped inside the epoch
    record = tmp_path / "times.json"
    assert epoch_times.main(["--data", tiny_data, "--models", "vse", "--output", str(tmp_path / "runs"),
                             "--record", str(record)]) == 0
    rec = json.loads(record.read_text())
    assert rec["columns"] == epoch_times.COLUMNS and rec["environment"]["threads"] == 1
    assert rec["rows"][0][0] == "`vse`" and rec["rows"][0][2] == "the whole epoch (1 batches)"
    assert rec["command"].startswith(f"python -m vsl_ext.harness.epoch_times --data {tiny_data} --models vse")
