"""The authors' FFNet, re-derived from their checkpoint layout: key generator and functional forward.

Written from the architecture description (not from our modules), so that loading their layout
into our model can be checked against an independent computation.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor

BN_EPS = 1e-5


def official_layout(
    depths, dims, *, channel_kernel, layer_scale, stem=64, expansion=3, num_classes=1000
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the authors' training-time checkpoint for one variant."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(p, n):
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[p + name] = (n,)
        shapes[p + "num_batches_tracked"] = ()

    def conv_bn(p, out, inp, k):
        shapes[p + "c.weight"] = (out, inp, k, k)
        bn(p + "bn.", out)

    def rep(p, out, k):
        conv_bn(p + "conv.", out, 1, k)
        conv_bn(p + "conv1.", out, 1, k // 2)

    conv_bn("patch_embed.0.", stem, 3, 3)
    conv_bn("patch_embed.2.", dims[0], stem, 3)
    for i, (depth, d) in enumerate(zip(depths, dims, strict=True)):
        first = 0
        if i > 0:
            rep(f"stages.{i}.0.proj.0.", d, 7)
            bn(f"stages.{i}.0.proj.1.conv.bn.", d)
            shapes[f"stages.{i}.0.proj.1.conv.c.weight"] = (d, d, 1, 1)
            first = 1
        token_kernel = 3 if i < 2 else 7
        for b in range(first, first + depth):
            p = f"stages.{i}.{b}."
            t = p + "token_mixer.0.main."
            conv_bn(t + "fc.", d, d, 1)
            for conv in ("conv1.", "conv2."):
                if token_kernel == 7:
                    rep(t + conv, d, 7)
                else:
                    shapes[t + conv + "weight"] = (d, 1, 3, 3)
                    shapes[t + conv + "bias"] = (d,)
            c = p + "channel_mixer.main."
            if channel_kernel == 7:
                rep(c + "conv.", d, 7)
            else:
                conv_bn(c + "conv.", d, 1, channel_kernel)
            shapes[c + "fc1.weight"], shapes[c + "fc1.bias"] = (
                (expansion * d, d, 1, 1),
                (expansion * d,),
            )
            shapes[c + "fc2.weight"], shapes[c + "fc2.bias"] = (d, expansion * d, 1, 1), (d,)
            if layer_scale:
                shapes[p + "token_mixer.0.layer_scale"] = (d, 1, 1)
                shapes[p + "channel_mixer.layer_scale"] = (d, 1, 1)
    bn("norm.", dims[-1])
    shapes["head.weight"], shapes["head.bias"] = (num_classes, dims[-1]), (num_classes,)
    return shapes


def read_tsv(path) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or line.startswith("key\t") or not line.strip():
            continue
        key, shape = line.split("\t")
        shapes[key] = tuple(int(s) for s in re.findall(r"\d+", shape))
    return shapes


def random_checkpoint(shapes, seed=0) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=gen) + 0.5
        elif key.endswith("bn.weight") or key == "norm.weight":
            sd[key] = torch.randn(shape, generator=gen) * 0.2 + 1.0
        elif key.endswith("layer_scale"):
            sd[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
            sd[key] = torch.randn(shape, generator=gen) * (
                0.5 / fan_in**0.5 if len(shape) > 1 else 0.1
            )
    return sd


def _bn(sd, p, x):
    return F.batch_norm(
        x,
        sd[p + "running_mean"],
        sd[p + "running_var"],
        sd[p + "weight"],
        sd[p + "bias"],
        False,
        0.0,
        BN_EPS,
    )


def _conv_bn(sd, p, x, stride=1, groups=1):
    w = sd[p + "c.weight"]
    return _bn(sd, p + "bn.", F.conv2d(x, w, None, stride, w.shape[-1] // 2, groups=groups))


def _depthwise(sd, p, x, stride=1):
    groups = x.shape[1]
    if p + "weight" in sd:
        w = sd[p + "weight"]
        return F.conv2d(x, w, sd[p + "bias"], stride, w.shape[-1] // 2, groups=groups)
    if p + "c.weight" in sd:
        return _conv_bn(sd, p, x, stride, groups)
    return _conv_bn(sd, p + "conv.", x, stride, groups) + _conv_bn(
        sd, p + "conv1.", x, stride, groups
    )


def _residual(sd, p, x, out):
    scale = sd.get(p + "layer_scale")
    return x + (out * scale if scale is not None else out)


def official_forward(sd: dict[str, Tensor], x: Tensor) -> Tensor:
    """Eval-mode logits of the authors' FFNet computed directly from their state dict."""
    x = _conv_bn(sd, "patch_embed.2.", F.gelu(_conv_bn(sd, "patch_embed.0.", x, 2)), 2)
    stages = sorted({int(k.split(".")[1]) for k in sd if k.startswith("stages.")})
    for i in stages:
        entries = sorted({int(k.split(".")[2]) for k in sd if k.startswith(f"stages.{i}.")})
        for j in entries:
            p = f"stages.{i}.{j}."
            if p + "proj.0.conv.c.weight" in sd:
                x = _depthwise(sd, p + "proj.0.", x, 2)
                bn_x = _bn(sd, p + "proj.1.conv.bn.", x)
                x = x + F.conv2d(bn_x, sd[p + "proj.1.conv.c.weight"])
                continue
            t = p + "token_mixer.0.main."
            q = _conv_bn(sd, t + "fc.", x)
            out = _depthwise(sd, t + "conv2.", F.gelu(_depthwise(sd, t + "conv1.", q)))
            x = _residual(sd, p + "token_mixer.0.", x, out)
            c = p + "channel_mixer.main."
            h = F.gelu(
                F.conv2d(_depthwise(sd, c + "conv.", x), sd[c + "fc1.weight"], sd[c + "fc1.bias"])
            )
            out = F.conv2d(h, sd[c + "fc2.weight"], sd[c + "fc2.bias"])
            x = _residual(sd, p + "channel_mixer.", x, out)
    x = _bn(sd, "norm.", x).mean((2, 3))
    return F.linear(x, sd["head.weight"], sd["head.bias"])


def layout_of(name: str) -> dict[str, tuple[int, ...]]:
    """The authors' layout for one of our variants (its sizes from ``VARIANTS``)."""
    from metamixer.vision import VARIANTS

    v = VARIANTS[name]
    return official_layout(
        v["depths"],
        v["dims"],
        channel_kernel=v["channel_kernels"],
        layer_scale=v.get("layer_scale") is not None,
        stem=v.get("stem_dim", 64),
    )
