"""The authors' FFNet-seg, re-derived from their checkpoint layout: key generator and functional forward.

Written from the architecture description (mmseg ``EncoderDecoder`` with backbone ``ffnet_seg`` and
decode head ``FFNetHead``), not from our modules, so that loading their layout into our
``FFNetSeg`` can be checked against an independent computation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from ffnet_official_reference import random_checkpoint  # noqa: F401  (re-exported for the tests)
from torch import Tensor

BN_EPS = 1e-5


def _bn_keys(shapes, p, n):
    for name in ("weight", "bias", "running_mean", "running_var"):
        shapes[p + name] = (n,)
    shapes[p + "num_batches_tracked"] = ()


def _conv_bn_keys(shapes, p, out, inp, kh, kw=None):
    shapes[p + "c.weight"] = (out, inp, kh, kh if kw is None else kw)
    _bn_keys(shapes, p + "bn.", out)


def _repvggdw_keys(shapes, p, d, k):
    """Their RepVGGDW(k): k×k, (k-4)×(k-4) when k > 3, 1×k and k×1 depthwise conv+BN branches."""
    _conv_bn_keys(shapes, p + "conv1.", d, 1, k)
    if k > 3:
        _conv_bn_keys(shapes, p + "conv2.", d, 1, k - 4)
    _conv_bn_keys(shapes, p + "strip_conv1.", d, 1, 1, k)
    _conv_bn_keys(shapes, p + "strip_conv2.", d, 1, k, 1)


def _token_mixer_keys(shapes, p, d, k):
    _conv_bn_keys(shapes, p + "fc.", d, d, 1)
    _repvggdw_keys(shapes, p + "conv1.", d, k)
    _repvggdw_keys(shapes, p + "conv2.", d, k)


def _fc_keys(shapes, p, d, hidden):
    shapes[p + "fc1.weight"], shapes[p + "fc1.bias"] = (hidden, d, 1, 1), (hidden,)
    shapes[p + "fc2.weight"], shapes[p + "fc2.bias"] = (d, hidden, 1, 1), (d,)


def backbone_layout(
    depths, dims, *, stem, token_kernels, channel_kernel, expansion, classifier=False, in_chans=3
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of their ``ffnet_seg`` backbone; ``classifier`` adds the ImageNet head of
    ``ffnet_seg.pth.tar`` (``head1``: conv+BN to 1024; ``head2``: Linear, LayerNorm, Linear)."""
    shapes: dict[str, tuple[int, ...]] = {}
    _conv_bn_keys(shapes, "patch_embed.0.", stem, in_chans, 3)
    _conv_bn_keys(shapes, "patch_embed.2.", stem, stem, 3)
    _conv_bn_keys(shapes, "patch_embed.4.", dims[0], stem, 3)
    _conv_bn_keys(shapes, "patch_embed.5.", dims[0], dims[0], 3)
    for i, (depth, d) in enumerate(zip(depths, dims, strict=True)):
        first = 0
        if i > 0:
            _conv_bn_keys(shapes, f"stages.{i}.0.proj.0.", 2 * d, dims[i - 1], 3)
            _conv_bn_keys(shapes, f"stages.{i}.0.proj.2.", d, 2 * d, 1)
            first = 1
        for b in range(first, first + depth):
            p = f"stages.{i}.{b}."
            _token_mixer_keys(shapes, p + "token_mixer.0.main.", d, token_kernels[i])
            shapes[p + "token_mixer.0.layer_scale"] = (d, 1, 1)
            _conv_bn_keys(shapes, p + "channel_mixer.main.conv.", d, 1, channel_kernel)
            _fc_keys(shapes, p + "channel_mixer.main.", d, int(d * expansion))
            shapes[p + "channel_mixer.layer_scale"] = (d, 1, 1)
    if classifier:
        _conv_bn_keys(shapes, "head1.0.", 1024, dims[-1], 1)
        shapes["head2.0.weight"], shapes["head2.0.bias"] = (1280, 1024), (1280,)
        shapes["head2.1.weight"], shapes["head2.1.bias"] = (1280,), (1280,)
        shapes["head2.3.weight"], shapes["head2.3.bias"] = (1000, 1280), (1000,)
    return shapes


def segmenter_layout(
    depths, dims, *, stem, token_kernels, channel_kernel, expansion, head_width, head_depth,
    head_kernel, head_expansion, head_out_ratio, num_classes,
) -> dict[str, tuple[int, ...]]:  # fmt: skip
    """Key -> shape of their fine-tuned mmseg ``EncoderDecoder`` (``backbone.*``, ``decode_head.*``)."""
    shapes = {
        "backbone." + k: v
        for k, v in backbone_layout(
            depths, dims, stem=stem, token_kernels=token_kernels, channel_kernel=channel_kernel,
            expansion=expansion,
        ).items()
    }  # fmt: skip
    head: dict[str, tuple[int, ...]] = {}
    total = sum(dims[1:])
    _conv_bn_keys(head, "squeeze.0.", total, total, 1)
    _conv_bn_keys(head, "squeeze.2.", head_width, total, 1)
    for j in range(head_depth):
        p = f"head_blocks.{j}."
        _token_mixer_keys(head, p + "token_mixer.main.", head_width, head_kernel)
        _repvggdw_keys(head, p + "channel_mixer.main.conv.", head_width, head_kernel)
        _fc_keys(head, p + "channel_mixer.main.", head_width, int(head_width * head_expansion))
    _conv_bn_keys(head, "align.0.", head_width * head_out_ratio, head_width, 1)
    head["conv_seg.weight"] = (num_classes, head_width * head_out_ratio, 1, 1)
    head["conv_seg.bias"] = (num_classes,)
    shapes.update({"decode_head." + k: v for k, v in head.items()})
    return shapes


# --- functional forward -----------------------------------------------------------------------------


def _bn(sd, p, x):
    return F.batch_norm(
        x, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"],
        False, 0.0, BN_EPS,
    )  # fmt: skip


def _conv_bn(sd, p, x, stride=1, groups=1):
    w = sd[p + "c.weight"]
    padding = (w.shape[-2] // 2, w.shape[-1] // 2)
    return _bn(sd, p + "bn.", F.conv2d(x, w, None, stride, padding, groups=groups))


def _repvggdw(sd, p, x):
    d = x.shape[1]
    out = 0
    for branch in ("conv1.", "conv2.", "strip_conv1.", "strip_conv2."):
        if p + branch + "c.weight" in sd:
            out = out + _conv_bn(sd, p + branch, x, groups=d)
    return out


def _token_mixer(sd, p, x):
    q = _conv_bn(sd, p + "fc.", x)
    return _repvggdw(sd, p + "conv2.", F.gelu(_repvggdw(sd, p + "conv1.", q)))


def _ffn(sd, p, x):
    h = F.gelu(F.conv2d(x, sd[p + "fc1.weight"], sd[p + "fc1.bias"]))
    return F.conv2d(h, sd[p + "fc2.weight"], sd[p + "fc2.bias"])


def official_backbone_forward(sd: dict[str, Tensor], x: Tensor) -> list[Tensor]:
    """Outputs of stages 2…4 of their backbone (keys without the ``backbone.`` prefix)."""
    x = F.gelu(_conv_bn(sd, "patch_embed.0.", x, 2))
    x = F.gelu(_conv_bn(sd, "patch_embed.2.", x))
    x = _conv_bn(sd, "patch_embed.5.", _conv_bn(sd, "patch_embed.4.", x), 2)
    outs = []
    stages = sorted({int(k.split(".")[1]) for k in sd if k.startswith("stages.")})
    for i in stages:
        entries = sorted({int(k.split(".")[2]) for k in sd if k.startswith(f"stages.{i}.")})
        for j in entries:
            p = f"stages.{i}.{j}."
            if p + "proj.0.c.weight" in sd:
                x = _conv_bn(sd, p + "proj.2.", F.gelu(_conv_bn(sd, p + "proj.0.", x, 2)))
                continue
            t = p + "token_mixer.0."
            x = x + _token_mixer(sd, t + "main.", x) * sd[t + "layer_scale"]
            c = p + "channel_mixer."
            dw = _conv_bn(sd, c + "main.conv.", x, groups=x.shape[1])
            x = x + _ffn(sd, c + "main.", dw) * sd[c + "layer_scale"]
        if i > 0:
            outs.append(x)
    return outs


def official_segmenter_forward(sd: dict[str, Tensor], x: Tensor) -> Tensor:
    """Eval-mode logits at the input size of their EncoderDecoder, from its state dict."""
    backbone = {k[9:]: v for k, v in sd.items() if k.startswith("backbone.")}
    head = {k[12:]: v for k, v in sd.items() if k.startswith("decode_head.")}
    levels = official_backbone_forward(backbone, x)
    levels = [levels[0]] + [
        F.interpolate(f, scale_factor=2 ** (j + 1), mode="bicubic", align_corners=False)
        for j, f in enumerate(levels[1:])
    ]
    h = _conv_bn(head, "squeeze.0.", torch.cat(levels, dim=1))
    h = _conv_bn(head, "squeeze.2.", F.gelu(h))
    blocks = sorted({int(k.split(".")[1]) for k in head if k.startswith("head_blocks.")})
    for j in blocks:
        p = f"head_blocks.{j}."
        h = F.gelu(h + _token_mixer(head, p + "token_mixer.main.", h))
        c = p + "channel_mixer.main."
        h = F.gelu(h + _ffn(head, c, _repvggdw(head, c + "conv.", h)))
    h = F.gelu(_conv_bn(head, "align.0.", h))
    logits = F.conv2d(h, head["conv_seg.weight"], head["conv_seg.bias"])
    return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
