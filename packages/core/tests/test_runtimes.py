"""Runtime targets: calibration data refused when it cannot calibrate, placements that decide what
runs in int8, operators a runtime keeps in float named, fp32 / bf16 checked against PyTorch."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from metamixer.core import runtimes
from metamixer.core.checkpoint import export_onnx

pytest.importorskip("onnxruntime")


def read_rgb(path):
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), np.float32) / 255).permute(
        2, 0, 1
    )


def write_images(folder, n, size=16):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
            folder / f"{i}.png"
        )
    return folder


def test_a_folder_without_readable_images_is_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(runtimes.CalibrationError, match="holds no image files"):
        runtimes.calibration_set(empty, read_rgb, batch_size=2)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("a.png", "b.jpg"):
        (broken / name).write_bytes(b"not an image")
    with (
        pytest.warns(UserWarning, match="skipping unreadable"),
        pytest.raises(runtimes.CalibrationError, match="none of its 2 image files"),
    ):
        runtimes.calibration_set(broken, read_rgb, batch_size=2)


def test_fewer_images_than_one_batch_is_refused_and_unreadable_ones_are_named(tmp_path):
    folder = write_images(tmp_path / "few", 3)
    (folder / "bad.png").write_bytes(b"broken")
    few = "3 inputs from 3 readable images, fewer than one batch of 4"
    with (
        pytest.warns(UserWarning, match="bad.png"),
        pytest.raises(runtimes.CalibrationError, match=few),
    ):
        runtimes.calibration_set(folder, read_rgb, batch_size=4)
    with pytest.warns(UserWarning, match="bad.png"):
        calibration = runtimes.calibration_set(folder, read_rgb, batch_size=2)
    summary = calibration.summary()
    assert summary["unreadable"] == ["bad.png"] and summary["images read"] == 3
    assert summary["batches"] == 1 and summary["input shape"] == [3, 16, 16]  # partial dropped


class ConvEinsum(nn.Module):
    """A conv, a GELU, a residual add, and a weighted einsum, which ONNX Runtime's quantizer
    cannot quantize."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.weight = nn.Parameter(torch.randn(8, 4) / 3)

    def forward(self, x):
        y = nn.functional.gelu(self.conv(x))
        y = y + self.dw(y)
        return torch.einsum("bchw,cd->bdhw", y, self.weight)


@pytest.fixture
def exported(tmp_path):
    torch.manual_seed(0)
    model = ConvEinsum().eval()
    path = tmp_path / "m.onnx"
    export_onnx(model, path, torch.rand(1, 3, 16, 16), torch.rand(2, 3, 16, 16),
                dynamic_axes={"input": {0: "b"}, "output": {0: "b"}})  # fmt: skip
    calibration = runtimes.calibration_set(
        write_images(tmp_path / "cal", 8), read_rgb, batch_size=4
    )
    return model, path, calibration


def test_an_operator_the_runtime_cannot_quantize_is_named_and_kept_float(exported, tmp_path):
    model, path, calibration = exported
    out = tmp_path / "q.onnx"
    runtimes.quantize(path, out, calibration, runtime="onnxruntime")
    kept = runtimes.kept_float(out, "onnxruntime", path)
    assert len(kept) == 1 and kept[0].startswith("Einsum ")
    ran = runtimes.executed_precisions(out, "onnxruntime")
    assert ran["QLinearConv"] == {"int8": 2} and "int8" not in ran["Einsum"]
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
    got = runtimes.load(out, "onnxruntime")(x.numpy())
    assert np.abs(got - ref.numpy()).max() < 0.1 * ref.abs().max().item()  # int8 error, bounded


def test_placement_decides_which_ops_run_in_int8(exported, tmp_path):
    _, path, calibration = exported
    ran = {}
    for placement in ("weighted", "all", "dense"):
        out = tmp_path / f"{placement}.onnx"
        runtimes.quantize(path, out, calibration, runtime="onnxruntime", placement=placement)
        ran[placement] = runtimes.executed_precisions(out, "onnxruntime")

    def int8(placement):
        return sum(counts.get("int8", 0) for counts in ran[placement].values())

    assert int8("all") > int8("weighted") > int8("dense")
    assert "QLinearMul" in ran["all"] and "QLinearMul" not in ran["weighted"]  # GELU's product
    assert ran["dense"]["QLinearConv"] == {"int8": 1} and ran["dense"]["Conv"] == {"fp32": 1}
    with pytest.raises(ValueError, match="choose one of weighted, all, dense"):
        runtimes.quantize(path, tmp_path / "x.onnx", calibration, runtime="onnxruntime",
                          placement="everywhere")  # fmt: skip


def test_openvino_fp32_matches_pytorch_and_bf16_is_asked_for_explicitly(exported, tmp_path):
    pytest.importorskip("openvino")
    model, path, _ = exported
    xml = runtimes.to_openvino(path, tmp_path / "m.xml")
    x = torch.rand(2, 3, 16, 16)
    fp32 = runtimes.max_difference(runtimes.load(xml, "openvino", "fp32"), model, x)
    bf16 = runtimes.max_difference(runtimes.load(xml, "openvino", "bf16"), model, x)
    assert fp32 < 1e-5 < bf16 < 0.1  # bf16 keeps 8 bits of mantissa: visible, small
    with pytest.raises(ValueError, match="bf16 is offered on openvino only"):
        runtimes.load(path, "onnxruntime", "bf16")
