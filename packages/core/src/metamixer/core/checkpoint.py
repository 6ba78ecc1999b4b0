"""Reading weights safely and exporting checked ONNX files (shared by the modality packages)."""

from __future__ import annotations

import argparse
import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .atomic import atomic_path
from .reparam import reparameterize_model

# Classes a weights-only load may build besides tensors and plain containers: timm's
# ``CheckpointSaver`` (the authors' training script) stores the run's ``argparse.Namespace``.
SAFE_GLOBALS: tuple[type, ...] = (argparse.Namespace,)


def read_checkpoint(path: str | Path) -> Mapping[str, Any]:
    """A local checkpoint read with ``torch.load(weights_only=True)``: tensors, plain containers
    and ``SAFE_GLOBALS`` only, so a file from a stranger cannot run code.  Nothing is downloaded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (only local files are read)")
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors, truncated zip archives, forbidden globals
        raise ValueError(f"cannot read {path} as a weights-only PyTorch checkpoint: {err}") from err
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a state dict")
    return checkpoint


def folded_copy(model: nn.Module) -> nn.Module:
    """A folded copy of ``model`` in evaluation mode (the caller's model is left as it is)."""
    return reparameterize_model(copy.deepcopy(model).eval())


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
    left as it is) and compare onnxruntime with PyTorch on ``check``.  The TorchScript exporter is
    tried first; an op it cannot express (e.g. adaptive pooling to sizes that do not divide the
    input, as in UperNet's pyramid pooling) sends the export to the dynamo exporter.  Returns the largest
    difference; above ``atol`` it raises and no file is left (the export goes to a temporary name
    that is renamed only after the check).  Needs the ``export`` extra (onnx, onnxruntime)."""
    import numpy as np
    import onnxruntime as ort

    model = folded_copy(model)
    with atomic_path(path) as tmp:
        export: dict[str, Any] = dict(
            input_names=[names[0]], output_names=[names[1]], dynamic_axes=dynamic_axes,
            opset_version=opset,
        )  # fmt: skip
        try:
            torch.onnx.export(model, (example,), tmp, dynamo=False, **export)
        except torch.onnx.errors.OnnxExporterError:  # an op TorchScript's exporter cannot express
            torch.onnx.export(model, (example,), tmp, dynamo=True, verbose=False, **export)
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        (ours,) = session.run(None, {names[0]: check.numpy()})
        with torch.no_grad():
            diff = float(np.abs(ours - model(check).numpy()).max())
        if diff > atol:
            raise AssertionError(f"ONNX output differs from PyTorch by {diff:.2e} > {atol:.0e}")
    return diff


def export_coreml(
    model: nn.Module,
    path: str | Path,
    example: Tensor,
    *,
    names: tuple[str, str] = ("input", "output"),
) -> dict[str, object]:
    """Export a folded copy of ``model`` as a Core ML ML program (``.mlpackage``, the authors'
    mobile route), traced at ``example``'s shape.  Returns the input shape and the operation
    inventory; running the package needs macOS (on Linux it is converted and inspected only).
    Needs the ``coreml`` extra (coremltools).  The package appears only when complete."""
    import coremltools as ct

    model = folded_copy(model)
    with torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)
    package = ct.convert(
        traced, inputs=[ct.TensorType(name=names[0], shape=tuple(example.shape))],
        outputs=[ct.TensorType(name=names[1])], convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS16,
    )  # fmt: skip
    with atomic_path(path) as tmp:  # keeps the .mlpackage suffix coremltools wants
        package.save(str(tmp))
    spec = package.get_spec()
    ops: dict[str, int] = {}
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                ops[op.type] = ops.get(op.type, 0) + 1
    inputs = spec.description.input[0]
    return {
        "input": (inputs.name, tuple(inputs.type.multiArrayType.shape)),
        "output": spec.description.output[0].name,
        "ops": dict(sorted(ops.items())),
    }
