"""Load the authors' FFNet-seg checkpoints (local files only) into ``FFNetSeg``.

Two layouts (mmsegmentation fork of ``ysj9909/FFNet``):

- the fine-tuned segmenter (``ffnet_seg_sys_512_160k_ade20k.pth``): an mmseg ``EncoderDecoder``
  under ``state_dict``: ``backbone.{patch_embed,stages}.*`` and ``decode_head.{squeeze,
  head_blocks,align,conv_seg}.*``;
- the ImageNet-pretrained backbone (``ffnet_seg.pth.tar``): ``patch_embed.*``, ``stages.*`` and the
  classifier ``head1.*`` / ``head2.*`` (dropped), under ``model`` or ``state_dict``.

Their ``Conv2d_BN`` holds ``c`` (conv) and ``bn``; ``RepVGGDW`` holds ``conv1`` (k×k), ``conv2``
(small), ``strip_conv1`` (1×k), ``strip_conv2`` (k×1); a residual holds ``main`` and a
``layer_scale`` of shape ``(dim, 1, 1)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from metamixer.core.checkpoint import read_checkpoint
from metamixer.vision.models.state_dicts import (
    KeyRule,
    load_state_dict_strict,
    rename_key,
    rename_official_keys,
    unwrap_state_dict,
)

_BRANCHES = {"conv1": "large", "conv2": "small", "strip_conv1": "row", "strip_conv2": "column"}
_TOKEN_ROLES = {"fc": "query", "conv1": "key", "conv2": "value"}
_CHANNEL_ROLES = {"conv": "query", "fc1": "key", "fc2": "value"}
_CLASSIFIER_PREFIXES = ("head1.", "head2.")


def _conv_bn(rest: str, key: str) -> str:
    """``c.weight`` / ``bn.*`` of a ``Conv2d_BN`` → ``conv.weight`` / ``bn.*`` of a ``ConvBN``."""
    m = re.fullmatch(r"(c|bn)\.(.+)", rest)
    if not m:
        raise KeyError(key)
    return f"{'conv' if m[1] == 'c' else 'bn'}.{m[2]}"


def _operation(rest: str, key: str) -> str:
    """One sub-operation of a mixer: a strip-branch conv, a conv+BN or a plain conv."""
    m = re.fullmatch(r"(conv1|conv2|strip_conv1|strip_conv2)\.(.+)", rest)
    if m:
        return f"{_BRANCHES[m[1]]}.{_conv_bn(m[2], key)}"
    if rest in ("weight", "bias"):
        return rest
    return _conv_bn(rest, key)


def _mixer(rest: str, key: str) -> str:
    """``{token_mixer[.0],channel_mixer}.main.<op>.*`` → ``{token,channel}.mixer.<role>.*``."""
    m = re.fullmatch(r"(token|channel)_mixer\.(?:0\.)?main\.([a-z0-9]+)\.(.+)", rest)
    if not m:
        raise KeyError(key)
    roles = _TOKEN_ROLES if m[1] == "token" else _CHANNEL_ROLES
    if m[2] not in roles:
        raise KeyError(key)
    return f"{m[1]}.mixer.{roles[m[2]]}.{_operation(m[3], key)}"


def _backbone_key(key: str) -> str:
    stem = re.fullmatch(r"patch_embed\.(\d+)\.(.+)", key)
    if stem:
        return f"stem.{stem[1]}.{_conv_bn(stem[2], key)}"
    m = re.fullmatch(r"stages\.(\d+)\.(\d+)\.(.+)", key)
    if not m:
        raise KeyError(key)
    stage, index, rest = int(m[1]), int(m[2]), m[3]
    if stage > 0:  # their stages 2-4 hold the patch merging as entry 0
        if index == 0:
            down = re.fullmatch(r"proj\.(0|2)\.(.+)", rest)
            if not down:
                raise KeyError(key)
            return f"stages.{stage}.downsample.{down[1]}.{_conv_bn(down[2], key)}"
        index -= 1
    block = f"stages.{stage}.blocks.{index}."
    scale = re.fullmatch(r"(token|channel)_mixer\.(?:0\.)?layer_scale", rest)
    if scale:
        return f"{block}{scale[1]}.layer_scale.weight"
    return block + _mixer(rest, key)


_HEAD_RULES: list[KeyRule] = [
    (r"squeeze\.(0|2)\.(.+)", lambda m: f"head.squeeze.{m[1]}.{_conv_bn(m[2], m.string)}"),
    (r"head_blocks\.(\d+)\.(.+)", lambda m: f"head.blocks.{m[1]}.{_mixer(m[2], m.string)}"),
    (r"align\.0\.(.+)", lambda m: f"head.expand.0.{_conv_bn(m[1], m.string)}"),
    (r"conv_seg\.(weight|bias)", lambda m: f"head.classifier.{m[1]}"),
]


def _ours(state: Mapping[str, Tensor]) -> bool:
    return any(k.startswith("stem.") for k in state)


def convert_official_ffnet_seg_backbone(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The authors' backbone keys (``patch_embed.*``, ``stages.*``; classifier ``head1.*`` /
    ``head2.*`` and a ``backbone.`` prefix removed) renamed to ``FFNetSeg``'s stem and stages.
    A state dict in our layout passes through (its ``head.*`` removed)."""
    state = unwrap_state_dict(state_dict)
    if any(k.startswith("backbone.") for k in state):
        state = {k[9:]: v for k, v in state.items() if k.startswith("backbone.")}
    if _ours(state):
        return {k: v for k, v in state.items() if not k.startswith("head.")}
    state = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    return rename_official_keys(state, _backbone_key, "FFNet-seg backbone layout")


def convert_official_ffnet_seg(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The authors' fine-tuned segmenter (``backbone.*`` + ``decode_head.*``) in ``FFNetSeg``'s
    layout.  A state dict already in our layout passes through unchanged."""
    state = unwrap_state_dict(state_dict)
    if _ours(state):
        return dict(state)

    def rename(key: str) -> str:
        if key.startswith("backbone."):
            return _backbone_key(key[9:])
        if key.startswith("decode_head."):
            return rename_key(key[12:], _HEAD_RULES)
        raise KeyError(key)

    return rename_official_keys(state, rename, "FFNet-seg (mmseg EncoderDecoder) layout")


def load_ffnet_seg_backbone(network: nn.Module, path: str | Path) -> nn.Module:
    """Initialise ``network``'s stem and stages from a local classification checkpoint (the
    authors' ``ffnet_seg.pth.tar`` or our layout); the head is left as it is.  Returns ``network``."""
    state = convert_official_ffnet_seg_backbone(read_checkpoint(path))
    load_state_dict_strict(network.get_submodule("backbone"), state, str(path))
    return network


def load_official_ffnet_seg(network: nn.Module, path: str | Path) -> nn.Module:
    """Load the authors' fine-tuned FFNet-seg checkpoint (mmseg ``EncoderDecoder``, e.g.
    ``ffnet_seg_sys_512_160k_ade20k.pth``) or one in our layout into ``network``, strictly.

    Only local files are read, with ``torch.load(weights_only=True)``.  Returns ``network``.
    """
    state = convert_official_ffnet_seg(read_checkpoint(path))
    load_state_dict_strict(network, state, str(path))
    return network


__all__ = [
    "convert_official_ffnet_seg",
    "convert_official_ffnet_seg_backbone",
    "load_ffnet_seg_backbone",
    "load_official_ffnet_seg",
]
