"""What the vision tasks share: building a classifier or backbone by name, loading weights to start
from, and rebuilding a trained classifier from its checkpoint."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import timm
import torch
from torch import nn

from metamixer.core import (
    ARCHITECTURES,
    build_network,
    network_from_checkpoint,
)
from metamixer.core.checkpoint import read_checkpoint
from metamixer.vision import models as _models  # noqa: F401  (registers the FFNet variants with timm)
from metamixer.vision.models.ffnet_weights import convert_official_state_dict
from metamixer.vision.models.state_dicts import load_state_dict_strict, load_weights_file


class StartsFromFiles:
    """A LightningModule mixin: the files a run starts from (pretrained weights, a teacher) are
    read by ``load_start_files`` when the first fit / validate / test / predict starts, unless the
    Trainer restored a checkpoint (which holds those weights, and the files may have moved since);
    a module rebuilt with ``load_from_checkpoint`` never reads them.  The constructor stays pure."""

    _files_read = False
    trainer: Any

    def load_start_files(self) -> None:
        """Read the files the run starts from (each module defines what they are)."""

    def _start(self) -> None:
        if not self._files_read and self.trainer.ckpt_path is None:
            self.load_start_files()
        self._files_read = True

    def on_fit_start(self) -> None:
        self._start()

    def on_validation_start(self) -> None:
        self._start()

    def on_test_start(self) -> None:
        self._start()

    def on_predict_start(self) -> None:
        self._start()


def build_classifier(
    arch: str, task: Mapping[str, Any], arch_args: Mapping[str, Any] | None = None
) -> nn.Module:
    """A registered architecture (``metamixer.core.ARCHITECTURES``) or, for peers and teachers,
    any other timm model, with the task's ``num_classes`` / ``in_chans``."""
    if arch in ARCHITECTURES:
        return build_network(arch, task, arch_args)
    if not timm.is_model(arch):
        ours = sorted(
            n
            for n, a in ARCHITECTURES.items()
            if a.cls.__module__.startswith(__package__ + ".models")
        )
        close = difflib.get_close_matches(arch, [*ours, *timm.list_models()], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(
            f"unknown architecture {arch!r}; {hint}registered classifiers: {', '.join(ours)}, "
            "or any timm model name (timm.list_models())"
        )
    return timm.create_model(arch, **task, **(arch_args or {}))


def classifier_from_checkpoint(path: str | Path, weights: str = "raw") -> nn.Module:
    """The network that an ``ImageClassifier`` checkpoint was validated as, rebuilt from its
    hyperparameters: ``raw`` weights (a distilled model's two heads averaged into one linear head,
    exactly its ``val/*`` logits) or the ``ema`` copy (``val_ema/*``; one head)."""
    checkpoint = read_checkpoint(path)
    hp = checkpoint.get("hyper_parameters") or {}
    task = {k: hp[k] for k in ("num_classes", "in_chans") if k in hp}
    network = network_from_checkpoint(
        path, weights=weights, build=lambda arch, _, args: build_classifier(arch, task, args),
        checkpoint=checkpoint,
    )  # fmt: skip
    state = checkpoint.get("state_dict", {})
    if weights == "raw" and "head_dist.weight" in state:
        head: nn.Linear = cast(Any, network).get_classifier()
        with torch.no_grad():  # mean of two linear maps of the same features = one linear map
            head.weight.add_(state["head_dist.weight"]).mul_(0.5)
            head.bias.add_(state["head_dist.bias"]).mul_(0.5)
    return network


def cosine_with_warmup(step: int, *, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup from 0, then cosine down to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


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
