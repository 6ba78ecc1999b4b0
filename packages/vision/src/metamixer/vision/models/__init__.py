"""Pure ``nn.Module`` backbone families shared by every vision task (importing registers them
with timm and ``metamixer.core.ARCHITECTURES``); each family's weight converter sits beside it."""

from metamixer.vision.models.ffnet import VARIANTS, FFNet
from metamixer.vision.models.poolformer import PoolFormer

__all__ = ["VARIANTS", "FFNet", "PoolFormer"]
