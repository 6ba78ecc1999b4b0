"""Weight files and state dicts: reading a local file (PyTorch or safetensors), unwrapping a
training checkpoint, renaming another layout's keys and loading strictly with a readable error."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from torch import Tensor, nn

from metamixer.core.checkpoint import read_checkpoint


def unwrap_state_dict(checkpoint: Mapping[str, object]) -> dict[str, Tensor]:
    """The weights of a release file: under ``state_dict`` / ``model`` / ``params_ema`` / ``params``
    or at the top level; a DistributedDataParallel ``module.`` prefix is removed."""
    for wrapper in ("state_dict", "model", "params_ema", "params"):
        inner = checkpoint.get(wrapper)
        if isinstance(inner, Mapping):
            checkpoint = inner
            break
    tensors = {k.removeprefix("module."): v for k, v in checkpoint.items() if isinstance(v, Tensor)}
    if len(tensors) != len(checkpoint):
        raise ValueError("checkpoint holds no state dict (expected a mapping of names to tensors)")
    return tensors


def substitute_first(key: str, rules: Sequence[tuple[str, str]]) -> str:
    """``key`` through the first ``(pattern, replacement)`` substitution that applies to it; none:
    ``KeyError``."""
    for pattern, replacement in rules:
        new, n = re.subn(pattern, replacement, key)
        if n:
            return new
    raise KeyError(key)


#: ``(pattern, rename)``: a key that ``pattern`` matches in full is named ``rename(match)``
KeyRule = tuple[str, Callable[[re.Match[str]], str]]


def rename_key(key: str, rules: Sequence[KeyRule]) -> str:
    """``key`` renamed by the first rule whose pattern matches all of it; no rule: ``KeyError``."""
    for pattern, rename in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return rename(m)
    raise KeyError(key)


def rename_official_keys(
    state_dict: Mapping[str, Tensor],
    rename: Callable[[str], str],
    layout: str,
    source: str = "the authors'",
) -> dict[str, Tensor]:
    """Every key through ``rename`` (a ``KeyError`` marks a key outside ``source``'s layout);
    their ``(dim, 1, 1)`` layer-scales become our flat ones.  Unknown keys: a ValueError naming
    them, ``source`` and ``layout``."""
    converted, unknown = {}, []
    for key, value in state_dict.items():
        try:
            new = rename(key)
        except KeyError:
            unknown.append(key)
            continue
        converted[new] = value.flatten() if new.endswith("layer_scale.weight") else value
    if unknown:
        raise ValueError(f"{len(unknown)} keys are not in {source} {layout}, e.g. {unknown[:5]}")
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


def load_weights_any(path: str | Path) -> dict[str, Tensor]:
    """``load_weights_file``, plus ``.safetensors`` files (timm's weights as the Hugging Face hub
    stores them, once they are on local disk); only local files are read."""
    if Path(path).suffix != ".safetensors":
        return load_weights_file(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"no weights at {path} (only local files are read)")
    from safetensors.torch import load_file

    return unwrap_state_dict(load_file(str(path)))
