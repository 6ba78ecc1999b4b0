"""Lightning training: the CLI end to end, EMA / mixup / distillation, fine-tuning, export."""

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import timm
import torch
import yaml
from ffnet_official_reference import official_layout, random_checkpoint

from metamixer.core import reparameterize_model
from metamixer.vision.__main__ import main
from metamixer.vision.backbone import classifier_from_checkpoint
from metamixer.vision.classification.data import ImageFolderDataModule
from metamixer.vision.classification.lit import ImageClassifier
from metamixer.vision.export import export_classifier


def cli_args(root, out, *extra):
    return [
        "fit",
        "--model.arch=ffnet_test",
        "--data=metamixer.vision.classification.data.ImageFolderDataModule",
        f"--data.root={root}",
        "--data.img_size=64",
        "--data.batch_size=6",
        "--data.num_workers=0",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={out}",
        *extra,
    ]


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_cli_fit_then_test_leaves_a_complete_run_directory(image_folder, tmp_path):
    out = tmp_path / "runs"
    cli = main(cli_args(image_folder, out, "--test_after_fit=true"))
    log_dir = cli.trainer.log_dir
    config = yaml.safe_load(Path(log_dir, "config.yaml").read_text())
    assert config["model"]["arch"] == "ffnet_test"
    assert config["data"]["class_path"].endswith("ImageFolderDataModule")
    hparams = yaml.safe_load(Path(log_dir, "hparams.yaml").read_text())
    assert hparams["num_classes"] == 3 and hparams["in_chans"] == 3  # linked from the data
    assert Path(log_dir).parent == out / "vision" / "default" and Path(log_dir).name.startswith(
        "fit-"
    )
    assert list(Path(log_dir, "checkpoints").glob("*.ckpt"))
    assert (Path(log_dir) / "metrics.csv").is_file() and (Path(log_dir) / "metrics.json").is_file()
    assert "test/acc1" in cli.trainer.callback_metrics
    assert (Path(log_dir) / "confusion_matrix.png").stat().st_size > 1000


def test_cli_rejects_a_misspelled_key(image_folder, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(cli_args(image_folder, tmp_path, "--model.lerning_rate=0.1"))
    assert "lerning_rate" in capsys.readouterr().err


def test_cli_help_lists_the_model_arguments():
    out = subprocess.run(
        [sys.executable, "-m", "metamixer.vision", "fit", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for arg in ("--model.arch", "--model.ema_decay", "--model.teacher", "--test_after_fit"):
        assert arg in out


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_ema_mixup_and_distillation_train(image_folder, tmp_path):
    teacher_path = tmp_path / "teacher.pth"
    torch.save(timm.create_model("ffnet_test", num_classes=3).state_dict(), teacher_path)
    model = ImageClassifier(
        arch="ffnet_test",
        num_classes=3,
        mixup=0.2,
        cutmix=1.0,
        ema_decay=0.9,
        teacher="ffnet_test",
        teacher_weights=str(teacher_path),
        warmup_epochs=0.5,
    )
    dm = ImageFolderDataModule(str(image_folder), batch_size=6, num_workers=0, img_size=64)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    before = [p.detach().clone() for p in model.ema.module.parameters()]
    trainer.fit(model, dm)
    assert {"val/acc1", "val_ema/acc1", "train/loss"} <= set(trainer.callback_metrics)
    after = list(model.ema.module.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    assert all(p.grad is None for p in model.teacher.parameters())


def test_distillation_needs_local_teacher_weights():
    with pytest.raises(ValueError, match="teacher_weights"):
        ImageClassifier(arch="ffnet_test", num_classes=3, teacher="ffnet_test")


def test_fine_tuning_from_official_weights_keeps_a_fresh_head(tmp_path):
    shapes = official_layout(
        (1, 1, 2, 1), (16, 32, 64, 128), channel_kernel=7, layer_scale=True, stem=16
    )
    state = random_checkpoint(shapes)
    path = tmp_path / "in1k.pth"
    torch.save({"model": state}, path)
    model = ImageClassifier(arch="ffnet_test", num_classes=10, init_weights=str(path))
    model.load_start_files()  # when the fit starts
    stem = model.model.stem[0].conv.weight
    torch.testing.assert_close(stem, state["patch_embed.0.c.weight"])
    assert model.model.head.weight.shape == (10, 128)


def test_rejects_images_with_the_wrong_channel_count():
    model = ImageClassifier(arch="ffnet_test", num_classes=3, in_chans=1)
    with pytest.raises(ValueError, match="in_chans"):
        model(torch.randn(2, 3, 64, 64))


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_checkpoint_to_onnx_round_trip(image_folder, tmp_path):
    cli = main(cli_args(image_folder, tmp_path, "--trainer.limit_val_batches=1"))
    ckpt = (
        cli.trainer.checkpoint_callback.best_model_path
        or cli.trainer.checkpoint_callback.last_model_path
    )
    export_classifier(classifier_from_checkpoint(ckpt), tmp_path / "m.onnx", (1, 3, 64, 64))
    import onnxruntime as ort

    trained = ImageClassifier.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = trained.eval()(images)
    (got,) = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"image": images.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-4, rtol=1e-4)


def test_channels_last_model_exports_to_onnx(tmp_path):
    model = reparameterize_model(timm.create_model("ffnet_test").eval())
    model = model.to(memory_format=torch.channels_last)  # the benchmark's deployment form
    assert export_classifier(model, tmp_path / "m.onnx", (1, 3, 64, 64)) < 1e-4


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_exports_rebuild_exactly_the_validated_networks(image_folder, tmp_path):
    """A distilled classifier is validated on the mean of its two heads and its EMA copy on one
    head: the raw and EMA exports (and their ONNX files) give those validation logits."""
    teacher = tmp_path / "teacher.pth"
    torch.save(timm.create_model("ffnet_test", num_classes=3).state_dict(), teacher)
    cli = main(cli_args(
        image_folder, tmp_path, "--model.teacher=ffnet_test", f"--model.teacher_weights={teacher}",
        "--model.ema_decay=0.5", "--trainer.limit_val_batches=1",
    ))  # fmt: skip
    ckpt = (
        cli.trainer.checkpoint_callback.last_model_path
        or cli.trainer.checkpoint_callback.best_model_path
    )
    lit = ImageClassifier.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    images = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        validated = {"raw": lit(images), "ema": lit.ema.module(images)}
        assert not torch.allclose(validated["raw"], lit.model(images))  # the heads differ
        for weights, expected in validated.items():
            exported = classifier_from_checkpoint(ckpt, weights)
            torch.testing.assert_close(exported(images), expected, atol=1e-5, rtol=1e-5)
            export_classifier(exported, tmp_path / weights / "m.onnx", (1, 3, 64, 64))
            import onnxruntime as ort

            session = ort.InferenceSession(str(tmp_path / weights / "m.onnx"))
            (got,) = session.run(None, {"image": images.numpy()})
            torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-4, rtol=1e-4)


def test_ema_export_of_a_checkpoint_without_ema_says_so(image_folder, tmp_path):
    cli = main(cli_args(image_folder, tmp_path, "--trainer.limit_val_batches=1"))
    ckpt = (
        cli.trainer.checkpoint_callback.last_model_path
        or cli.trainer.checkpoint_callback.best_model_path
    )
    with pytest.raises(ValueError, match=r"holds no ema weights .* trained without ema_decay"):
        classifier_from_checkpoint(ckpt, "ema")


def test_coreml_export_holds_the_folded_network(tmp_path):
    """The authors' mobile route: an ML program whose operations are the folded network's (one
    conv per folded conv, one GELU per activation, the final BatchNorm, the head)."""
    import copy

    from metamixer.core.checkpoint import export_coreml

    model = timm.create_model("ffnet_test", num_classes=10).eval()
    before = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    info = export_coreml(model, tmp_path / "sub" / "m.mlpackage", torch.randn(1, 3, 64, 64),
                         names=("image", "logits"))  # fmt: skip
    assert (tmp_path / "sub" / "m.mlpackage").is_dir()
    assert info["input"] == ("image", (1, 3, 64, 64)) and info["output"] == "logits"
    folded = reparameterize_model(copy.deepcopy(model))
    modules = list(folded.modules())
    assert info["ops"]["conv"] == sum(isinstance(m, torch.nn.Conv2d) for m in modules)
    assert info["ops"]["gelu"] == sum(isinstance(m, torch.nn.GELU) for m in modules)
    assert info["ops"]["batch_norm"] == 1 and info["ops"]["linear"] == 1
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == before  # untouched
