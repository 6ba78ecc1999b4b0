"""The export command's runtime targets end to end: a trained checkpoint exported as int8 with its
calibration summary and accuracy check, refused (and kept only on request) when the accuracy
drops beyond the tolerance, and refused on calibration data that cannot calibrate."""

import json

import pytest
from test_lit import cli_args

from metamixer.core.runtimes import AccuracyError, CalibrationError
from metamixer.vision.__main__ import main
from metamixer.vision.export import main as export

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.filterwarnings("ignore:skipping unreadable", "ignore:calibration")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny classifier fitted for two steps on the ImageNet-layout fixture."""
    from conftest import image_folder

    root = tmp_path_factory.mktemp("images")
    image_folder.__wrapped__(root)
    main(cli_args(root, root / "runs", "--trainer.limit_val_batches=1",
                        "--trainer.limit_test_batches=2"))  # fmt: skip
    return root, next((root / "runs").rglob("*.ckpt"))


def export_args(checkpoint, out, *extra):
    return ["--checkpoint", str(checkpoint), "--img_size", "64", "--out", str(out),
            "--calibration-batch-size", "2", "--calibration-batches", "3", *extra]  # fmt: skip


def test_int8_export_writes_the_model_its_calibration_summary_and_accuracy_check(
    checkpoint, tmp_path, capsys
):
    root, ckpt = checkpoint
    out = tmp_path / "m.onnx"
    export(export_args(ckpt, out, "--int8", "--calibration", str(root / "train"),
                       "--tolerance", "1"))  # fmt: skip
    assert out.is_file()
    summary = json.loads((tmp_path / "m.calibration.json").read_text())
    assert summary["calibration"]["inputs"] == 6 and summary["quantizer"] == "ort"
    assert summary["executed precisions"]["QLinearConv"]["int8"] > 0
    accuracy = json.loads((tmp_path / "m.accuracy.json").read_text())["accuracy"]
    assert accuracy["metric"] == "test/acc1" and accuracy["within tolerance"]
    assert 0 <= accuracy["measured"] <= 1 and 0 <= accuracy["reference"] <= 1
    assert "test/acc1" in capsys.readouterr().out


def test_int8_outside_the_tolerance_is_refused_unless_asked_and_says_by_how_much(
    checkpoint, tmp_path, capsys
):
    root, ckpt = checkpoint
    out = tmp_path / "m.onnx"
    args = export_args(ckpt, out, "--int8", "--calibration", str(root / "train"),
                       "--tolerance", "-2")  # fmt: skip
    with pytest.raises(AccuracyError, match=r"test/acc1: .* beyond the tolerance; .* not kept"):
        export(args)
    assert not out.exists()
    export([*args, "--allow-accuracy-drop"])
    assert out.is_file()
    accuracy = json.loads((tmp_path / "m.accuracy.json").read_text())["accuracy"]
    said = capsys.readouterr().out
    assert not accuracy["within tolerance"]
    assert f"{accuracy['drop'] + 2:.4g} beyond the tolerance; kept" in said


def test_calibration_data_that_cannot_calibrate_is_refused_before_exporting(checkpoint, tmp_path):
    root, ckpt = checkpoint
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "m.onnx"
    with pytest.raises(CalibrationError, match="holds no image files"):
        export(export_args(ckpt, out, "--int8", "--calibration", str(empty)))
    with pytest.raises(CalibrationError, match="fewer than one batch of 64"):
        export(export_args(ckpt, out, "--int8", "--calibration", str(root / "validation"),
                           "--calibration-batch-size", "64"))  # fmt: skip
    assert not out.exists()


@pytest.mark.slow
def test_openvino_int8_and_bf16_exports_are_checked_on_the_test_data(checkpoint, tmp_path):
    pytest.importorskip("nncf")
    root, ckpt = checkpoint
    for name, extra in (("int8", ["--int8", "--calibration", str(root / "train")]),
                        ("bf16", ["--precision", "bf16"])):  # fmt: skip
        out = tmp_path / f"{name}.xml"
        export(export_args(ckpt, out, "--format", "openvino", "--tolerance", "1", *extra))
        assert out.is_file() and out.with_suffix(".bin").is_file()
        report = json.loads((tmp_path / f"{name}.accuracy.json").read_text())
        assert report["precision"] == name and report["accuracy"]["within tolerance"]
    ran = json.loads((tmp_path / "int8.calibration.json").read_text())["executed precisions"]
    assert ran["Convolution"]["int8"] > 0
