"""vsl_ext: fast, exact Visual Semantic Loss (Zhang et al., ICME 2023) for image-text retrieval.

>>> import torch, vsl_ext
>>> S = torch.randn(128, 128, requires_grad=True)   # image-text similarities of a batch
>>> C = torch.rand(128, 128)                         # semantic similarities of its images
>>> loss = vsl_ext.vsl_loss(S, C)                    # scalar; loss.backward() fills S.grad
"""
from . import reference
from ._native import build_info
from ._version import __version__
from .caption_index import CaptionIndex
from .criterion import SmoothAPLoss, VSLCriterion, VSLLoss
from .daa import daa_loss
from .ops.sigmoid_rank import sigmoid_rank
from .ops.smooth_ap_loss import smooth_ap_loss
from .ops.vsl_loss import vsl_loss

__all__ = ["__version__", "build_info", "reference", "sigmoid_rank", "vsl_loss", "VSLLoss", "VSLCriterion",
           "CaptionIndex", "smooth_ap_loss", "SmoothAPLoss", "daa_loss"]
