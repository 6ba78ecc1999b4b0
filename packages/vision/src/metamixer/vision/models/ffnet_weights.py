"""Load the authors' released FFNet ImageNet checkpoints (local files only) into our modules.

Their layout (``../shared/reference/ffnet_1_official_keys.tsv``): ``patch_embed.*``,
``stages.<i>.<j>.{token_mixer.0.main, channel_mixer.main, proj}.*``, ``norm.*``, ``head.*``, wrapped
under ``state_dict`` or ``model``, keys possibly prefixed ``module.``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from metamixer.core.checkpoint import read_checkpoint
from metamixer.vision.models.state_dicts import (
    load_state_dict_strict,
    rename_official_keys,
    substitute_first,
    unwrap_state_dict,
)

_TOKEN_RULES = [
    (r"^fc\.", "query."),
    (r"^conv1\.conv\.", "key.large."),
    (r"^conv1\.conv1\.", "key.small."),
    (r"^conv1\.", "key."),
    (r"^conv2\.conv\.", "value.large."),
    (r"^conv2\.conv1\.", "value.small."),
    (r"^conv2\.", "value."),
]
_CHANNEL_RULES = [
    (r"^conv\.conv\.", "query.large."),
    (r"^conv\.conv1\.", "query.small."),
    (r"^conv\.", "query."),
    (r"^fc1\.", "key."),
    (r"^fc2\.", "value."),
]
_DOWNSAMPLE_RULES = [
    (r"^proj\.0\.conv\.", "0.large."),
    (r"^proj\.0\.conv1\.", "0.small."),
    (r"^proj\.1\.conv\.", "1.proj."),
]


def _apply(rules: list[tuple[str, str]], key: str) -> str:
    # their Conv2d_BN names its conv "c"
    return re.sub(r"\.c\.weight$", ".conv.weight", substitute_first(key, rules))


def _map_key(key: str) -> str:
    stem = re.fullmatch(r"patch_embed\.(\d+)\.(c|bn)\.(.+)", key)
    if stem:
        return f"stem.{stem[1]}.{'conv' if stem[2] == 'c' else 'bn'}.{stem[3]}"
    if re.match(r"(norm|head)\.", key):
        return key
    m = re.fullmatch(r"stages\.(\d+)\.(\d+)\.(.+)", key)
    if not m:
        raise KeyError(key)
    stage, index, rest = int(m[1]), int(m[2]), m[3]
    if stage > 0:  # their stages 2-4 hold the downsample as entry 0
        if index == 0:
            return f"stages.{stage}.downsample." + _apply(_DOWNSAMPLE_RULES, rest)
        index -= 1
    block = f"stages.{stage}.blocks.{index}."
    if rest.startswith("token_mixer.0.main."):
        return block + "token.mixer." + _apply(_TOKEN_RULES, rest[19:])
    if rest.startswith("channel_mixer.main."):
        return block + "channel.mixer." + _apply(_CHANNEL_RULES, rest[19:])
    if rest in ("token_mixer.0.layer_scale", "channel_mixer.layer_scale"):
        return block + rest.split("_")[0] + ".layer_scale.weight"
    raise KeyError(key)


def convert_official_state_dict(
    state_dict: Mapping[str, Tensor], model: nn.Module | None = None
) -> dict[str, Tensor]:
    """Rename the authors' keys to ours (also usable as timm's ``pretrained_filter_fn``).

    A state dict already in our layout passes through unchanged.
    """
    state_dict = unwrap_state_dict(state_dict)
    if any(k.startswith("stem.") for k in state_dict):
        return dict(state_dict)
    return rename_official_keys(
        state_dict, _map_key, "FFNet layout; is this an FFNet ImageNet checkpoint?"
    )


def load_official_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load an authors' FFNet checkpoint file (or one of ours) into ``model``, strictly.

    Only local files are read (nothing is downloaded), with ``torch.load(weights_only=True)``.
    """
    checkpoint = read_checkpoint(path)
    load_state_dict_strict(model, convert_official_state_dict(checkpoint), str(path))
    return model


# --- timm's PoolFormer (v1) layout -> ``metamixer.vision.models.PoolFormer`` -----------------------
