"""Reading weights safely and exporting checked ONNX files (shared by the modality packages)."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .reparam import reparameterize_model


def read_checkpoint(path: str | Path) -> Mapping[str, Any]:
    """A local checkpoint read with ``torch.load(weights_only=True)``: tensors and plain
    containers only, so a file from a stranger cannot run code.  Nothing is downloaded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (only local files are read)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors, truncated zip archives, forbidden globals
        raise ValueError(f"cannot read {path} as a weights-only PyTorch checkpoint: {err}") from err
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a state dict")
    return checkpoint


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example: Tensor,
    check: Tensor,
    *,
    names: tuple[str, str] = ("input", "output"),
    dynamic_axes: dict[str, dict[int, str]] | None = None,
    atol: float = 1e-4,
    opset: int = 18,
) -> float:
    """Export a folded copy of ``model`` as ONNX (traced with ``example``; the caller's model is
    left as it is) and compare onnxruntime with PyTorch on ``check``.  Returns the largest
    difference; above ``atol`` it raises and no file is left (the export goes to a temporary name
    that is renamed only after the check).  Needs the ``export`` extra (onnx, onnxruntime)."""
    import numpy as np
    import onnxruntime as ort

    model = reparameterize_model(copy.deepcopy(model).eval())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.onnx.export(
            model, (example,), tmp, input_names=[names[0]], output_names=[names[1]],
            dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False,
        )  # fmt: skip
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        (ours,) = session.run(None, {names[0]: check.numpy()})
        with torch.no_grad():
            diff = float(np.abs(ours - model(check).numpy()).max())
        if diff > atol:
            raise AssertionError(f"ONNX output differs from PyTorch by {diff:.2e} > {atol:.0e}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return diff
