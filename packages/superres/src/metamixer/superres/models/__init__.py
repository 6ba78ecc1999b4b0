"""Pure ``nn.Module`` super-resolution models."""

from .ffnet_sr import VARIANTS, FFNetSR

__all__ = ["VARIANTS", "FFNetSR"]
