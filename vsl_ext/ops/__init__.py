"""The ops, one module each: public function -> registered op (checks, fake, autograd) -> per-device
kernel (:mod:`vsl_ext.kernels`) -> native call (``vsl_ext._C``).

* :mod:`vsl_ext.ops.sigmoid_rank`: ``vsl_ext.sigmoid_rank``; ``torch.ops.vsl_ext.sigmoid_rank`` and
  ``torch.ops.vsl_ext.sigmoid_rank_backward``.
* :mod:`vsl_ext.ops.vsl_loss`: ``vsl_ext.vsl_loss``; ``torch.ops.vsl_ext.vsl_loss_ratio_sum``.
* :mod:`vsl_ext.ops.sigmoid_rank_among`: ``vsl_ext.sigmoid_rank(..., among=mask)``;
  ``torch.ops.vsl_ext.sigmoid_rank_among`` and ``torch.ops.vsl_ext.sigmoid_rank_among_backward``.
* :mod:`vsl_ext.ops.smooth_ap_loss`: ``vsl_ext.smooth_ap_loss``; ``torch.ops.vsl_ext.smooth_ap_loss``.

Every registered op checks its own inputs (:mod:`vsl_ext.ops._checks`) before any native call, and
its fake kernel checks the same with ``torch._check``. The ops take tau as a 0-d float64 CPU tensor
and matrices as (rows, cols) or (..., rows, cols) batches, and have batching rules for
``torch.func.vmap``; the public functions differentiate through ``autograd.Function``s that
``torch.func`` accepts (docs/transforms.md).
"""
