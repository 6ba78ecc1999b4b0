"""metamixer.superres: FFNet-SR image super-resolution (basicsr-compatible, Lightning training).

Importing this package registers ``FFNetSR`` in basicsr's ``ARCH_REGISTRY``, so the authors'
option files (``network_g: {type: FFNetSR, scale, dim, depth, expansion_ratio, norm}``) build it.
"""

from basicsr.utils.registry import ARCH_REGISTRY

from .models import VARIANTS, FFNetSR
from .models.ffnet_sr import basicsr_ffnet_sr
from .weights import convert_official_state_dict, load_sr_weights

if "FFNetSR" not in ARCH_REGISTRY:
    ARCH_REGISTRY.register(basicsr_ffnet_sr)

__all__ = ["VARIANTS", "FFNetSR", "convert_official_state_dict", "load_sr_weights"]
