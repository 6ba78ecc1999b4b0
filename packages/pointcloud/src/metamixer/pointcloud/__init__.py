"""metamixer.pointcloud: sparse 3D FFNet (spconv) for point-cloud semantic segmentation."""

from .models import SparseFFNet
from .sparse import SparseDepthwiseConv, SparseStructure, SparseTensor

__all__ = ["SparseDepthwiseConv", "SparseFFNet", "SparseStructure", "SparseTensor"]
