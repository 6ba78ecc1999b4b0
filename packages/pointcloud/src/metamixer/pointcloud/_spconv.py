"""The one place that imports spconv and makes its backward pass work without a GPU.

spconv 2.3's CPU build calls ``torch.cuda.current_stream()`` in the backward of its convolutions
and crashes on machines without CUDA; its stream is irrelevant on CPU, so it is replaced by 0.
With a GPU (``spconv-cu120``) nothing is changed.
"""

from __future__ import annotations

import spconv.pytorch as spconv
import spconv.pytorch.ops as _ops
import torch

if not torch.cuda.is_available():
    _ops.get_current_stream = lambda: 0

__all__ = ["spconv"]
