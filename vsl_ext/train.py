"""``python -m vsl_ext.train`` and ``torchrun -m vsl_ext.train``: the ``vsl-train`` command
(:mod:`vsl_ext.harness.train`)."""
import sys

from .harness.train import main

if __name__ == "__main__":
    sys.exit(main())
