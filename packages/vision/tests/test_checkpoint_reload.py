"""A checkpoint is tested, predicted and exported after the files that started its fit (pretrained
backbone, fine-tuning weights, a teacher's weights) were deleted or moved: rebuilding the module for
a checkpoint never reads them again."""

from pathlib import Path

import lightning
import pytest
import timm
import torch
import yaml

from metamixer.vision.backbone import build_classifier, classifier_from_checkpoint
from metamixer.vision.classification.lit import ImageClassifier
from metamixer.vision.detection.lit import Detector
from metamixer.vision.segmentation.lit import SemanticSegmenter

EXP = Path(__file__).resolve().parents[3] / "experiments"


def classifier_file(path: Path, write: bool, **task) -> str:
    if write:
        torch.save(timm.create_model("ffnet_test", **task).state_dict(), path)
    return str(path)


def save_checkpoint(module: lightning.LightningModule, path: Path) -> Path:
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )
    return path


BUILD = {
    "classifier": lambda t, w=True: ImageClassifier(
        arch="ffnet_test", num_classes=3, init_weights=classifier_file(t / "a.pth", w, num_classes=3),
        teacher="ffnet_test", teacher_weights=classifier_file(t / "b.pth", w, num_classes=3),
    ),
    "segmenter": lambda t, w=True: SemanticSegmenter(
        "upernet_ffnet_test", num_classes=4, init_backbone=classifier_file(t / "a.pth", w)
    ),
    "detector": lambda t, w=True: Detector(
        "ffnet_test", 3, init_backbone=classifier_file(t / "a.pth", w),
        detector_args={"fpn_channels": 16, "box_head_dim": 32, "mask_head_dim": 16},
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(BUILD))
def test_load_from_checkpoint_does_not_read_the_fit_start_files(kind, tmp_path):
    module = BUILD[kind](tmp_path)
    module.load_start_files()  # what a fit does when it starts without a checkpoint
    ckpt = save_checkpoint(module, tmp_path / "run.ckpt")
    for start_file in tmp_path.glob("*.pth"):
        start_file.unlink()  # the user deleted the pretrained files after training
    restored = type(module).load_from_checkpoint(ckpt, map_location="cpu")
    for key, value in module.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[key], value, msg=key)
    assert restored.hparams == module.hparams  # the run's record still names the files
    if kind == "classifier":
        network = classifier_from_checkpoint(ckpt)  # export / analysis path
        assert network.head.weight.shape == (3, 128)
    fresh = BUILD[kind](tmp_path, False)  # the constructor reads no file
    with pytest.raises(FileNotFoundError, match=r"a\.pth"):  # a new run still reads them
        fresh.load_start_files()


def test_testing_a_checkpoint_through_the_cli_after_its_init_weights_moved(
    tmp_path, fashion_root, monkeypatch
):
    from metamixer.vision.__main__ import main

    monkeypatch.chdir(tmp_path)
    config = EXP / "vision/fashion_mnist.yaml"
    arch_args = yaml.safe_load(config.read_text())["model"]["arch_args"]
    start = tmp_path / "pretrained.pth"
    net = build_classifier("ffnet_1", {"num_classes": 10, "in_chans": 1}, arch_args)
    torch.save(net.state_dict(), start)
    data = [f"--data.init_args.root={fashion_root}", "--data.init_args.val_size=16",
            "--data.init_args.batch_size=16"]  # fmt: skip
    fit = main(["fit", "--config", str(config), *data, f"--model.init_weights={start}",
                "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
                "--trainer.limit_val_batches=1", "--test_after_fit=false",
                "--trainer.enable_progress_bar=false"])  # fmt: skip
    run = Path(fit.trainer.log_dir or fit.trainer.default_root_dir)
    start.unlink()
    test = main(["test", "--config", str(run / "config.yaml"), *data,
                 f"--ckpt_path={run / 'checkpoints/last.ckpt'}", "--trainer.limit_test_batches=1"])  # fmt: skip
    assert "test/acc1" in test.trainer.callback_metrics
    assert test.model.hparams.init_weights == str(start)
