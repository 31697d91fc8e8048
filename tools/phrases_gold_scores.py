"""Precision and recall of ``vsl_ext.phrases`` on the hand-labelled gold set of tests/test_phrases.py,
written as the results record of docs/phrases.md's table.

    python tools/phrases_gold_scores.py docs/results/phrases_gold.json

Per kind (entities, attributes, triples): micro-averaged precision and recall (3 decimals) and the
floors the test holds them to. The record's environment is what the labels depend on: the spaCy,
English model and inflect versions and the rules version (``vsl_ext.phrases.parser_info``).
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def record_rows(report: dict, floors: dict) -> list:
    """Rows ``kind | precision | recall | test floor (P, R)`` of ``{kind: (p, r)}`` and ``{kind: (p, r)}``."""
    return [[kind, f"{p:.3f}", f"{r:.3f}", "{:.2f}, {:.2f}".format(*floors[kind])] for kind, (p, r) in report.items()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("record", help="the results record (JSON) to write")
    args = p.parse_args(argv)
    sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
    from phrases_gold import FLOORS, GOLD, gold_scores
    from vsl_ext import phrases
    from vsl_ext.harness.results_record import write_record

    report = gold_scores(phrases.parse([g[0] for g in GOLD]))
    info = phrases.parser_info()
    environment = {"spaCy": info["spacy"], "English model": f"{info['model']} {info['model_version']}",
                   "inflect": info["inflect"], "rules version": info["rules"]}
    rows = record_rows(report, FLOORS)
    write_record(args.record, ["kind", "precision", "recall", "test floor (P, R)"], rows,
                 f"python tools/phrases_gold_scores.py {args.record}", environment, align="lrrr",
                 note=f"{len(GOLD)} captions")
    for row in rows:
        print(" | ".join(row))
    print(f"wrote {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
