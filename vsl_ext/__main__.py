"""``python -m vsl_ext``: the installation self-check (:mod:`vsl_ext.self_check`)."""
import sys

from .self_check import main

sys.exit(main())
