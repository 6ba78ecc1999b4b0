"""Deployment: fold a trained FFNet and export it to ONNX, checked with onnxruntime.

``python -m metamixer.vision.export --checkpoint RUN/checkpoints/last.ckpt --img_size 32 \
--out ffnet.onnx``
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import timm
import torch
from torch import nn

from metamixer.core import reparameterize_model

from .lit import classifier_from_checkpoint, load_weights_file
from .weights import convert_official_state_dict, load_state_dict_strict


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    input_shape: tuple[int, int, int, int],
    atol: float = 1e-4,
    opset: int = 18,
) -> float:
    """Fold ``model``, write it as ONNX (dynamic batch), and check onnxruntime against PyTorch.

    Returns the largest absolute difference; raises ``AssertionError`` above ``atol``. The file is
    written to a temporary name and renamed, so a failed export leaves nothing behind.
    """
    import onnxruntime as ort

    model = reparameterize_model(model.eval())
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    x = torch.randn(input_shape)
    try:
        torch.onnx.export(
            model,
            (x,),
            tmp,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        check = torch.randn((3, *input_shape[1:]))
        (ours,) = session.run(None, {"image": check.numpy()})
        with torch.no_grad():
            reference = model(check).numpy()
        diff = float(np.abs(ours - reference).max())
        if diff > atol:
            raise AssertionError(f"ONNX output differs from PyTorch by {diff:.2e} > {atol:.0e}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return diff


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fold an FFNet and export it to ONNX (checked).")
    parser.add_argument(
        "--checkpoint", help="a Lightning checkpoint of ImageClassifier (arch read from it)"
    )
    parser.add_argument("--arch", default="ffnet_1", help="timm model name (without --checkpoint)")
    parser.add_argument("--weights", help="local weights for --arch (authors' release or ours)")
    parser.add_argument("--num_classes", type=int, default=1000)
    parser.add_argument("--in_chans", type=int, default=3)
    parser.add_argument("--img_size", type=int, default=256)
    parser.add_argument("--out", required=True, help="output .onnx path")
    args = parser.parse_args(argv)
    if args.checkpoint:
        model = classifier_from_checkpoint(args.checkpoint)
    else:
        model = timm.create_model(args.arch, num_classes=args.num_classes, in_chans=args.in_chans)
        if args.weights:
            state = convert_official_state_dict(load_weights_file(args.weights))
            load_state_dict_strict(model, state, args.weights)
    in_chans = getattr(model, "in_chans", args.in_chans)
    diff = export_onnx(model, args.out, input_shape=(1, in_chans, args.img_size, args.img_size))
    print(f"wrote {args.out}; onnxruntime vs PyTorch max |diff| = {diff:.2e}")


if __name__ == "__main__":
    main()
