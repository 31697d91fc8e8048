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
