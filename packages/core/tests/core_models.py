"""A small network of core instances shared by the folding and deployment tests."""

from torch import nn

from metamixer.core import (
    DenseOps,
    MetaBlock,
    PointwiseShortcut,
    convnext_mixer,
    ffn,
    ffnified_attention,
)


def build_core_model(ndim, dim=8, kernel=7, small=3):
    """A small network of core instances with every foldable module kind."""
    ops = DenseOps(ndim)
    conv = {1: nn.Conv1d, 2: nn.Conv2d}[ndim]
    blocks = [conv(3, dim, 3, padding=1)]
    for _ in range(2):
        blocks.append(
            MetaBlock(
                dim,
                ffnified_attention(dim, ops=ops, kernel_size=kernel, small_kernel=small),
                layer_scale=0.5,
            )
        )
        blocks.append(
            MetaBlock(
                dim,
                convnext_mixer(
                    dim,
                    ops=ops,
                    kernel_size=kernel,
                    small_kernel=small,
                    conv_norm=True,
                    query_norm=None,
                ),
            )
        )
        blocks.append(MetaBlock(dim, ffn(dim, ops=ops, expansion=2)))
    blocks.append(ops.depthwise(dim, kernel, out_dim=2 * dim, stride=2, small_kernel=small))
    blocks.append(PointwiseShortcut(2 * dim, ndim=ndim))
    blocks.append(ops.pointwise(2 * dim, dim, norm=True))
    return nn.Sequential(*blocks)
