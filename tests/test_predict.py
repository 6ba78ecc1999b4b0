"""Prediction in every modality writes files: a trained checkpoint applied to the user's own files
with ``python -m metamixer.<modality>.predict CKPT INPUT`` (run here in-process)."""

import csv
import importlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metamixer.vision.classification.data import FASHION_MNIST_CLASSES

ROOT = Path(__file__).resolve().parents[1]
EXP, DATA = ROOT / "experiments", ROOT / "data"
LIMITS = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
          "--trainer.limit_test_batches=1", "--trainer.enable_progress_bar=false"]  # fmt: skip


def fit(modality: str, *args: str) -> Path:
    main = importlib.import_module(f"metamixer.{modality}.__main__").main
    cli = main(["fit", *args, *LIMITS])
    return Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"


def predict(modality: str, checkpoint: Path, source: Path) -> Path:
    importlib.import_module(f"metamixer.{modality}.predict").main([str(checkpoint), str(source)])
    (folder,) = checkpoint.parent.parent.parent.glob("predict-*/predictions")
    return folder


def photos(folder: Path, size=(40, 30)) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((*size, 3)) * 255).astype("uint8")).save(folder / f"p{i}.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.mark.filterwarnings("ignore:skipping unreadable file")
def test_vision_writes_top_k_classes_and_lists_unreadable_files(tmp_path):
    ckpt = fit("vision", "--config", str(EXP / "vision/fashion_mnist.yaml"))
    out = predict("vision", ckpt, photos(tmp_path / "photos"))
    rows = list(csv.DictReader((out / "predictions.csv").read_text().splitlines()))
    assert [r["input"] for r in rows] == ["p0.png", "p1.png", "p2.png"]
    probs = [float(rows[0][f"prob{i}"]) for i in range(1, 6)]
    assert probs == sorted(probs, reverse=True) and rows[0]["class1"] in FASHION_MNIST_CLASSES
    assert (out / "unreadable.txt").read_text().split() == ["broken.jpg"]


@pytest.mark.filterwarnings("ignore:skipping unreadable file")
def test_superres_upscales_a_single_file_and_a_folder_with_a_corrupt_image(tmp_path):
    data = DATA / "superres/skimage"
    ckpt = fit("superres", "--config", str(EXP / "superres/skimage_x2.yaml"),
               f"--data.train_root={data / 'train'}", f"--data.val_roots=[{data / 'heldout'}]",
               "--model.save_images=false", "--model.arch_args.depth=1")  # fmt: skip
    out = predict("superres", ckpt, photos(tmp_path / "photos"))
    assert sorted(p.name for p in out.glob("*.png")) == ["p0_x2.png", "p1_x2.png", "p2_x2.png"]
    assert Image.open(out / "p0_x2.png").size == (60, 80)
    assert (out / "unreadable.txt").read_text().split() == ["broken.jpg"]


def test_timeseries_forecasts_past_the_end_of_a_csv_and_names_the_variables(tmp_path):
    ckpt = fit("timeseries", "--config", str(EXP / "timeseries/base.yaml"), "--config",
               str(EXP / "timeseries/elecdemand.yaml"), f"--data.root={DATA / 'timeseries'}",
               "--model.arch_args.dim=8")  # fmt: skip
    series = (DATA / "timeseries/elecdemand.csv").read_text().splitlines()
    (tmp_path / "mine.csv").write_text("\n".join(series[:300]) + "\n")
    out = predict("timeseries", ckpt, tmp_path / "mine.csv")
    rows = list(csv.reader((out / "forecast.csv").read_text().splitlines()))
    assert rows[0] == ["date", "WorkDay", "Temperature", "Demand"] and len(rows) == 1 + 96
    last = series[299].split(",")[0].strip('"')
    assert rows[1][0] > last.replace(" ", "T")  # the forecast starts after the series
    assert (out / "forecast.png").stat().st_size > 1000
    (tmp_path / "other.csv").write_text("date,a,b\n2020-01-01,1,2\n")
    with pytest.raises(ValueError, match=r"variables \['a', 'b'\] but the model was trained on"):
        predict("timeseries", ckpt, tmp_path / "other.csv")


def test_pointcloud_writes_the_laz_back_with_predicted_classes(tmp_path):
    import laspy

    from metamixer.pointcloud.data import ASPRS_DEFAULT_MAP

    tile = DATA / "pointcloud/laspy/file_with_both_wkt_and_geotiff_vlrs.las"
    ckpt = fit(
        "pointcloud", "--config", str(EXP / "pointcloud/laspy_aerial.yaml"), f"--data.path={tile}"
    )
    laspy.read(tile).write(str(tmp_path / "tile.laz"))
    out = predict("pointcloud", ckpt, tmp_path / "tile.laz")
    original, labelled = laspy.read(tile), laspy.read(out / "tile.laz")
    assert len(labelled.points) == len(original.points)
    np.testing.assert_array_equal(labelled.x, original.x)
    assert set(np.unique(labelled.classification)) <= {
        min(a for a, v in ASPRS_DEFAULT_MAP.items() if v == k) for k in range(3)
    }
