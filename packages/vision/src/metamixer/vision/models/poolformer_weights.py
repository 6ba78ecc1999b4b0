"""timm's PoolFormer layout -> ours (``metamixer.vision.models.PoolFormer``)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor, nn

from metamixer.vision.models.state_dicts import unwrap_state_dict

_POOLFORMER_BLOCK_RULES = [
    (r"^norm1\.", "token.norm."),
    (r"^layer_scale1\.scale$", "token.layer_scale.weight"),
    (r"^norm2\.", "channel.norm."),
    (r"^mlp\.fc1\.", "channel.mixer.key."),
    (r"^mlp\.fc2\.", "channel.mixer.value."),
    (r"^layer_scale2\.scale$", "channel.layer_scale.weight"),
]


def _map_poolformer_key(key: str) -> str:
    fixed = {"stem.conv.weight": "stem.weight", "stem.conv.bias": "stem.bias"}
    if key in fixed:
        return fixed[key]
    head = re.fullmatch(r"head\.(norm|fc)\.(weight|bias)", key)
    if head:
        return f"{'norm' if head[1] == 'norm' else 'head'}.{head[2]}"
    down = re.fullmatch(r"stages\.(\d+)\.downsample\.conv\.(weight|bias)", key)
    if down:
        return f"stages.{down[1]}.downsample.{down[2]}"
    block = re.fullmatch(r"stages\.(\d+)\.blocks\.(\d+)\.(.+)", key)
    if not block:
        raise KeyError(key)
    for pattern, replacement in _POOLFORMER_BLOCK_RULES:
        new, n = re.subn(pattern, replacement, block[3])
        if n:
            return f"stages.{block[1]}.blocks.{block[2]}.{new}"
    raise KeyError(key)


def convert_timm_poolformer_state_dict(
    state_dict: Mapping[str, Tensor], model: nn.Module | None = None
) -> dict[str, Tensor]:
    """Rename timm's ``poolformer_*`` (v1) keys to ``PoolFormer``'s; ours pass through unchanged.

    The PoolFormer authors' original layout (``network.*``, ``patch_embed.proj.*``) is refused with
    a hint: timm reads it (``timm.create_model("poolformer_s12", pretrained=True,
    pretrained_cfg_overlay=dict(file=PATH))``) and its ``state_dict()`` is then in timm's layout.
    """
    state_dict = unwrap_state_dict(state_dict)
    if "stem.weight" in state_dict:
        return dict(state_dict)
    if any(k.startswith(("network.", "patch_embed.")) for k in state_dict):
        raise ValueError(
            "this is the PoolFormer authors' original layout (network.*); load it into timm's "
            "poolformer_s12 (pretrained_cfg_overlay=dict(file=PATH)) and save its state_dict() "
            "to get timm's layout, which converts here"
        )
    converted, unknown = {}, []
    for key, value in state_dict.items():
        try:
            converted[_map_poolformer_key(key)] = value
        except KeyError:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"{len(unknown)} keys are not in timm's PoolFormer layout, e.g. {unknown[:5]}"
        )
    return converted
