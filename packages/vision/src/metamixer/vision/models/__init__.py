"""Pure ``nn.Module`` model families (importing registers them with timm)."""

from . import segmentation as _segmentation  # noqa: F401  (UperNet / FPN variants)
from .ffnet import VARIANTS, FFNet
from .ffnet_seg import FFNetSeg
from .poolformer import PoolFormer

__all__ = ["VARIANTS", "FFNet", "FFNetSeg", "PoolFormer"]
