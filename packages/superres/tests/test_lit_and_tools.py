"""Lightning training, evaluation tables, folder prediction and ONNX export of FFNet-SR."""

import json
from pathlib import Path

import cv2
import pytest
import torch
from sr_test_images import smooth_image

from metamixer.superres.__main__ import main
from metamixer.superres.tools import evaluate, export_sr, load_model, predict_folder
from metamixer.superres.tools import main as tools


@pytest.fixture
def train_root(tmp_path):
    root = tmp_path / "train"
    (root / "HR").mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(root / "HR" / f"{i:04d}.png"), smooth_image(64, 64, seed=10 + i))
    return root


def fit_args(train_root, val_root, out, *extra):
    return [
        "fit", f"--data.train_root={train_root}", f"--data.val_roots=[{val_root}]",
        "--data.gt_size=32", "--data.batch_size=2", "--data.repeat=2",
        "--model.arch=ffnet_sr_test", "--model.arch_args.depth=1", "--trainer.max_epochs=2",
        "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={out}", *extra,
    ]  # fmt: skip


def test_cli_fit_test_and_tools(train_root, hr_folder, tmp_path):
    cli = main(fit_args(train_root, hr_folder, tmp_path / "runs", "--test_after_fit=true",
                        "--model.save_images=true"))  # fmt: skip
    metrics = cli.trainer.callback_metrics
    assert {"test/Set3/psnr", "test/Set3/ssim", "test/Set3/bicubic_psnr"} <= set(metrics)
    strips = list(Path(cli.trainer.log_dir, "images", "Set3").glob("*_bicubic_ours_hr.png"))
    assert len(strips) == 3
    ckpt = (
        cli.trainer.checkpoint_callback.last_model_path
        or cli.trainer.checkpoint_callback.best_model_path
    )
    model = load_model(ckpt)
    rows = evaluate(model, [hr_folder], 2, tile=None, save=None)
    assert rows[0][0] == "Set3"
    assert rows[0][3] == pytest.approx(float(metrics["test/Set3/bicubic_psnr"]), abs=1e-3)
    out, unreadable = predict_folder(model, hr_folder / "HR", tmp_path / "sr", 2, tile=24)
    assert len(out) == 3 and not unreadable and cv2.imread(str(out[0])).shape == (96, 128, 3)
    assert export_sr(model, tmp_path / "sr.onnx") < 1e-4
    int8 = tmp_path / "sr-int8.onnx"
    tools(["export", "--checkpoint", ckpt, "--out", str(int8), "--int8", "--calibration",
           str(train_root / "HR"), "--calibration-patch", "16", "--calibration-batch-size", "4",
           "--tolerance", "50"])  # fmt: skip
    check = json.loads((tmp_path / "sr-int8.accuracy.json").read_text())["accuracy"]
    assert check["metric"] == "test/Set3/psnr" and check["within tolerance"]
    assert check["reference"] == pytest.approx(float(metrics["test/Set3/psnr"]), abs=1e-3)
    summary = json.loads((tmp_path / "sr-int8.calibration.json").read_text())["calibration"]
    assert summary["input shape"] == [3, 16, 16] and summary["inputs"] == 8  # 2 photos × 2 × 2


def test_model_and_bicubic_psnr_follow_the_published_protocol(hr_folder):
    """The model's and bicubic's ×2 PSNR on a benchmark-layout folder equal an independent
    computation (8-bit quantisation, BT.601 Y, border cropped); the model here is nearest-neighbour
    upsampling, so the two columns must differ."""
    import numpy as np

    def bicubic(x):
        return torch.nn.functional.interpolate(
            x, scale_factor=2, mode="bicubic", align_corners=False
        )

    class Nearest(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    rows = evaluate(Nearest(), [hr_folder], 2, tile=None, save=None)
    from metamixer.superres.data import PairedImages

    def luma(t):  # 8-bit quantisation, BT.601 Y in [16, 235], border of 2 cropped
        q = (t * 255).round()
        return (16 + (65.481 * q[0] + 128.553 * q[1] + 24.966 * q[2]) / 255)[2:-2, 2:-2].double()

    def psnr(sr, hr):
        return 10 * np.log10(255**2 / float(((luma(sr) - luma(hr)) ** 2).mean()))

    pairs = PairedImages(hr_folder, 2)
    ours, base = [], []
    for i in range(len(pairs)):
        lr, hr = pairs[i]["lr"][None], pairs[i]["hr"]
        ours.append(psnr(Nearest()(lr)[0].clamp(0, 1), hr))
        base.append(psnr(bicubic(lr)[0].clamp(0, 1), hr))
    assert rows[0][1] == pytest.approx(float(np.mean(ours)), abs=0.01)
    assert rows[0][3] == pytest.approx(float(np.mean(base)), abs=0.01)
    assert abs(rows[0][1] - rows[0][3]) > 0.1
