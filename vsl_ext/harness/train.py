"""vsl-train: train an image-text retrieval model with triplet loss + beta * VSL.

    vsl-train --data DATA --dataset f30k --model sgr            # triplet + 10 * VSL (the paper)
    vsl-train --data DATA --dataset f30k --model sgr --no-vsl   # triplet-only baseline
    vsl-train --output runs/x --resume                          # continue an interrupted run (Ctrl-C saves first)
    vsl-train --demo                                            # synthetic demo, baseline vs VSL, CPU
    vsl-train --demo --model ssamt                              # the demo with SSAMT in both arms
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Optional, Sequence

from .config import TrainConfig, add_config_options, config_from_args
from .demo import run_demo
from .demo_variants import DEMO_MODELS, default_output, demo_overrides
from .trainer import Trainer, TrainingInterrupted, train

__all__ = ["TrainConfig", "Trainer", "build_parser", "main", "train"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vsl-train", description=__doc__.split("\n\n")[0])
    add_config_options(p)
    g = p.add_argument_group("demo")
    g.add_argument("--demo", action="store_true", help="synthetic Fig.-1 data: train vse baseline and vse+VSL "
                   "over several seeds on CPU and print a side-by-side R@K table (--model, --semantic, "
                   "--phrase-level and --phrase-weight change the recipe of both arms; --model 3shnet also "
                   "trains the vse arms beside it; output runs/demo[_<variant>], e.g. runs/demo_ssamt; an earlier demo "
                   "there is kept unless --overwrite)")
    g.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="demo training seeds (default 0 1 2)")
    g.add_argument("--demo-epochs", type=int, default=None, help="override the demo's epoch count (15)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.demo:
        model = args.model or "vse"
        if model not in DEMO_MODELS:
            parser.error(f"--demo trains --model {' or '.join(DEMO_MODELS)}, not {model}")
        overrides = demo_overrides(args)
        output = args.output or os.path.join("runs", default_output(overrides))
        try:
            run_demo(output=output, seeds=args.seeds, epochs=args.demo_epochs, device=args.device or "auto",
                     progress=args.progress is not False, threads=1 if args.threads is None else args.threads,
                     overrides=overrides, overwrite=bool(args.overwrite))
        except FileExistsError as exc:
            print(f"vsl-train: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"vsl-train: interrupted; a demo does not resume: run it again with --overwrite (it replaces "
                  f"{output})", file=sys.stderr)
            return 130
        return 0
    if args.data is None and not args.resume:
        parser.error("--data DIR is required (or --demo, or --resume with --output)")
    if args.resume and args.output is None:
        parser.error("--resume needs --output RUN_DIR (the folder holding checkpoint.pth)")
    cfg = config_from_args(args)
    try:
        trainer = Trainer(cfg)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"vsl-train: error: {exc}", file=sys.stderr)
        return 2
    try:
        trainer.run()
    except KeyboardInterrupt as exc:
        print(interrupted_message(cfg.output, exc), file=sys.stderr)
        return 130
    return 0


def interrupted_message(output: str, exc: BaseException) -> str:
    """The one line printed when Ctrl-C stops a run: where its checkpoint is and how to continue."""
    ckpt = os.path.join(output, "checkpoint.pth")
    resume = f"vsl-train --output {shlex.quote(output)} --resume"
    if isinstance(exc, TrainingInterrupted):
        return (f"vsl-train: interrupted after {exc.epochs_done} epochs + {exc.step} steps; saved to {ckpt}; "
                f"continue with: {resume}")
    if os.path.isfile(ckpt):
        return f"vsl-train: interrupted; the last checkpoint is {ckpt}; continue from it with: {resume}"
    return f"vsl-train: interrupted before the first checkpoint of {output}; start again with --overwrite"


if __name__ == "__main__":
    sys.exit(main())
