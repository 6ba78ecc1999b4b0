"""Pure ``nn.Module`` point-cloud models."""

from .sparse_ffnet import SparseFFNet

__all__ = ["SparseFFNet"]
