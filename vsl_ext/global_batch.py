"""Former home of :func:`vsl_ext.distributed.gather_rows` (kept so existing imports work)."""
from .distributed import gather_rows

__all__ = ["gather_rows"]
