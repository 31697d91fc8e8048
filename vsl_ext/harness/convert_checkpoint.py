"""``python -m vsl_ext.harness.convert_checkpoint OLD.pth [...] [--output NEW.pth]``: rewrite
``vsl-train`` checkpoints of format version 1 in format version 2, which ``torch.load(weights_only=True)``
reads (:mod:`vsl_ext.harness.checkpoint_io`). Nothing in the files runs while they are converted;
a file whose pickle names globals beyond numpy's array reconstruction is refused. Exit status 0 when
every file was converted, 2 otherwise (each failure named on stderr)."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .checkpoint_io import convert


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vsl_ext.harness.convert_checkpoint",
                                description="Convert vsl-train checkpoints of the earlier format (version 1, a "
                                "pickled numpy random state) to the weights-only format, without running code "
                                "from them.")
    p.add_argument("checkpoint", nargs="+", help="checkpoint.pth / model_best.pth files (rewritten in place)")
    p.add_argument("--output", default=None, help="write the converted file here instead (one checkpoint only)")
    args = p.parse_args(argv)
    if args.output and len(args.checkpoint) > 1:
        p.error("--output takes one checkpoint")
    status = 0
    for path in args.checkpoint:
        try:
            print(f"{path}: converted to {convert(path, args.output)}")
        except (OSError, ValueError) as exc:
            print(f"convert_checkpoint: error: {exc}", file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
