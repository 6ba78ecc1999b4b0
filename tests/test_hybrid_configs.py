"""Every modality's hybrid config (FFNified attention and self-attention in one network) trains a
few steps on the real offline data and is tested."""

import importlib
from pathlib import Path

import pytest

from metamixer.core import AttentionKey

EXP = Path(__file__).resolve().parents[1] / "experiments"
HYBRIDS = {
    "vision": ["vision/fashion_mnist_hybrid.yaml"],
    "timeseries": ["timeseries/base.yaml", "timeseries/elecdemand_hybrid.yaml"],
    "superres": ["superres/skimage_x2_hybrid.yaml"],
    "pointcloud": ["pointcloud/laspy_aerial_hybrid.yaml"],
}
LIMITS = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
          "--trainer.limit_test_batches=1", "--trainer.enable_progress_bar=false",
          "--trainer.logger=lightning.pytorch.loggers.CSVLogger"]  # fmt: skip


def small_sr_test_set(tmp_path: Path) -> list[str]:
    """A 64×64 crop of a held-out photo: windowless attention over whole images is quadratic."""
    import cv2

    photo = next((EXP.parent / "data/superres/skimage/heldout/HR").glob("*.png"))
    (tmp_path / "small/HR").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "small/HR/crop.png"), cv2.imread(str(photo))[:64, :64])
    return [f"--data.val_roots=[{tmp_path / 'small'}]", "--model.save_images=false"]


@pytest.mark.parametrize("modality", HYBRIDS)
def test_hybrid_config_trains_a_few_steps(modality, tmp_path):
    main = importlib.import_module(f"metamixer.{modality}.__main__").main
    configs = [arg for c in HYBRIDS[modality] for arg in ("--config", str(EXP / c))]
    extra = small_sr_test_set(tmp_path) if modality == "superres" else []
    cli = main(["fit", *configs, *LIMITS, *extra, f"--trainer.default_root_dir={tmp_path}",
                f"--trainer.logger.save_dir={tmp_path}"])  # fmt: skip
    assert any(isinstance(m, AttentionKey) for m in cli.model.modules())
    assert cli.trainer.global_step == 2
    assert any(k.startswith("test/") for k in cli.trainer.callback_metrics)
