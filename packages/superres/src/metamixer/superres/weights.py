"""Load the authors' released FFNet-SR checkpoints (basicsr ``params`` / ``params_ema``) from disk.

Their ``FFBlock`` keeps each mixer as an ``nn.Sequential``: without norm the token mixer is
``[1×1, dw3, GELU, dw3]`` and the channel mixer ``[dw3, 1×1, GELU, 1×1]``; "LN" puts the norm first,
"BN" puts it after the first conv.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from metamixer.core.checkpoint import read_checkpoint

# Sequential index -> our sub-module, per norm setting (None / "LN" / "BN").
_LAYOUTS: dict[str | None, dict[str, dict[int, str]]] = {
    None: {
        "token_mixer": {0: "token.mixer.query", 1: "token.mixer.key", 3: "token.mixer.value"},
        "channel_mixer": {
            0: "channel.mixer.query",
            1: "channel.mixer.key",
            3: "channel.mixer.value",
        },
    },
    "LN": {
        "token_mixer": {
            0: "token.norm",
            1: "token.mixer.query",
            2: "token.mixer.key",
            4: "token.mixer.value",
        },
        "channel_mixer": {
            0: "channel.norm",
            1: "channel.mixer.query",
            2: "channel.mixer.key",
            4: "channel.mixer.value",
        },
    },
    "BN": {
        "token_mixer": {  # our query is a bias-free conv + BN: the conv bias folds into the BN
            0: "token.mixer.query.conv",
            1: "token.mixer.query.bn",
            2: "token.mixer.key",
            4: "token.mixer.value",
        },
        "channel_mixer": {
            0: "channel.mixer.query.0",
            1: "channel.mixer.query.1",
            2: "channel.mixer.key",
            4: "channel.mixer.value",
        },
    },
}


def convert_official_state_dict(
    state: Mapping[str, Tensor], norm: str | None = None
) -> dict[str, Tensor]:
    """Rename the authors' FFNet-SR keys to ours; keys already in our layout pass through."""
    if any(".token.mixer." in k for k in state):
        return dict(state)
    layout, out, unknown = _LAYOUTS[norm], {}, []
    for key, value in state.items():
        m = re.fullmatch(r"body\.(\d+)\.(token_mixer|channel_mixer)\.(\d+)\.(.+)", key)
        if m and int(m[3]) in layout[m[2]]:
            out[f"body.{m[1]}.{layout[m[2]][int(m[3])]}.{m[4]}"] = value
        elif re.fullmatch(r"(proj|conv_bef_up)\.(weight|bias)", key):
            out[key] = value
        else:
            unknown.append(key)
    for key in [k for k in out if k.endswith("token.mixer.query.conv.bias")]:
        mean = key.replace("query.conv.bias", "query.bn.running_mean")
        out[mean] = out[mean] - out.pop(key)  # BN(Wx + b) with mean m == BN(Wx) with mean m - b
    if unknown:
        raise ValueError(
            f"{len(unknown)} keys are not in the authors' FFNet-SR layout (norm={norm!r}), "
            f"e.g. {unknown[:4]}; check the checkpoint and the model's norm setting"
        )
    return out


def load_sr_weights(model: nn.Module, path: str | Path, *, prefer_ema: bool = True) -> nn.Module:
    """Load a basicsr FFNet-SR checkpoint (``params_ema`` first, then ``params``) strictly.

    Reads a local file with ``torch.load(weights_only=True)``; nothing is downloaded.
    """
    checkpoint = read_checkpoint(path)
    keys = ("params_ema", "params") if prefer_ema else ("params", "params_ema")
    state = next(
        (checkpoint[k] for k in keys if isinstance(checkpoint.get(k), Mapping)), checkpoint
    )
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):  # a Lightning checkpoint
        state = {
            k.removeprefix("model."): v
            for k, v in state["state_dict"].items()
            if k.startswith("model.")
        }
    state = convert_official_state_dict(state, getattr(model, "norm", None))
    expected = model.state_dict()
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    wrong = [k for k in set(state) & set(expected) if state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        depth = len({k.split(".")[1] for k in state if k.startswith("body.")})
        raise ValueError(
            f"{path} does not fit this FFNetSR: {len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(wrong)} with other shapes (e.g. {sorted(wrong)[:2]}); the checkpoint has depth "
            f"{depth} and conv_bef_up {tuple(state.get('conv_bef_up.weight', torch.empty(0)).shape)} "
            "(3·scale² outputs): build the matching depth / scale"
        )
    model.load_state_dict(state)
    return model
