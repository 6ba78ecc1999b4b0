"""Semantic segmentation: the ADE20K / Cityscapes layouts, the inference protocol, mmseg's metrics,
the UperNet / FPN networks and the CLI end to end."""

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from metamixer.core import build_network, count_params
from metamixer.vision.export import main as export_main
from metamixer.vision.segmentation.__main__ import main
from metamixer.vision.segmentation.data import (
    IGNORE,
    ADE20KDataModule,
    CityscapesDataModule,
)
from metamixer.vision.segmentation.inference import confusion_metrics, segment
from metamixer.vision.segmentation.lit import SemanticSegmenter, layer_ids


def write_ade(root: Path, sizes=((48, 40), (64, 72), (40, 56)), classes=4) -> Path:
    """An ADE20K tree: labels 0 (other) … ``classes`` drawn as horizontal bands."""
    root = root / "ADEChallengeData2016"
    rng = np.random.default_rng(0)
    for folder in ("training", "validation"):
        (root / "images" / folder).mkdir(parents=True)
        (root / "annotations" / folder).mkdir(parents=True)
        for i, (h, w) in enumerate(sizes):
            label = (np.arange(h)[:, None] * (classes + 1) // h).repeat(w, 1).astype(np.uint8)
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            image[..., 0] = label * 50  # the class is visible in the red channel
            Image.fromarray(image).save(root / "images" / folder / f"ADE_{folder}_{i}.jpg")
            Image.fromarray(label).save(root / "annotations" / folder / f"ADE_{folder}_{i}.png")
    names = ["Idx\tRatio\tTrain\tVal\tName"] + [
        f"{i}\t0.1\t1\t1\tthing{i};other" for i in range(1, classes + 1)
    ]
    (root / "objectInfo150.txt").write_text("\n".join(names) + "\n")
    return root


def ade(root: Path, **kwargs) -> ADE20KDataModule:
    args = dict(crop_size=64, scale=48, batch_size=2, val_batch_size=1, num_workers=0)
    return ADE20KDataModule(str(root), **{**args, **kwargs})


def test_ade20k_layout_reduces_the_zero_label_and_names_the_classes(tmp_path):
    dm = ade(write_ade(tmp_path))
    assert dm.num_classes == 4 and dm.classes == ("thing1", "thing2", "thing3", "thing4")
    dm.setup("fit")
    sample = dm.splits["val"][0]
    raw = np.asarray(Image.open(dm.splits["val"].pairs[0][1]))
    expected = np.where(raw == 0, IGNORE, raw.astype(np.int64) - 1)
    assert sample["image"].shape == (3, 48, 40) and sample["image"].dtype == torch.float32
    np.testing.assert_array_equal(sample["label"].numpy(), expected)


def test_training_crops_of_small_images_are_padded_with_the_ignore_label(tmp_path):
    dm = ade(write_ade(tmp_path), scale=20, ratio_range=(1.0, 1.0))  # short side 20 < crop 64
    dm.setup("fit")
    torch.manual_seed(0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 64, 64) and batch["label"].shape == (2, 64, 64)
    labels = batch["label"]
    assert (labels == IGNORE).float().mean() > 0.5  # the padding
    assert set(labels.unique().tolist()) <= {0, 1, 2, 3, IGNORE}


def test_cityscapes_layout_reads_train_ids(tmp_path):
    for split in ("train", "val"):
        images = tmp_path / "leftImg8bit" / split / "aachen"
        labels = tmp_path / "gtFine" / split / "aachen"
        images.mkdir(parents=True)
        labels.mkdir(parents=True)
        Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(
            images / "aachen_000000_000019_leftImg8bit.png"
        )
        label = np.full((32, 64), 255, np.uint8)
        label[:16] = 18
        Image.fromarray(label).save(labels / "aachen_000000_000019_gtFine_labelTrainIds.png")
    dm = CityscapesDataModule(str(tmp_path), crop_size=64, scale=32, num_workers=0)
    dm.setup("validate")
    sample = dm.splits["val"][0]
    assert dm.num_classes == 19
    assert sample["label"][0, 0] == 18 and sample["label"][-1, 0] == IGNORE


@pytest.mark.parametrize(
    "problem, message",
    [
        ("size", "must be the same size"),
        ("values", "outside the 4 classes"),
        ("missing", "have no label"),
        ("rgb", "one class index per pixel"),
    ],
)
def test_bad_labels_are_named(tmp_path, problem, message):
    root = write_ade(tmp_path)
    label = root / "annotations" / "validation" / "ADE_validation_0.png"
    if problem == "size":
        Image.fromarray(np.ones((10, 10), np.uint8)).save(label)
    elif problem == "values":
        Image.fromarray(np.full((48, 40), 9, np.uint8)).save(label)
    elif problem == "missing":
        label.unlink()
    else:
        Image.fromarray(np.zeros((48, 40, 3), np.uint8)).save(label)
    dm = ade(root)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as err:
        dm.setup("validate")  # sizes and label modes: at setup, from the file headers
        assert problem == "values"
        dm.splits["val"][0]
    if problem != "missing":
        assert "ADE_validation_0.png" in str(err.value)


def own_set(tmp_path: Path) -> Path:
    """An ADE-layout set of one's own: PNG photos, no objectInfo150.txt."""
    root = write_ade(tmp_path)
    (root / "objectInfo150.txt").unlink()
    for photo in root.glob("images/*/*.jpg"):
        Image.open(photo).save(photo.with_suffix(".png"))
        photo.unlink()
    return root


def test_an_own_ade_layout_set_takes_its_class_count_or_names(tmp_path):
    root = own_set(tmp_path)
    with pytest.raises(ValueError, match=r"no objectInfo150.txt .* --data.num_classes N"):
        _ = ade(root).num_classes
    dm = ade(root, num_classes=4)
    assert dm.classes == ("0", "1", "2", "3")
    dm.setup("fit")
    assert len(dm.splits["train"]) == 3 and dm.splits["val"][0]["image"].shape == (3, 48, 40)
    (tmp_path / "names.txt").write_text("sky\ntree\nroad\ncar\n")
    assert ade(root, class_file=str(tmp_path / "names.txt")).classes == (
        "sky",
        "tree",
        "road",
        "car",
    )
    with pytest.raises(ValueError, match=r"num_classes=5 but .*names.txt names 4 classes"):
        _ = ade(root, num_classes=5, class_file=str(tmp_path / "names.txt")).classes
    cli = main(["--model.arch=fpn_ffnet_test",
                "--data=metamixer.vision.segmentation.data.ADE20KDataModule",
                f"--data.root={root}", "--data.num_classes=4"], run=False)  # fmt: skip
    assert cli.model.hparams.num_classes == 4


def pointwise_network(classes=3):
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, classes, 1).eval()


def test_sliding_window_and_flip_agree_with_whole_image_for_a_pointwise_network():
    net, image = pointwise_network(), torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        exact = net(image).softmax(1)
        for kwargs in (
            dict(mode="whole"),
            dict(mode="slide", crop=64, stride=40),
            dict(mode="whole", flip=True),
        ):
            torch.testing.assert_close(segment(net, image, **kwargs), exact)


def test_multi_scale_inference_returns_probabilities_at_the_input_size():
    net, image = pointwise_network(), torch.randn(2, 3, 50, 60)
    with torch.no_grad():
        probs = segment(net, image, scale=64, ratios=(0.5, 1.0, 1.5), flip=True)
    assert probs.shape == (2, 3, 50, 60)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 50, 60))


def test_metrics_follow_the_mmseg_definitions():
    confusion = torch.tensor([[3, 1, 0], [2, 4, 0], [0, 0, 0]])  # class 2 absent everywhere
    m = confusion_metrics(confusion)
    assert math.isclose(m["IoU"][0], 3 / 6) and math.isclose(m["IoU"][1], 4 / 7)
    assert math.isnan(m["IoU"][2]) and math.isnan(m["Acc"][2])
    assert math.isclose(m["mIoU"], (3 / 6 + 4 / 7) / 2)
    assert math.isclose(m["mAcc"], (3 / 4 + 4 / 6) / 2)
    assert math.isclose(m["aAcc"], 7 / 10)


@pytest.mark.parametrize(
    "name, paper",
    [
        ("upernet_ffnet_2", 58),
        ("upernet_ffnet_3", 80),
        pytest.param("upernet_ffnet_4", 113, marks=pytest.mark.slow),
    ],
)
def test_upernet_sizes_match_the_paper(name, paper):
    """The paper's ADE20K table: 58 / 80 / 113 M parameters (UperNet with the recipe's auxiliary
    FCN head, as mmseg counts them)."""
    module = SemanticSegmenter(name, num_classes=150, aux_channels=256)
    assert round(count_params(module) / 1e6) == paper


def test_networks_give_input_sized_logits_and_their_feature_maps():
    for name, widths in (
        ("upernet_ffnet_test", [16, 32, 64, 128]),
        ("fpn_ffnet_test", [16, 32, 64, 128]),
        ("ffnet_seg_test", [24, 32, 48]),
    ):
        net = build_network(name, {"num_classes": 4, "in_chans": 3}).eval()
        with torch.no_grad():
            logits, features = net.forward_with_features(torch.randn(1, 3, 96, 64))
        assert logits.shape == (1, 4, 96, 64)
        assert net.feature_channels == widths == [f.shape[1] for f in features]
        assert [f.shape[-1] for f in features[-2:]] == [4, 2]  # strides 16 and 32
    with pytest.raises(ValueError, match="multiple of 32"):
        build_network("fpn_ffnet_test", {"num_classes": 4, "in_chans": 3})(
            torch.randn(1, 3, 50, 64)
        )


def test_backbone_starts_from_a_classification_checkpoint(tmp_path):
    classifier = timm.create_model("ffnet_test", num_classes=7)
    torch.save({"state_dict": classifier.state_dict()}, tmp_path / "cls.pth")
    module = SemanticSegmenter(
        "upernet_ffnet_test", num_classes=4, init_backbone=str(tmp_path / "cls.pth")
    )
    module.load_start_files()  # when the fit starts
    got = module.model.backbone.state_dict()[
        "model.stages.2.blocks.1.token.mixer.query.conv.weight"
    ]
    torch.testing.assert_close(
        got, classifier.state_dict()["stages.2.blocks.1.token.mixer.query.conv.weight"]
    )
    other = timm.create_model("ffnet_1", num_classes=7)
    torch.save(other.state_dict(), tmp_path / "other.pth")
    with pytest.raises(ValueError, match="does not fit"):
        SemanticSegmenter(
            "upernet_ffnet_test", num_classes=4, init_backbone=str(tmp_path / "other.pth")
        ).load_start_files()


def test_layer_wise_decay_lowers_the_learning_rate_towards_the_stem():
    module = SemanticSegmenter(
        "upernet_ffnet_test", num_classes=4, layer_decay=0.5, num_layers=4, head_lr_mult=10
    )
    ids = layer_ids(module.model.backbone, 4)
    assert ids["model.stem.0.conv.weight"] == 0
    assert ids["model.stages.3.blocks.0.channel.mixer.key.weight"] == 3
    assert (
        ids["model.stages.1.downsample.0.large.conv.weight"]
        == ids["model.stages.1.blocks.0.token.mixer.query.conv.weight"]
    )
    lrs = {id(p): g["lr"] for g in module.param_groups() for p in g["params"]}
    stem = module.model.backbone.model.stem[0].conv.weight
    last = module.model.backbone.model.stages[3].blocks[0].channel.mixer.key.weight
    head = module.model.net.segmentation_head[0].weight
    assert lrs[id(stem)] == pytest.approx(1e-4 * 0.5**4)
    assert lrs[id(last)] == pytest.approx(1e-4 * 0.5)
    assert lrs[id(head)] == pytest.approx(1e-3)


def test_cli_fits_tests_and_predicts_palette_pngs(tmp_path):
    root = write_ade(tmp_path / "data")
    out = tmp_path / "runs"
    common = [
        "--model.arch=fpn_ffnet_test",
        "--model.test_scale=null",
        "--data=metamixer.vision.segmentation.data.ADE20KDataModule",
        f"--data.root={root}",
        "--data.crop_size=64",
        "--data.scale=64",
        "--data.num_workers=0",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={out}",
    ]
    cli = main(["fit", *common, "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
                "--test_after_fit=true"])  # fmt: skip
    log_dir = Path(cli.trainer.log_dir)
    assert cli.model.hparams.num_classes == 4  # linked from the data
    metrics = cli.trainer.callback_metrics
    assert {"test/mIoU", "test/mAcc", "test/aAcc"} <= set(metrics)
    assert all(0 <= metrics[k] <= 1 for k in ("test/mIoU", "test/aAcc"))
    rows = (log_dir / "per_class.csv").read_text().splitlines()
    assert rows[0] == "class,IoU,Acc" and rows[1].startswith("thing1,") and len(rows) == 5
    checkpoint = next((log_dir / "checkpoints").glob("*.ckpt"))
    export_main(
        ["--checkpoint", str(checkpoint), "--img_size=64", f"--out={tmp_path / 'seg.onnx'}"]
    )
    assert (tmp_path / "seg.onnx").stat().st_size > 10_000  # folded, checked with onnxruntime
    photos = tmp_path / "photos"  # the validation photos and one corrupt file, alone in a batch
    shutil.copytree(root / "images" / "validation", photos)
    (photos / "0_broken.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="skipping unreadable file .*0_broken.jpg"):
        cli = main(
            ["predict", *common, f"--ckpt_path={checkpoint}", f"--data.predict_path={photos}"]
        )
    written = Path(cli.trainer.log_dir) / "predictions" / "ADE_validation_1.png"
    unreadable = written.parent / "unreadable.txt"
    assert unreadable.read_text() == "0_broken.jpg\n"
    assert not (written.parent / "image0.png").exists()
    with Image.open(written) as png:
        assert png.mode == "P" and png.size == (72, 64)
        assert set(np.unique(np.asarray(png))) <= {1, 2, 3, 4}  # the annotations' convention


def test_backbone_starts_from_the_authors_release_layout(tmp_path):
    """Their ImageNet file (checked against their forward pass in test_weights) seeds the backbone:
    its feature maps are the classifier's intermediates."""
    from ffnet_official_reference import layout_of, random_checkpoint

    from metamixer.vision import load_official_weights

    torch.save({"model": random_checkpoint(layout_of("ffnet_test"), seed=2)}, tmp_path / "o.pth")
    module = SemanticSegmenter(
        "upernet_ffnet_test", num_classes=4, init_backbone=str(tmp_path / "o.pth")
    )
    module.load_start_files()
    classifier = load_official_weights(timm.create_model("ffnet_test"), tmp_path / "o.pth").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = module.model.backbone.eval()(x)
        expected = classifier.forward_intermediates(x, intermediates_only=True)
    for got, want in zip(features, expected, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("arch", ["upernet_ffnet_test", "fpn_ffnet_test", "ffnet_seg_test"])
def test_a_training_step_of_each_network_kind(arch):
    """Cross-entropy over labelled pixels only (+ 0.4 × the auxiliary head's); a crop with no
    labelled pixel gives 0, not NaN; every parameter of network and auxiliary head learns."""
    torch.manual_seed(0)
    module = SemanticSegmenter(arch, num_classes=4, head_lr_mult=10, aux_channels=16)
    labels = torch.randint(0, 4, (2, 64, 64))
    labels[1] = IGNORE
    loss = module.training_step({"image": torch.randn(2, 3, 64, 64), "label": labels}, 0)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert all(p.grad is not None for p in module.parameters())
    empty = module.training_step(
        {"image": torch.randn(2, 3, 64, 64), "label": torch.full((2, 64, 64), IGNORE)}, 0
    )
    assert empty.item() == 0
    backbone = {id(p) for p in module.model.backbone.parameters()}
    lrs = {g["lr"] for g in module.param_groups() if id(g["params"][0]) not in backbone}
    assert lrs == {1e-3}  # everything outside the backbone at head_lr_mult × lr
