"""timm's PoolFormer layout -> ours (``metamixer.vision.models.PoolFormer``)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from metamixer.vision.models.state_dicts import (
    KeyRule,
    rename_key,
    rename_official_keys,
    substitute_first,
    unwrap_state_dict,
)

_POOLFORMER_BLOCK_RULES = [
    (r"^norm1\.", "token.norm."),
    (r"^layer_scale1\.scale$", "token.layer_scale.weight"),
    (r"^norm2\.", "channel.norm."),
    (r"^mlp\.fc1\.", "channel.mixer.key."),
    (r"^mlp\.fc2\.", "channel.mixer.value."),
    (r"^layer_scale2\.scale$", "channel.layer_scale.weight"),
]


_POOLFORMER_RULES: list[KeyRule] = [
    (r"stem\.conv\.(weight|bias)", lambda m: f"stem.{m[1]}"),
    (r"head\.(norm|fc)\.(weight|bias)", lambda m: f"{'norm' if m[1] == 'norm' else 'head'}.{m[2]}"),
    (
        r"stages\.(\d+)\.downsample\.conv\.(weight|bias)",
        lambda m: f"stages.{m[1]}.downsample.{m[2]}",
    ),
    (
        r"stages\.(\d+)\.blocks\.(\d+)\.(.+)",
        lambda m: f"stages.{m[1]}.blocks.{m[2]}.{substitute_first(m[3], _POOLFORMER_BLOCK_RULES)}",
    ),
]


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
    return rename_official_keys(
        state_dict,
        lambda key: rename_key(key, _POOLFORMER_RULES),
        "PoolFormer layout",
        source="timm's",
    )
