"""Accuracy of the runtime targets on data: bf16 and int8 against the fp32 PyTorch network of the
same trained checkpoint, through the export commands exactly as a user runs them.

    .venv/bin/python benchmarks/runtime_accuracy.py classification RUN/checkpoints/last.ckpt \
        --calibration data/vision/fashion_mnist_images --records results/records/cpu/runtime-accuracy
    … segmentation RUN/checkpoints/last.ckpt --calibration data/vision/scenes/ADEChallengeData2016/images/training
    … superres RUN/checkpoints/last.ckpt --calibration data/superres/skimage/train/HR

Each target is one export command (``--allow-accuracy-drop``, so that a target outside the
tolerance is measured too); its ``<out>.accuracy.json`` (the checkpoint's test metric, fp32 and
the target's) and ``<out>.calibration.json`` (int8: what ran in int8, what stayed float) become
one record per target.  Metrics in points (top-1, mIoU) or dB (PSNR).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from records import print_table, run_name, save_rows

#: task -> (command, its arguments besides the checkpoint, the metric's label and unit scale)
TASKS = {
    "classification": (["-m", "metamixer.vision.export"], ["--img_size", "32"], "top-1 (%)", 100),
    "segmentation": (["-m", "metamixer.vision.export"], ["--img_size", "256"], "mIoU (%)", 100),
    "superres": (["-m", "metamixer.superres.tools", "export"], [], "PSNR (dB)", 1),
}
#: target -> export arguments
TARGETS = {
    "openvino bf16": ["--format", "openvino", "--precision", "bf16"],
    "openvino int8 (ORT QDQ, weighted ops)": ["--format", "openvino", "--int8", "--quantizer",
                                              "ort", "--placement", "weighted"],
    "openvino int8 (ORT QDQ, all ops)": ["--format", "openvino", "--int8", "--quantizer", "ort",
                                         "--placement", "all"],
    "openvino int8 (NNCF performance)": ["--format", "openvino", "--int8", "--quantizer", "nncf",
                                         "--placement", "weighted"],
    "openvino int8 (NNCF mixed)": ["--format", "openvino", "--int8", "--quantizer", "nncf-mixed",
                                   "--placement", "weighted"],
    "onnxruntime int8 (ORT QDQ, weighted ops)": ["--format", "onnx", "--int8", "--quantizer",
                                                 "ort", "--placement", "weighted"],
    "onnxruntime int8 (ORT QDQ, all ops)": ["--format", "onnx", "--int8", "--quantizer", "ort",
                                            "--placement", "all"],
    "onnxruntime int8 (ORT QDQ, depthwise float)": ["--format", "onnx", "--int8", "--quantizer",
                                                    "ort", "--placement", "dense"],
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=list(TASKS))
    parser.add_argument("checkpoint")
    parser.add_argument("--calibration", required=True, help="folder of training images")
    parser.add_argument("--calibration-batches", type=int, default=16)
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    parser.add_argument("--records", help="write a record per target under FOLDER/<task>")
    args = parser.parse_args()
    command, task_args, label, scale = TASKS[args.task]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for order, target in enumerate(args.targets):
            extra = TARGETS[target]
            out = Path(tmp) / f"m{order}{'.xml' if 'openvino' in extra else '.onnx'}"
            cmd = [sys.executable, *command, "--checkpoint", args.checkpoint, *task_args,
                   "--out", str(out), "--calibration", args.calibration,
                   "--calibration-batches", str(args.calibration_batches),
                   "--allow-accuracy-drop", *extra]  # fmt: skip
            print(f"{target}: {' '.join(cmd[1:])}", flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            report = json.loads(out.with_name(f"{out.stem}.accuracy.json").read_text())
            check = report["accuracy"]
            summary_file = out.with_name(f"{out.stem}.calibration.json")
            summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
            if not rows:  # the reference, from the first target's check
                rows.append({"group": {"task": args.task, "metric": label,
                                       "target": "torch fp32 (validated network)"},
                             "metrics": {"value": scale * check["reference"]},
                             "checkpoint": args.checkpoint})  # fmt: skip
            rows.append({
                "group": {"task": args.task, "metric": label, "target": target},
                "metrics": {"value": scale * check["measured"], "Δ vs fp32": -scale * check["drop"],
                            "tolerance": scale * check["tolerance"],
                            "within": float(check["within tolerance"])},
                "checkpoint": args.checkpoint, "command": cmd[1:], "report": report,
                "calibration summary": summary,
            })  # fmt: skip
    print_table(rows)
    if args.records:
        save_rows(Path(args.records) / args.task, rows, run_name())


if __name__ == "__main__":
    main()
