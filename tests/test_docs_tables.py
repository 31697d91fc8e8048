"""The results tables of README.md and docs/ are what tools/docs_tables.py renders from the committed
results files: CI fails when a table and its file disagree."""
import importlib.util
import json
import os

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
