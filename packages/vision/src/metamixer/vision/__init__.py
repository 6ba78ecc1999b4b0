"""metamixer.vision: FFNet-1…4 image classification.

Importing this package registers ``ffnet_1`` … ``ffnet_4`` and ``ffnet_test`` with timm.
"""

from .models import VARIANTS, FFNet
from .weights import convert_official_state_dict, load_official_weights

__all__ = ["VARIANTS", "FFNet", "convert_official_state_dict", "load_official_weights"]
