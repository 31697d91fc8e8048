"""Render every results table of README.md and docs/*.md from the committed results files.

    python tools/docs_tables.py            # rewrite the tables between their markers
    python tools/docs_tables.py --check    # exit 1 and name each table that differs from its file
    python tools/docs_tables.py --add runs/demo/results.json demo_vse --command "vsl-train --demo" \
        --commit SHA                       # keep a run's results as docs/results/demo_vse.json, then render
    python tools/docs_tables.py --add-runs f8k_mini RUN [RUN ...] --command "..." --commit SHA
                                           # gather vsl-train run folders (both arms, any seeds) likewise
    python tools/docs_tables.py --add-phrase-weights ssamt_phrase_weight RUN [RUN ...] --command "..." \
        --commit SHA
                                           # one row per --phrase-weight run, as a record

A table lives between two markers; the first names how to render it and from which file (paths
from the repository root)::

    <!-- results-table: summary docs/results/demo_vse.json -->
    | metric (test, 3 seeds) | ... |
    <!-- /results-table -->

Kinds (``FILE``: a demo's ``results.json`` as ``vsl-train --demo`` writes it, plus the ``commit``
and ``command`` that produced it, kept under ``docs/results/``):

- ``summary FILE``: R@1 / R@5 / R@10 per direction, rsum and the rank agreement, one column per arm;
- ``demo FILE`` and ``diagnostics FILE``: the two tables the demo prints (``vsl_ext.harness.demo``);
- ``comparison FILE`` and ``comparison-diagnostics FILE``: the ``--model 3shnet`` demo's tables
  (``vsl_ext.harness.demo_shnet``);
- ``variants FILE [FILE ...]``: one row per demo (its command, model, rsum and i2t R@1 of both arms);
- ``runs FILE``: R@1 / R@5 / R@10 per direction and rsum, one row per arm, of vsl-train runs gathered
  with ``--add-runs`` (each run's ``config.json`` says its arm and seed, ``results.json`` its test metrics);
- ``copy FILE N``: the N-th table (1-based) of a Markdown file, verbatim (benchmark reports);
- ``record FILE [FILE ...]``: the columns and rows of results records
  (``vsl_ext.harness.results_record``: measured tables with their command, commit, torch version,
  thread count, machine and load), the rows of every file under the first file's columns.

Every rendered table is followed by one line naming its file and what its numbers depend on (the
torch CPU thread count and torch version the run recorded; for a record also the machine and load).
``tests/test_docs_tables.py`` runs the check, so CI fails when a table and its file disagree.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from types import SimpleNamespace
from typing import Dict, List, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN = re.compile(r"^<!-- results-table: (?P<spec>[^>]*?) -->$")
END = "<!-- /results-table -->"
DEMO_ARMS = ("baseline", "vsl")


def _load(path: str) -> dict:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return json.load(f)


def _mean_std(values: Sequence[float]) -> Tuple[float, float]:
    from vsl_ext.harness.demo import _mean_std

    return _mean_std(values)


def _cell(values: Sequence[float]) -> str:
    return "{:.1f} ± {:.1f}".format(*_mean_std(values))


def _labels(res: dict) -> Tuple[str, str]:
    """The arms' column names, as the demo itself names them (from the run's config)."""
    from vsl_ext.harness.demo_variants import arm_labels

    return arm_labels(SimpleNamespace(**res["train_config"]))


def _single_model(res: dict, path: str) -> dict:
    if set(res["results"]) != set(DEMO_ARMS):
        raise ValueError(f"{path} is not a one-model demo's results file (its arms: {sorted(res['results'])})")
    return res


def render_summary(path: str) -> str:
    res = _single_model(_load(path), path)
    labels = _labels(res)
    seeds = len(res["seeds"])
    lines = [f"| metric (test, {seeds} seeds) | {labels[0]} | {labels[1]} |", "|---|---|---|"]
    for direction in ("i2t", "t2i"):
        cells = [" / ".join(_cell([r[f"{direction}_r{k}"] for r in res["results"][arm]]) for k in (1, 5, 10))
                 for arm in DEMO_ARMS]
        lines.append(f"| {direction} R@1 / R@5 / R@10 | {cells[0]} | {cells[1]} |")
    lines.append(f"| rsum | {_cell([r['rsum'] for r in res['results']['baseline']])} | "
                 f"{_cell([r['rsum'] for r in res['results']['vsl']])} |")
    agree = ["{:.3f}".format(sum(d["rank_agreement"] for d in res["diagnostics"][arm]) / len(res["diagnostics"][arm]))
             for arm in DEMO_ARMS]
    lines.append(f"| rank agreement of S with C (Spearman) | {agree[0]} | {agree[1]} |")
    return "\n".join(lines)


def render_demo(path: str) -> str:
    from vsl_ext.harness.demo import demo_table

    res = _single_model(_load(path), path)
    return demo_table(res["results"], res["seeds"], _labels(res))


def render_diagnostics(path: str) -> str:
    from vsl_ext.harness.demo import demo_diagnostics

    res = _single_model(_load(path), path)
    return demo_diagnostics(res["diagnostics"], _labels(res))


def _comparison_results(path: str):
    res = _load(path)
    if "models" not in res:
        raise ValueError(f"{path} is not a --model 3shnet demo's results file (no 'models')")
    return res, {m: (res["results"][m], res["diagnostics"][m]) for m in res["models"]}


def render_comparison(path: str) -> str:
    from vsl_ext.harness.demo_shnet import comparison_table

    res, results = _comparison_results(path)
    return comparison_table(results, res["seeds"])


def render_comparison_diagnostics(path: str) -> str:
    from vsl_ext.harness.demo_shnet import comparison_diagnostics

    return comparison_diagnostics(_comparison_results(path)[1])


def render_variants(*paths: str) -> str:
    lines = ["| demo | model | triplet rsum | triplet + 10 VSL rsum | i2t R@1: triplet → + VSL | "
             "t2i R@1: triplet → + VSL |", "|---|---|---|---|---|---|"]
    for path in paths:
        res = _load(path)
        if "models" in res:      # the 3shnet demo: its own model's arms
            model = res["models"][-1]
            arms = res["results"][model]
        else:
            model, arms = res["train_config"]["model"], res["results"]
        cells = [_cell([r["rsum"] for r in arms[a]]) for a in DEMO_ARMS]
        r1 = {d: " → ".join(_cell([r[f"{d}_r1"] for r in arms[a]]) for a in DEMO_ARMS) for d in ("i2t", "t2i")}
        lines.append(f"| `{res['command']}` | `{model}` | {cells[0]} | {cells[1]} | {r1['i2t']} | {r1['t2i']} |")
    return "\n".join(lines)


def markdown_tables(text: str) -> List[str]:
    """The Markdown tables of ``text`` (runs of lines starting with '|'), in order."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append("\n".join(current))
            current = []
    return tables


def render_copy(path: str, number: str) -> str:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        tables = markdown_tables(f.read())
    n = int(number)
    if not 1 <= n <= len(tables):
        raise ValueError(f"{path} has {len(tables)} tables, not a table {n}")
    return tables[n - 1]


def render_runs(path: str) -> str:
    res = _load(path)
    lines = ["| | i2t R@1 / R@5 / R@10 | t2i R@1 / R@5 / R@10 | rsum |", "|---|---|---|---|"]
    for arm, label in zip(DEMO_ARMS, ("triplet", "+ VSL")):
        runs = res["results"][arm]
        cells = [" / ".join(_cell([r[f"{d}_r{k}"] for r in runs]) for k in (1, 5, 10)) for d in ("i2t", "t2i")]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {_cell([r['rsum'] for r in runs])} |")
    return "\n".join(lines)


def _record(path: str) -> dict:
    rec = _load(path)
    if not isinstance(rec, dict) or not isinstance(rec.get("columns"), list) or not isinstance(rec.get("rows"), list):
        raise ValueError(f"{path} is not a results record (no 'columns' and 'rows')")
    for row in rec["rows"]:
        if len(row) != len(rec["columns"]):
            raise ValueError(f"{path}: a row of {len(row)} cells under {len(rec['columns'])} columns: {row}")
    return rec


def render_record(*paths: str) -> str:
    """The rows of the records ``paths``, in order, under the first one's columns (all must match)."""
    if not paths:
        raise ValueError("record needs at least one file")
    first = _record(paths[0])
    lines = ["| " + " | ".join(first["columns"]) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in first.get("align", "l" * len(first["columns"])))
             + "|"]
    for path in paths:
        rec = _record(path)
        if rec["columns"] != first["columns"]:
            raise ValueError(f"{path}: columns {rec['columns']} differ from {paths[0]}'s {first['columns']}")
        lines += ["| " + " | ".join(row) + " |" for row in rec["rows"]]
    return "\n".join(lines)


def _record_source(res: dict) -> str:
    env = res.get("environment", {})
    parts = [f"torch {env['torch']}"] if "torch" in env else []
    threads = env.get("threads")
    if threads is not None:
        parts.append(f"{threads} CPU thread{'s' if threads != 1 else ''}")
    parts += [f"{k} {v}" for k, v in env.items() if k not in ("torch", "threads", "machine", "load")]
    if "machine" in env:
        parts.append(env["machine"])
    if "load" in env:
        parts.append(f"load average {env['load']}")
    commit = str(res.get("commit", "?"))
    text = (f"`{res['command']}` at" if res.get("command") else "measured at") + \
        f" commit {commit[:10]}{' with uncommitted changes' * commit.endswith('+dirty')}"
    return text + ", " + ", ".join(parts) + (f"; {res['note']}" if res.get("note") else "")


RENDERERS = {"summary": render_summary, "demo": render_demo, "diagnostics": render_diagnostics,
             "comparison": render_comparison, "comparison-diagnostics": render_comparison_diagnostics,
             "variants": render_variants, "runs": render_runs, "copy": render_copy, "record": render_record}


def source_line(kind: str, args: Sequence[str], doc: str) -> str:
    """The line under a table: its file(s), relative to ``doc``, and what the numbers depend on."""
    files = list(args[:1]) if kind == "copy" else list(args)
    links = ", ".join(f"[{os.path.basename(p)}]({os.path.relpath(os.path.join(ROOT, p), os.path.dirname(doc))})"
                      for p in files)
    if kind == "copy":
        return f"<sub>Table {args[1]} of {links}; rendered by `python tools/docs_tables.py`.</sub>"
    if kind == "record":
        return (f"<sub>From {links} ({'; '.join(_record_source(_load(p)) for p in files)}); rendered by "
                f"`python tools/docs_tables.py`.</sub>")
    envs = []
    for p in files:
        res = _load(p)
        env = res.get("environment", {})
        threads = env.get("threads", res.get("train_config", {}).get("threads"))
        envs.append(f"`{res.get('command', '?')}` at commit {str(res.get('commit', '?'))[:10]}, torch "
                    f"{env.get('torch', '?')}, {threads} CPU thread{'s' if threads != 1 else ''}")
    return (f"<sub>From {links} ({'; '.join(envs)}: the same torch build and thread count give the same "
            f"numbers); rendered by `python tools/docs_tables.py`.</sub>")


def render_block(spec: str, doc: str) -> str:
    kind, *args = spec.split()
    if kind not in RENDERERS:
        raise ValueError(f"{doc}: unknown results-table kind {kind!r} (known: {', '.join(RENDERERS)})")
    try:
        return RENDERERS[kind](*args) + "\n\n" + source_line(kind, args, doc)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{os.path.relpath(doc, ROOT)}: the results table '{spec}': {exc}") from exc


def documents() -> List[str]:
    docs = os.path.join(ROOT, "docs")
    return [os.path.join(ROOT, "README.md")] + sorted(os.path.join(docs, n) for n in os.listdir(docs)
                                                     if n.endswith(".md"))


def render_document(text: str, doc: str) -> Tuple[str, List[str]]:
    """``text`` with every marked table re-rendered, and the specs of the tables that changed."""
    lines = text.split("\n")
    out: List[str] = []
    changed: List[str] = []
    i = 0
    while i < len(lines):
        m = BEGIN.match(lines[i])
        out.append(lines[i])
        i += 1
        if not m:
            continue
        end = i
        while end < len(lines) and lines[end] != END:
            if BEGIN.match(lines[end]):
                break
            end += 1
        if end == len(lines) or lines[end] != END:
            raise ValueError(f"{doc}: the results table '{m['spec']}' has no closing {END}")
        rendered = render_block(m["spec"], doc)
        if "\n".join(lines[i:end]) != rendered:
            changed.append(m["spec"])
        out.extend(rendered.split("\n"))
        out.append(END)
        i = end + 1
    return "\n".join(out), changed


def run(check: bool) -> Dict[str, List[str]]:
    """Re-render (or with ``check`` only compare) every document; returns {document: changed specs}."""
    from vsl_ext._atomic import atomic_write

    report = {}
    for doc in documents():
        with open(doc, encoding="utf-8") as f:
            text = f.read()
        new, changed = render_document(text, doc)
        if changed:
            report[os.path.relpath(doc, ROOT)] = changed
            if not check:
                atomic_write(doc, new)
    return report


def add_results(run_results: str, name: str, command: str, commit: str) -> str:
    """Copy a demo's ``results.json`` to ``docs/results/<name>.json`` with the ``command`` and the
    ``commit`` of the code that produced it; returns the new file's path from the root."""
    from vsl_ext._atomic import atomic_write

    with open(run_results, encoding="utf-8") as f:
        res = json.load(f)
    path = os.path.join("docs", "results", f"{name}.json")
    atomic_write(os.path.join(ROOT, path), json.dumps({"command": command, "commit": commit, **res}, indent=1))
    return path


def gather_runs(run_dirs: Sequence[str], name: str, command: str, commit: str) -> str:
    """Keep the test metrics of vsl-train run folders (``config.json`` + ``results.json``: both arms,
    one run per arm and seed) as ``docs/results/<name>.json``; returns its path from the root."""
    from vsl_ext._atomic import atomic_write

    results: Dict[str, Dict[int, dict]] = {arm: {} for arm in DEMO_ARMS}
    configs = {}
    for run_dir in run_dirs:
        with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        with open(os.path.join(run_dir, "results.json"), encoding="utf-8") as f:
            test = json.load(f)["test"]
        if len(test) != 1:
            raise ValueError(f"{run_dir}: results.json holds {sorted(test)}, not one test protocol")
        arm = "vsl" if cfg["vsl"] else "baseline"
        if cfg["seed"] in results[arm]:
            raise ValueError(f"{run_dir}: a second {arm} run of seed {cfg['seed']}")
        results[arm][cfg["seed"]] = next(iter(test.values()))
        configs[arm] = cfg
    seeds = sorted(results["baseline"])
    if not seeds or sorted(results["vsl"]) != seeds:
        raise ValueError(f"the runs need both arms for the same seeds, got {sorted(results['baseline'])} (baseline) "
                         f"and {sorted(results['vsl'])} (vsl)")
    import torch

    environment = {"threads": configs["vsl"]["threads"], "torch": torch.__version__}
    gathered = {"command": command, "commit": commit, "seeds": seeds, "environment": environment,
                "train_config": configs["vsl"],
                "results": {arm: [results[arm][s] for s in seeds] for arm in DEMO_ARMS}}
    path = os.path.join("docs", "results", f"{name}.json")
    atomic_write(os.path.join(ROOT, path), json.dumps(gathered, indent=1))
    return path


def _run_folder(run_dir: str) -> Tuple[dict, List[dict], dict]:
    """A vsl-train run folder's ``config.json``, ``metrics.jsonl`` (one dict per epoch) and ``results.json``."""
    def read(name):
        with open(os.path.join(run_dir, name), encoding="utf-8") as f:
            return f.read()
    history = [json.loads(line) for line in read("metrics.jsonl").splitlines() if line.strip()]
    if not history:
        raise ValueError(f"{run_dir}: metrics.jsonl holds no epoch")
    return json.loads(read("config.json")), history, json.loads(read("results.json"))


def gather_phrase_weights(run_dirs: Sequence[str], name: str, command: str, commit: str) -> str:
    """Keep ``--phrase-level`` runs that differ in ``--phrase-weight`` as the record
    ``docs/results/<name>.json``: per run (in the order given) its w, best validation rsum (and
    epoch), the phrase terms' mean training value in the first and last epoch, the triplet term's in
    the last, and the test rsum of its best checkpoint. Returns the record's path from the root;
    ValueError for a run without ``--phrase-level`` or runs of different thread counts or epochs."""
    from vsl_ext.harness.results_record import environment, write_record

    rows, threads, epochs = [], set(), set()
    for run_dir in run_dirs:
        cfg, history, res = _run_folder(run_dir)
        if not cfg.get("phrase_level"):
            raise ValueError(f"{run_dir}: not a --phrase-level run")
        threads.add(cfg["threads"])
        epochs.add(len(history))
        test = next(iter((res.get("test") or {"-": {"rsum": float("nan")}}).values()))
        rows.append([f"{cfg['phrase_weight']:g}", f"{res['best_val_rsum']:.1f} (epoch {res['best_epoch']})",
                     f"{history[0]['train_phrase']:.0f} → {history[-1]['train_phrase']:.0f}",
                     f"{history[-1]['train_triplet']:.0f}", f"{test['rsum']:.1f}"])
    if len(threads) != 1 or len(epochs) != 1:
        raise ValueError(f"the runs need the same thread count and epochs, got threads {sorted(threads)}, "
                         f"epochs {sorted(epochs)}")
    columns = ["w", "best val rsum (epoch)", f"phrase terms, epoch 1 → {len(history)}",
               f"triplet term, epoch {len(history)}", "test rsum (best epoch)"]
    path = os.path.join("docs", "results", f"{name}.json")
    write_record(os.path.join(ROOT, path), columns, rows, command, environment(threads.pop()), align="lrrrr",
                 commit=commit)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs from its file")
    p.add_argument("--add", nargs=2, metavar=("RESULTS_JSON", "NAME"),
                   help="first keep a run's results.json as docs/results/NAME.json (needs --command, --commit)")
    p.add_argument("--add-runs", nargs="+", metavar=("NAME", "RUN"),
                   help="first keep vsl-train run folders' test metrics as docs/results/NAME.json (needs --command, "
                   "--commit)")
    p.add_argument("--add-phrase-weights", nargs="+", metavar=("NAME", "RUN"),
                   help="first keep --phrase-level runs of several --phrase-weight values as the record "
                   "docs/results/NAME.json (needs --command, --commit)")
    p.add_argument("--command", help="with --add/--add-runs/--add-phrase-weights: the command that produced the runs")
    p.add_argument("--commit", help="with --add/--add-runs/--add-phrase-weights: the commit of the code that produced "
                   "the runs")
    args = p.parse_args(argv)
    sys.path.insert(0, ROOT)
    if args.add:
        if not (args.command and args.commit):
            p.error("--add needs --command and --commit (what produced the numbers)")
        print(f"wrote {add_results(args.add[0], args.add[1], args.command, args.commit)}")
    if args.add_runs:
        if not (args.command and args.commit) or len(args.add_runs) < 3:
            p.error("--add-runs NAME RUN RUN ... needs both arms' runs, --command and --commit")
        print(f"wrote {gather_runs(args.add_runs[1:], args.add_runs[0], args.command, args.commit)}")
    if args.add_phrase_weights:
        if not (args.command and args.commit) or len(args.add_phrase_weights) < 2:
            p.error("--add-phrase-weights NAME RUN ... needs at least one run, --command and --commit")
        name, *runs = args.add_phrase_weights
        print(f"wrote {gather_phrase_weights(runs, name, args.command, args.commit)}")
    report = run(args.check)
    for doc, specs in report.items():
        for spec in specs:
            print(f"{doc}: {'differs from' if args.check else 'rendered from'} {spec}")
    return 1 if (args.check and report) else 0


if __name__ == "__main__":
    sys.exit(main())
