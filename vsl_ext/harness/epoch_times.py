"""``python -m vsl_ext.harness.epoch_times``: the training time of one epoch of each model on the demo's
synthetic data, written as the results record of README.md's "Models in the harness".

    python -m vsl_ext.harness.epoch_times --record docs/results/epoch_times.json --batches saf=8 sgr=3

Each model trains as ``vsl-train --data DATA --dataset synthetic --model NAME --epochs 1
--embed-size 128 --word-dim 64 --threads 1`` (output under ``--output``); its time is the
``train_seconds`` of the epoch in ``metrics.jsonl`` (the training steps, without validation and
test). A model given ``--batches NAME=K`` (``sgr``, ``saf``: minutes per epoch on a CPU) trains only
its first K batches, and the epoch's time is their time scaled by batches per epoch / K; the
record's table says which. ``DATA`` (default ``runs/demo/data``) is generated first when absent.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, Optional, Sequence, Tuple

MODELS = ("vse", "ssamt", "3shnet", "saf", "sgr")
COLUMNS = ["model", "training time of one epoch", "measured over"]


def train_args(data: str, model: str, output: str) -> list:
    """The ``vsl-train`` options of one model's epoch."""
    return ["--data", data, "--dataset", "synthetic", "--model", model, "--epochs", "1", "--embed-size", "128",
            "--word-dim", "64", "--threads", "1", "--output", output, "--overwrite", "--no-progress",
            "--no-tensorboard"]


def time_epoch(args: Sequence[str], batches: Optional[int] = None) -> Tuple[float, int, int]:
    """Train one epoch as ``vsl-train args`` would, or only its first ``batches`` steps; returns
    (training seconds of the steps, steps timed, steps per epoch)."""
    from .config import config_from_args
    from .train import build_parser
    from .trainer import Trainer

    cfg = config_from_args(build_parser().parse_args(list(args)))
    trainer = Trainer(cfg, lambda msg: None)
    per_epoch = len(trainer.train_data.epoch_batches(cfg.batch_size, cfg.seed, 0))
    if batches is None or batches >= per_epoch:
        trainer.run()
        with open(os.path.join(cfg.output, "metrics.jsonl"), encoding="utf-8") as f:
            first = json.loads(f.readline())
        return first["train_seconds"], per_epoch, per_epoch
    try:
        trainer.run(crash_after_steps=batches)      # stops after `batches` steps, saving nothing
    except KeyboardInterrupt:
        if trainer.running["n"] != batches:          # a real Ctrl-C
            raise
    return trainer.running["time"], batches, per_epoch


def row(model: str, seconds: float, timed: int, per_epoch: int) -> list:
    """The record's row: the epoch's time (3 significant digits) and what it was measured over."""
    epoch = seconds * per_epoch / timed
    how = (f"the whole epoch ({per_epoch} batches)" if timed == per_epoch
           else f"the first {timed} of {per_epoch} batches ({seconds:.3g} s), × {per_epoch}/{timed}")
    return [f"`{model}`", f"{epoch:.3g} s", how]


def parse_batches(items: Sequence[str]) -> Dict[str, int]:
    """``["sgr=3", ...]`` -> ``{"sgr": 3}``; ValueError names a malformed item."""
    out = {}
    for item in items:
        name, _, k = item.partition("=")
        if name not in MODELS or not k.isdigit() or int(k) < 1:
            raise ValueError(f"--batches {item!r}: expected MODEL=K with MODEL one of {', '.join(MODELS)}, K >= 1")
        out[name] = int(k)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vsl_ext.harness.epoch_times", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.path.join("runs", "demo", "data"))
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--batches", nargs="*", default=[], metavar="MODEL=K",
                   help="time only the first K batches of MODEL's epoch and scale to the epoch")
    p.add_argument("--output", default=os.path.join("runs", "epoch_times"), help="folder of the models' runs")
    p.add_argument("--record", required=True, help="the results record (JSON) to write")
    args = p.parse_args(argv)
    try:
        batches = parse_batches(args.batches)
    except ValueError as exc:
        p.error(str(exc))
    from .results_record import current_commit, environment, load_range, write_record

    commit = current_commit()       # the code measured, before anyone edits the checkout

    if not os.path.isfile(os.path.join(args.data, "train_caps.txt")):
        from .data.synthetic import SyntheticConfig, generate

        generate(args.data, SyntheticConfig())
    load_before = os.getloadavg()[0]
    rows = []
    for model in args.models:
        seconds, timed, per_epoch = time_epoch(train_args(args.data, model, os.path.join(args.output, model)),
                                               batches.get(model))
        rows.append(row(model, seconds, timed, per_epoch))
        print(" | ".join(rows[-1]), flush=True)
    shown = " ".join(sys.argv[1:] if argv is None else argv)
    write_record(args.record, COLUMNS, rows, f"python -m vsl_ext.harness.epoch_times {shown}",
                 environment(1, load_range(load_before, os.getloadavg()[0])), align="lrl", commit=commit)
    print(f"wrote {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
