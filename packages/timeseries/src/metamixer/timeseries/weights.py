"""Load the authors' forecasting FFNet checkpoints (their ``time_series_forecasting`` code, TSLib's
``checkpoint.pth``: the ``Model`` state dict, keys under ``model.``) into ``FFNetForecaster``.

Their single-stage network maps one to one: ``downsample_layers.0`` is the patch stem, a block's
``token_mixer.{ffnpw1, ffnpw2, norm, dw1, dw2}`` is our FFNified token mixer's query (two grouped
projections and the shared BN), key and value; ``channel_mixer.{dw, norm, ffnpw1, ffnpw2}`` our
channel mixer's query (large + small kernel conv-BN branches, shared BN), key and value;
``head.linear`` the flatten head and ``revin_layer.affine_*`` RevIN's scale and shift.  The layers
their forward pass never calls (``te_patch``, the multi-scale ``lat_layer`` / ``smooth_layer`` /
``up_sample_conv`` and the later ``downsample_layers``) are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from metamixer.core import MixerSettings
from metamixer.core.checkpoint import read_checkpoint

from .models import FFNetForecaster

_BLOCK = "stages.0.blocks.{j}."
_RENAMES = {  # their key inside a block -> ours inside ``blocks.<j>.``
    "token_mixer.ffnpw1": "0.mixer.query.1",
    "token_mixer.ffnpw2": "0.mixer.query.5",
    "token_mixer.norm": "0.mixer.query.7",
    "token_mixer.dw1": "0.mixer.key",
    "token_mixer.dw2": "0.mixer.value",
    "channel_mixer.dw.lkb_origin": "1.mixer.query.0.large",
    "channel_mixer.dw.small_conv": "1.mixer.query.0.small",
    "channel_mixer.norm": "1.mixer.query.1",
    "channel_mixer.ffnpw1": "1.mixer.key.0",
    "channel_mixer.ffnpw2": "1.mixer.value.1",
}
_TOP = {
    "downsample_layers.0.0": "stem.0",
    "downsample_layers.0.1": "stem.1",
    "head.linear": "head",
    "revin_layer.affine_weight": "revin.weight",
    "revin_layer.affine_bias": "revin.bias",
}
_UNUSED = re.compile(r"(te_patch|lat_layer|smooth_layer|up_sample_conv|downsample_layers\.[123])\.")


def _strip(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The FFNet's own keys: ``module.`` (DataParallel) and ``model.`` (TSLib's wrapper) removed."""
    if any(k.startswith(("model_res.", "model_trend.")) for k in state):
        raise ValueError(
            "this checkpoint is the authors' decomposition variant (model_res / model_trend, "
            "--decomposition 1), which is not built here; train with --decomposition 0"
        )
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "model."):
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def convert_authors_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename the authors' forecaster keys to ``FFNetForecaster``'s."""
    state = _strip(state)
    if any(k.startswith("stages.1.") for k in state):
        raise ValueError(
            "this checkpoint has more than one stage (--num_blocks with several entries); only "
            "the single-stage forecaster of the authors' scripts (--num_blocks 1) is built here"
        )
    if any(".lkb_reparam." in k for k in state):
        raise ValueError(
            "this checkpoint was saved with --small_kernel_merged True (re-parameterized); "
            "load the training-time checkpoint (small_kernel_merged False)"
        )
    out, unknown = {}, []
    for key, value in state.items():
        if _UNUSED.match(key):
            continue
        block = re.match(r"stages\.0\.blocks\.(\d+)\.(.+)", key)
        if block:
            j, rest = block.groups()
            name = next((n for n in _RENAMES if rest.startswith(n + ".")), None)
            if name is not None:
                out[f"blocks.{j}.{_RENAMES[name]}{rest[len(name) :]}"] = value
                continue
        else:
            name = next((n for n in _TOP if key == n or key.startswith(n + ".")), None)
            if name is not None:
                out[_TOP[name] + key[len(name) :]] = value
                continue
        unknown.append(key)
    if unknown:
        raise ValueError(
            f"{len(unknown)} keys are not in the authors' forecaster layout, e.g. {unknown[:3]}"
        )
    return out


def load_authors_forecaster(
    path: str | Path, *, patch_stride: int = 2, revin: bool = True
) -> FFNetForecaster:
    """Build the forecaster that the authors' ``checkpoint.pth`` at ``path`` describes and load it
    strictly.  Every size is read from the weights except what they do not record: the stem
    stride (their ``--patch_stride``) and whether RevIN without affine parameters is on
    (``--revin``); both default to the released scripts' settings."""
    state = convert_authors_state_dict(read_checkpoint(path))
    try:
        stem, head = state["stem.0.weight"], state["head.weight"]
        dim, patch_size = stem.shape[0], stem.shape[-1]
        num_vars = state["blocks.0.0.mixer.query.1.weight"].shape[1]
        kernel = state["blocks.0.0.mixer.key.weight"].shape[-1]
        small = state["blocks.0.1.mixer.query.0.small.conv.weight"].shape[-1]
        hidden = state["blocks.0.1.mixer.key.0.weight"].shape[0] // num_vars
    except KeyError as err:
        raise ValueError(f"{path} lacks {err} of the authors' forecaster layout") from err
    model = FFNetForecaster(
        num_vars, seq_len=head.shape[1] // dim * patch_stride, horizon=head.shape[0], dim=dim,
        depth=len({k.split(".")[1] for k in state if k.startswith("blocks.")}),
        mixers=MixerSettings(
            token_kernels=kernel, channel_kernels=kernel, channel_small_kernels=small,
            mlp_ratio=hidden // dim,
        ),
        patch_size=patch_size, patch_stride=patch_stride, revin=revin or "revin.weight" in state,
        revin_affine="revin.weight" in state,
    )  # fmt: skip
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a size that does not follow from the others
        raise ValueError(f"{path} does not fit the forecaster its shapes describe: {err}") from err
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit the forecaster its shapes describe: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    return model
