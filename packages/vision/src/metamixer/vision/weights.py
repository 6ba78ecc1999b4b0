"""Load the authors' released FFNet ImageNet checkpoints (local files only) into our modules.

Their layout (``../shared/reference/ffnet_1_official_keys.tsv``): ``patch_embed.*``,
``stages.<i>.<j>.{token_mixer.0.main, channel_mixer.main, proj}.*``, ``norm.*``, ``head.*``, wrapped
under ``state_dict`` or ``model``, keys possibly prefixed ``module.``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

from torch import Tensor, nn

from metamixer.core.checkpoint import read_checkpoint

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


def _apply(rules: list[tuple[str, str]], key: str, full_key: str) -> str:
    for pattern, replacement in rules:
        new, n = re.subn(pattern, replacement, key)
        if n:
            return re.sub(
                r"\.c\.weight$", ".conv.weight", new
            )  # their Conv2d_BN names its conv "c"
    raise KeyError(full_key)


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
            return f"stages.{stage}.downsample." + _apply(_DOWNSAMPLE_RULES, rest, key)
        index -= 1
    block = f"stages.{stage}.blocks.{index}."
    if rest.startswith("token_mixer.0.main."):
        return block + "token.mixer." + _apply(_TOKEN_RULES, rest[19:], key)
    if rest.startswith("channel_mixer.main."):
        return block + "channel.mixer." + _apply(_CHANNEL_RULES, rest[19:], key)
    if rest in ("token_mixer.0.layer_scale", "channel_mixer.layer_scale"):
        return block + rest.split("_")[0] + ".layer_scale.weight"
    raise KeyError(key)


def unwrap_state_dict(checkpoint: Mapping[str, object]) -> dict[str, Tensor]:
    """The weights of a release file: under ``state_dict`` / ``model`` / ``params_ema`` / ``params``
    or at the top level; a DistributedDataParallel ``module.`` prefix is removed."""
    for wrapper in ("state_dict", "model", "params_ema", "params"):
        inner = checkpoint.get(wrapper)
        if isinstance(inner, Mapping):
            checkpoint = inner
            break
    if not all(isinstance(v, Tensor) for v in checkpoint.values()):
        raise ValueError("checkpoint holds no state dict (expected a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in checkpoint.items()}


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


def rename_official_keys(
    state_dict: Mapping[str, Tensor], rename: Callable[[str], str], layout: str
) -> dict[str, Tensor]:
    """Every key through ``rename`` (a ``KeyError`` marks a key outside the authors' layout);
    their ``(dim, 1, 1)`` layer-scales become our flat ones.  Unknown keys: a ValueError naming
    them and ``layout``."""
    converted, unknown = {}, []
    for key, value in state_dict.items():
        try:
            new = rename(key)
        except KeyError:
            unknown.append(key)
            continue
        converted[new] = value.flatten() if new.endswith("layer_scale.weight") else value
    if unknown:
        raise ValueError(
            f"{len(unknown)} keys are not in the authors' {layout}, e.g. {unknown[:5]}"
        )
    return converted


def describe_layout(state_dict: Mapping[str, Tensor]) -> str:
    """``depths=…, dims=…`` of a state dict in our layout, to name the variant in error messages."""
    dims, depths = [], []
    for stage in range(8):
        blocks = {
            int(m[1])
            for k in state_dict
            if (m := re.match(rf"stages\.{stage}\.blocks\.(\d+)\.", k))
        }
        if not blocks:
            break
        depths.append(len(blocks))
        dims.append(state_dict[f"stages.{stage}.blocks.0.channel.mixer.key.weight"].shape[1])
    return f"depths={tuple(depths)}, dims={tuple(dims)}"


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, Tensor], source: str) -> None:
    """Load with every key used and every parameter filled; otherwise a ValueError naming them."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        problems = [
            f"{len(missing)} missing (e.g. {missing[:3]})" if missing else "",
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})" if unexpected else "",
            f"{len(wrong)} with other shapes (e.g. {wrong[:2]})" if wrong else "",
        ]
        raise ValueError(
            f"{source} does not fit this model: {'; '.join(p for p in problems if p)}. "
            f"The checkpoint has {describe_layout(state_dict)}, the model "
            f"{describe_layout(expected)}; build the matching variant (and num_classes)."
        )
    model.load_state_dict(state_dict, strict=True)


def load_weights_file(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a local file: official release, our export or a Lightning checkpoint."""
    state = unwrap_state_dict(read_checkpoint(path))
    if any(k.startswith("model.") for k in state):  # a Lightning checkpoint of ImageClassifier
        state = {k[6:]: v for k, v in state.items() if k.startswith("model.")}
    return state


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> nn.Module:
    """Initialise an FFNet used as a backbone (``features_only`` or the plain network) from a
    classification file (authors' release, our export or an ``ImageClassifier`` checkpoint).

    Every backbone parameter must come from the file; the file's classifier head (and final norm,
    when the backbone pruned it) are left out.  Returns ``backbone``.
    """
    state = convert_official_state_dict(load_weights_file(path))
    own = backbone.state_dict()
    prefix = "model." if own and all(k.startswith("model.") for k in own) else ""
    state = {prefix + k: v for k, v in state.items() if prefix + k in own}
    load_state_dict_strict(backbone, state, str(path))
    return backbone


def load_official_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load an authors' FFNet checkpoint file (or one of ours) into ``model``, strictly.

    Only local files are read (nothing is downloaded), with ``torch.load(weights_only=True)``.
    """
    checkpoint = read_checkpoint(path)
    load_state_dict_strict(model, convert_official_state_dict(checkpoint), str(path))
    return model


# --- timm's PoolFormer (v1) layout -> ``metamixer.vision.models.PoolFormer`` -----------------------

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


def load_weights_any(path: str | Path) -> dict[str, Tensor]:
    """``load_weights_file``, plus ``.safetensors`` files (timm's weights as the Hugging Face hub
    stores them, once they are on local disk); only local files are read."""
    if Path(path).suffix != ".safetensors":
        return load_weights_file(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"no weights at {path} (only local files are read)")
    from safetensors.torch import load_file

    return unwrap_state_dict(load_file(str(path)))
