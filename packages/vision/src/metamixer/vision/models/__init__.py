"""Pure ``nn.Module`` model families (importing registers them with timm)."""

from .ffnet import VARIANTS, FFNet

__all__ = ["VARIANTS", "FFNet"]
