"""metamixer.vision: FFNet-1…4 image classification, semantic segmentation (UperNet / FPN on any
FFNet, the authors' FFNet-seg) and detection (Mask R-CNN on an FFNet + FPN).

Importing this package registers ``ffnet_1`` … ``ffnet_4`` and ``ffnet_test`` with timm and every
classification and segmentation variant with ``metamixer.core.ARCHITECTURES``.
"""

from metamixer.vision.models import VARIANTS, FFNet
from metamixer.vision.models.ffnet_weights import convert_official_state_dict, load_official_weights
from metamixer.vision.segmentation import models as _segmentation_networks  # noqa: F401  (UperNet / FPN)
from metamixer.vision.segmentation.ffnet_seg import FFNetSeg
from metamixer.vision.segmentation.ffnet_seg_weights import load_official_ffnet_seg

__all__ = [
    "VARIANTS",
    "FFNet",
    "FFNetSeg",
    "convert_official_state_dict",
    "load_official_ffnet_seg",
    "load_official_weights",
]
