"""The authors' FFNet-1…4 and FFNet-SR in their deployed form, rebuilt for side-by-side timing.

Their released code folds every conv+BN, every RepVGG-style large+small depthwise pair and the
downsample's BN→1×1+identity into single biased convs (a depthwise conv with channel multiplier
stays one grouped conv) and keeps the final BatchNorm.  These modules hold exactly those convs,
written from that description (not from our modules), in forward order, so that
``copy_parameters`` can load the parameters of our folded network into them and the benchmark can
check that both compute the same function before timing them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _dw(dim: int, k: int, out: int | None = None, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(dim, out or dim, k, stride, k // 2, groups=dim)


class AuthorsFFNetDeployed(nn.Module):
    """Stem (3×3 s2, GELU, 3×3 s2) → stages [downsample: 7×7 s2 multiplier conv, 1×1] ×
    blocks [x + ls·dw2(GELU(dw1(fc(x)))), x + ls·fc2(GELU(fc1(dw(x))))] → BN → mean → linear."""

    def __init__(self, depths, dims, *, channel_kernel: int, layer_scale: bool,
                 stem: int = 64, expansion: int = 3, num_classes: int = 1000) -> None:  # fmt: skip
        super().__init__()
        self.stem = nn.ModuleList([nn.Conv2d(3, stem, 3, 2, 1), nn.Conv2d(stem, dims[0], 3, 2, 1)])
        self.layers = nn.ModuleList()
        self.scales = nn.ParameterList()
        for i, (depth, d) in enumerate(zip(depths, dims, strict=True)):
            if i > 0:
                self.layers.append(nn.ModuleList([_dw(dims[i - 1], 7, d, 2), nn.Conv2d(d, d, 1)]))
            k = 3 if i < 2 else 7
            for _ in range(depth):
                token = [nn.Conv2d(d, d, 1), _dw(d, k), _dw(d, k)]
                channel = [_dw(d, channel_kernel), nn.Conv2d(d, expansion * d, 1),
                           nn.Conv2d(expansion * d, d, 1)]  # fmt: skip
                self.layers.append(nn.ModuleList(token + channel))
                if layer_scale:
                    self.scales.append(nn.Parameter(torch.ones(2, d, 1, 1)))
        self.layer_scale = layer_scale
        self.norm = nn.BatchNorm2d(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem[1](F.gelu(self.stem[0](x)))
        block = 0
        for layer in self.layers:
            if len(layer) == 2:
                x = layer[1](layer[0](x))
                continue
            fc, dw1, dw2, dw, fc1, fc2 = layer
            token = dw2(F.gelu(dw1(fc(x))))
            if self.layer_scale:
                token = token * self.scales[block][0]
            x = x + token
            channel = fc2(F.gelu(fc1(dw(x))))
            if self.layer_scale:
                channel = channel * self.scales[block][1]
                block += 1
            x = x + channel
        return self.head(self.norm(x).mean((2, 3)))


class AuthorsFFNetSRDeployed(nn.Module):
    """proj 3×3 → blocks [x + dw(GELU(dw(1×1(x)))), x + 1×1(GELU(1×1(dw(x))))] → 3×3 to 3·s²
    channels + the input repeated s² times → pixel shuffle."""

    def __init__(self, scale: int, dim: int, depth: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.scale = scale
        self.proj = nn.Conv2d(3, dim, 3, 1, 1)
        convs = [(dim, dim, 1), (dim, dim, 3), (dim, dim, 3), (dim, dim, 3), (dim, hidden, 1),
                 (hidden, dim, 1)]  # fmt: skip
        self.blocks = nn.ModuleList(
            nn.ModuleList(_dw(i, k) if k == 3 else nn.Conv2d(i, o, 1) for i, o, k in convs)
            for _ in range(depth)
        )
        self.conv_bef_up = nn.Conv2d(dim, 3 * scale**2, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.proj(x)
        for fc, dw1, dw2, dw, fc1, fc2 in self.blocks:
            h = h + dw2(F.gelu(dw1(fc(h))))
            h = h + fc2(F.gelu(fc1(dw(h))))
        out = self.conv_bef_up(h) + torch.repeat_interleave(x, self.scale**2, dim=1)
        return F.pixel_shuffle(out, self.scale)


def authors_deployed(name: str, **task) -> nn.Module:
    """The authors' deployed network for one of our variant names (sizes from our registry)."""
    from metamixer.core import ARCHITECTURES

    args = ARCHITECTURES[name].args
    if name.startswith("ffnet_sr"):
        return AuthorsFFNetSRDeployed(task["scale"], args["dim"], args["depth"], args["mlp_ratio"])
    return AuthorsFFNetDeployed(
        args["depths"], args["dims"], channel_kernel=args["channel_kernels"],
        layer_scale=args["layer_scale"] is not None, stem=args["stem_dim"],
        expansion=int(args["mlp_ratio"]),
    )  # fmt: skip


@torch.no_grad()
def copy_parameters(ours: nn.Module, theirs: nn.Module) -> None:
    """Load the parameters and buffers of our folded network into theirs, matched in forward
    order; layer-scales (ours per-channel vectors) go to their (2, d, 1, 1) pairs."""
    mine = [t for n, t in ours.state_dict().items() if "layer_scale" not in n]
    scales = [t for n, t in ours.state_dict().items() if "layer_scale" in n]
    targets = [t for n, t in theirs.state_dict().items() if not n.startswith("scales.")]
    if [tuple(t.shape) for t in mine] != [tuple(t.shape) for t in targets]:
        raise ValueError("the two networks' parameters differ in order or shape")
    for src, dst in zip(mine, targets, strict=True):
        dst.copy_(src)
    for i, pair in enumerate(getattr(theirs, "scales", [])):
        pair.copy_(torch.stack([scales[2 * i], scales[2 * i + 1]]).view_as(pair))
