"""Whether a public function may run its kernels without the dispatcher (the eager fast path).

A registered op costs about 60 us of dispatch and autograd bookkeeping per forward and backward on
top of its kernels, which at small n is most of a training step's loss (n = 8: the kernels take 10 us
of a 210 us call). In plain eager code the public functions therefore call the same kernels through
a ``torch.autograd.Function`` and skip the dispatcher; anything that needs the registered op takes
it: torch.compile / torch.export tracing, fake or meta tensors, tensor subclasses (which may
redispatch), functorch transforms (vmap, grad), torch function or dispatch modes (e.g. FlopCounter,
the benchmarks' memory tracker). Both paths call the same per-device kernel with the same checked
arguments, so they give the same numbers to rounding (test_eager_path_and_registered_op_agree in
tests/test_vsl_loss.py).
"""
import torch
from torch import Tensor

_C = torch._C
# Private torch APIs (present from torch 2.0 on); without them the fast path is never taken.
_FUNCTORCH_ACTIVE = getattr(_C, "_are_functorch_transforms_active", None)
_FUNCTION_MODES = getattr(_C, "_len_torch_function_stack", None)
_DISPATCH_MODES = getattr(_C, "_len_torch_dispatch_stack", None)
_AVAILABLE = None not in (_FUNCTORCH_ACTIVE, _FUNCTION_MODES, _DISPATCH_MODES)


def plain(*tensors: Tensor) -> bool:
    """True when ``tensors`` (plain CPU or CUDA tensors) may skip the registered op."""
    if not _AVAILABLE or torch.compiler.is_compiling():
        return False
    for t in tensors:
        if type(t) is not Tensor or not (t.is_cpu or t.is_cuda):
            return False
    return not (_FUNCTORCH_ACTIVE() or _FUNCTION_MODES() or _DISPATCH_MODES())
