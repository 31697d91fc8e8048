"""The training harness: ``vsl-train``, ``vsl-eval``, ``vsl-prepare-images`` and their data and models.

It trains and evaluates image-text retrieval models with the loss library (:mod:`vsl_ext`); the
library never imports it, and ``import vsl_ext`` loads none of it.

* :mod:`.train` (``vsl-train``), :mod:`.config` (``TrainConfig``), :mod:`.trainer` (one run),
  :mod:`.demo` (``vsl-train --demo``; :mod:`.demo_shnet` for ``--model 3shnet``), :mod:`.global_batch`
  (``--global-batch`` under torchrun)
* :mod:`.evaluate` (``vsl-eval``, also ensembles), :mod:`.prepare_images` (``vsl-prepare-images``)
* :mod:`.checkpoint_io` (checkpoints in weights-only types, read with ``torch.load(weights_only=True)``),
  :mod:`.convert_checkpoint` (``python -m vsl_ext.harness.convert_checkpoint``: the earlier format to it)
* :mod:`.data` (SCAN precomp splits, segmentation inputs, vocabulary and WordPiece, synthetic data,
  hand-crafted image features), :mod:`.models` (``vse``, ``sgr``, ``saf``, ``3shnet``)
* :mod:`.time_kernels` (``vsl-time-kernels``, formerly ``vsl-demo``: the fused kernels timed against the reference)
"""
