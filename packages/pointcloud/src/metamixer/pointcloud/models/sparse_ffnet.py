"""Sparse 3D FFNet: a U-Net of FFNet blocks on voxels, with serialized (z-order) pooling.

stem (5³ submanifold conv 6 → 32, BN, GELU) → encoder stages (2, 2, 2, 6, 2) × (32 … 512), each
after a stride-2 pooling of 2³ cells (linear, max, BN, GELU) → decoder stages (2, 2, 2, 2) ×
(256 … 64) after unpooling + skip → linear head.  A block is LayerNorm + FFNified attention (linear
query → sparse conv k3 + BN → GELU → sparse conv k3 + BN) and LayerNorm + ConvNeXt-style channel
mixer (sparse conv k3 + BN → FFN ×4), each residual with per-scene drop-path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from metamixer.core import (
    MetaBlock,
    MixerSettings,
    register_architecture,
)

from ..ops import SceneDropPath, SparseOps, batch_norm
from ..sparse import SparseFullConv, SparseStructure, SparseTensor

try:
    from torch_scatter import segment_csr
except ImportError:  # pragma: no cover - exercised where torch-scatter is absent
    segment_csr = None


def z_order(coords: Tensor, bits: int = 16) -> Tensor:
    """Morton code of non-negative ``(N, 3)`` integer coordinates (x, y, z bits interleaved)."""
    code = torch.zeros(len(coords), dtype=torch.long, device=coords.device)
    c = coords.long()
    for b in range(bits):
        for axis in range(3):
            code |= ((c[:, axis] >> b) & 1) << (3 * b + 2 - axis)
    return code


def serialize(structure: SparseStructure) -> Tensor:
    """Order of the voxels along (scene, z-order curve)."""
    return torch.argsort(structure.batch.long() << 48 | z_order(structure.coords))


def segment_max(values: Tensor, cluster: Tensor, num: int) -> Tensor:
    """Max of ``values`` rows per cluster id (torch-scatter when installed, else native)."""
    if segment_csr is not None:
        order = torch.argsort(cluster)
        counts = torch.bincount(cluster, minlength=num)
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        return segment_csr(values[order], ptr, reduce="max")
    out = values.new_full((num, values.shape[1]), float("-inf"))
    return out.scatter_reduce(0, cluster[:, None].expand_as(values), values, "amax")


def pool_structure(structure: SparseStructure) -> tuple[SparseStructure, Tensor]:
    """Stride-2 pooling of 2³ cells: the coarse structure (z-order sorted) and each fine voxel's
    coarse index."""
    coarse = structure.coords >> 1
    key = structure.batch.long() << 48 | z_order(coarse)
    unique, cluster = torch.unique(key, sorted=True, return_inverse=True)
    head = torch.full((len(unique),), len(key), dtype=torch.long, device=key.device)
    head = head.scatter_reduce(0, cluster, torch.arange(len(key), device=key.device), "amin")
    return SparseStructure(coarse[head], structure.batch[head], structure.batch_size), cluster


class Pool(nn.Module):
    """Linear projection, max over each 2³ cell, BN, GELU."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj, self.norm, self.act = nn.Linear(in_dim, out_dim), batch_norm(out_dim), nn.GELU()

    def forward(self, x: SparseTensor, coarse: SparseStructure, cluster: Tensor) -> SparseTensor:
        pooled = segment_max(self.proj(x.features), cluster, coarse.num_voxels)
        return self.act(self.norm(SparseTensor(pooled, coarse)))


class Unpool(nn.Module):
    """Project coarse and skip features (linear, BN, GELU each) and add them on the fine voxels."""

    def __init__(self, in_dim: int, skip_dim: int, out_dim: int) -> None:
        super().__init__()

        def proj(d: int) -> nn.Sequential:
            return nn.Sequential(nn.Linear(d, out_dim), batch_norm(out_dim), nn.GELU())

        self.proj, self.proj_skip = proj(in_dim), proj(skip_dim)

    def forward(self, coarse: SparseTensor, skip: SparseTensor, cluster: Tensor) -> SparseTensor:
        return self.proj_skip(skip) + self.proj(coarse.features)[cluster]


class Stage(nn.Sequential):
    """FFNet blocks on one resolution level (``SparseTensor`` in and out).

    ``mixers(ops) -> (token, channel)`` builds one block's two mixers on the sparse ops.
    """

    def __init__(
        self,
        dim: int,
        drop_paths: Sequence[float],
        mixers: Callable[[SparseOps], tuple[nn.Module, nn.Module]],
        *,
        full_convs: bool,
    ) -> None:
        ops = SparseOps(full=full_convs)
        blocks = []
        for p in drop_paths:
            for mixer in mixers(ops):
                blocks.append(
                    MetaBlock(
                        dim,
                        mixer,
                        norm=nn.LayerNorm(dim),
                        drop_path=SceneDropPath(p),
                        channel_axis=-1,
                    )
                )
        super().__init__(*blocks)


class SparseFFNet(nn.Module):
    """Semantic segmentation of voxelised scenes.

    ``forward(features (N, in_channels), coords (N, 3) int ≥ 0, batch (N,) scene index)`` returns
    per-voxel logits ``(N, num_classes)`` in the input order.

    Args:
        in_channels: input features per voxel (colour + normal = 6).
        num_classes: output classes.
        enc_depths, enc_channels: encoder blocks and widths per level.
        dec_depths, dec_channels: decoder blocks and widths per level (finest first).
        mixers: the mixers of each stage (``metamixer.core.MixerSettings``, given as flat
            ``arch_args`` keys), in the order the data passes: the encoder stages (finest first),
            then the decoder stages (coarsest first); kernels are sparse conv kernels;
            "attention" runs over each scene's voxels of the level and is refused above
            ``ops.MAX_SCENE_TOKENS`` voxels.
        drop_path_rate: stochastic depth (per scene), rising linearly to this value.
        full_convs: the authors' full C → C submanifold convs instead of depthwise ones.
    """

    def __init__(
        self,
        in_channels: int = 6,
        num_classes: int = 20,
        *,
        enc_depths: Sequence[int] = (2, 2, 2, 6, 2),
        enc_channels: Sequence[int] = (32, 64, 128, 256, 512),
        dec_depths: Sequence[int] = (2, 2, 2, 2),
        dec_channels: Sequence[int] = (64, 64, 128, 256),
        mixers: MixerSettings | None = None,
        drop_path_rate: float = 0.3,
        full_convs: bool = False,
    ) -> None:
        super().__init__()
        levels = len(enc_depths)
        if not (len(enc_channels) == levels and len(dec_depths) == len(dec_channels) == levels - 1):
            raise ValueError(
                "need one encoder channel per encoder stage and one decoder stage per pooling "
                f"(got enc {len(enc_depths)}/{len(enc_channels)}, dec {len(dec_depths)}/{len(dec_channels)})"
            )
        self.in_channels, self.num_classes = in_channels, num_classes
        self.stem = SparseFullConv(in_channels, enc_channels[0], 5, bias=False)
        self.stem_norm = nn.Sequential(batch_norm(enc_channels[0]), nn.GELU())
        stages = 2 * levels - 1  # encoder 0 … L-1, then decoder L-2 … 0
        settings = (mixers or MixerSettings(token_kernels=3)).stages(stages)

        def block_mixers(i: int, dim: int) -> Callable[[SparseOps], tuple[nn.Module, nn.Module]]:
            where = f"stage {i + 1} ({'encoder' if i < levels else 'decoder'})"

            def build(ops: SparseOps) -> tuple[nn.Module, nn.Module]:
                stage = settings[i]
                return (stage.token(dim, ops, conv_norm=True, where=where),
                        stage.channel(dim, ops, conv_norm=True, where=where))  # fmt: skip

            return build

        enc_rates = torch.linspace(0, drop_path_rate, sum(enc_depths)).tolist()
        dec_rates = torch.linspace(0, drop_path_rate, sum(dec_depths)).tolist()
        self.pools = nn.ModuleList(
            Pool(enc_channels[s - 1], enc_channels[s]) for s in range(1, levels)
        )
        self.encoder = nn.ModuleList(
            Stage(
                enc_channels[s],
                enc_rates[sum(enc_depths[:s]) : sum(enc_depths[: s + 1])],
                block_mixers(s, enc_channels[s]),
                full_convs=full_convs,
            )
            for s in range(levels)
        )
        widths = [*dec_channels, enc_channels[-1]]
        self.unpools = nn.ModuleList(
            Unpool(widths[s + 1], enc_channels[s], widths[s]) for s in range(levels - 1)
        )
        self.decoder = nn.ModuleList(
            Stage(
                widths[s],
                dec_rates[sum(dec_depths[:s]) : sum(dec_depths[: s + 1])][::-1],
                block_mixers(2 * levels - 2 - s, widths[s]),
                full_convs=full_convs,
            )
            for s in range(levels - 1)
        )
        self.head = nn.Linear(widths[0], num_classes)
        self.apply(_init)

    def check_input(self, features: Tensor, coords: Tensor, batch: Tensor) -> None:
        if features.dim() != 2 or features.shape[1] != self.in_channels:
            raise ValueError(
                f"expected features (N, {self.in_channels}), got {tuple(features.shape)}"
            )
        if not (len(features) == len(coords) == len(batch)):
            raise ValueError(
                f"features ({len(features)}), coords ({len(coords)}) and batch ({len(batch)}) "
                "must have one row per voxel"
            )
        if not torch.isfinite(features).all():
            raise ValueError("features contain NaN or inf; clean the point cloud first")

    def forward(self, features: Tensor, coords: Tensor, batch: Tensor) -> Tensor:
        self.check_input(features, coords, batch)
        order = serialize(SparseStructure(coords, batch, int(batch.max()) + 1))
        fine = SparseStructure(coords[order], batch[order], int(batch.max()) + 1)
        x = self.stem_norm(self.stem(SparseTensor(features[order], fine)))
        skips, clusters = [], []
        for s, stage in enumerate(self.encoder):
            if s > 0:
                coarse, cluster = pool_structure(x.structure)
                x = self.pools[s - 1](x, coarse, cluster)
                clusters.append(cluster)
            x = stage(x)
            skips.append(x)
        for s in reversed(range(len(self.decoder))):
            x = self.decoder[s](self.unpools[s](x, skips[s], clusters[s]))
        logits = self.head(x.features)
        return torch.empty_like(logits).index_copy_(0, order, logits)  # back to input order


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


#: Every architectural argument of each variant, spelled out once.
SPARSE_FFNET = dict(
    enc_depths=(2, 2, 2, 6, 2), enc_channels=(32, 64, 128, 256, 512), dec_depths=(2, 2, 2, 2),
    dec_channels=(64, 64, 128, 256), token_mixers="ffnified", token_acts=None,
    channel_mixers="convnext", channel_acts=None, token_kernels=3, token_value_kernels=None,
    channel_kernels=3,
    mlp_ratio=4.0, drop_path_rate=0.3,
)  # fmt: skip
VARIANTS: dict[str, dict[str, Any]] = {
    # ours: true depthwise sparse convs (11.1 M parameters fused)
    "sparse_ffnet": dict(SPARSE_FFNET, full_convs=False),
    # the authors' network: full C → C submanifold convs in the blocks (103.2 M)
    "sparse_ffnet_full": dict(SPARSE_FFNET, full_convs=True),
    # a hybrid: self-attention per scene in the two coarsest encoder stages (few voxels there)
    "sparse_ffnet_hybrid": dict(
        SPARSE_FFNET,
        full_convs=False,
        token_mixers=("ffnified",) * 3 + ("attention",) * 2 + ("ffnified",) * 4,
        token_acts=("gelu",) * 3 + ("softmax",) * 2 + ("gelu",) * 4,
    ),
    "sparse_ffnet_test": dict(
        SPARSE_FFNET,
        enc_depths=(1, 1, 1),
        enc_channels=(8, 16, 32),
        dec_depths=(1, 1),
        dec_channels=(8, 16),
        full_convs=False,
    ),
}


def _example(network: nn.Module) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    coords = torch.unique(torch.randint(0, 48, (600, 3), generator=gen), dim=0)  # 3³ at 1/16
    batch = (torch.arange(len(coords)) >= len(coords) // 2).long()
    channels = cast(SparseFFNet, network).in_channels
    return torch.randn(len(coords), channels, generator=gen), coords, batch


for _name, _args in VARIANTS.items():
    register_architecture(
        _name, SparseFFNet, _args, task_args=("in_channels", "num_classes"), example=_example,
        test_task={"in_channels": 6, "num_classes": 4},
    )  # fmt: skip
