"""Bad-input catalogue (vision): each case raises a specific exception naming the problem."""

import gzip

import pytest
import timm
import torch

import metamixer.vision  # noqa: F401
from metamixer.core import build_activation
from metamixer.vision import load_official_weights
from metamixer.vision.classification.data import (
    FashionMNISTDataModule,
    ImageFolderDataModule,
    read_idx,
)
from metamixer.vision.classification.lit import ImageClassifier
from metamixer.vision.export import export_classifier


def tiny():
    return timm.create_model("ffnet_test")


def truncated_checkpoint(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(tiny().state_dict(), path)
    path.write_bytes(path.read_bytes()[:500])
    return path


def other_variant(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"model": tiny().state_dict()}, path)
    return path


def mismatched_splits(image_folder):
    (image_folder / "validation" / "dog").rename(image_folder / "validation" / "wolf")
    dm = ImageFolderDataModule(str(image_folder), num_workers=0, img_size=64)
    dm.setup("fit")


def nan_training_batch():
    model = ImageClassifier(arch="ffnet_test", num_classes=3)
    images = torch.full((2, 3, 64, 64), float("nan"))
    model.training_step(
        {"image": images, "label": torch.tensor([0, 1]), "skipped": torch.tensor(0)}, 0
    )


CASES = {
    "wrong channel count": (lambda t, f: tiny()(torch.randn(1, 1, 64, 64)), ValueError, "in_chans"),
    "image smaller than the total stride": (
        lambda t, f: tiny()(torch.randn(1, 3, 16, 16)),
        ValueError,
        "too small",
    ),
    "unbatched image": (lambda t, f: tiny()(torch.randn(3, 64, 64)), ValueError, "shape"),
    "misspelled architecture argument": (
        lambda t, f: timm.create_model("ffnet_test", token_kernel=3),
        TypeError,
        "token_kernel",
    ),
    "unknown mixer": (
        lambda t, f: timm.create_model("ffnet_test", channel_mixers=["convnext"] * 3 + ["mlp"]),
        ValueError,
        "unknown channel mixer 'mlp' at stage 4; registered: convnext, ffn, identity",
    ),
    "mixer list of the wrong length": (
        lambda t, f: timm.create_model("ffnet_test", token_mixers=["ffnified"] * 3),
        ValueError,
        "token_mixers has 3 entries but the network has 4",
    ),
    "per-stage list of the wrong length": (
        lambda t, f: timm.create_model("ffnet_test", dims=(8, 16)),
        ValueError,
        "must match",
    ),
    "unknown activation": (
        lambda t, f: timm.create_model("ffnet_test", token_acts="gleu"),
        ValueError,
        "cannot take the coefficient activation 'gleu'; valid: gelu",
    ),
    "missing weights file": (
        lambda t, f: load_official_weights(tiny(), t / "none.pth"),
        FileNotFoundError,
        "no checkpoint",
    ),
    "truncated weights file": (
        lambda t, f: load_official_weights(tiny(), truncated_checkpoint(t)),
        ValueError,
        "cannot read",
    ),
    "checkpoint of another variant": (
        lambda t, f: load_official_weights(timm.create_model("ffnet_1"), other_variant(t)),
        ValueError,
        "does not fit",
    ),
    "missing Fashion-MNIST": (
        lambda t, f: FashionMNISTDataModule(root=str(t / "none")).setup("fit"),
        FileNotFoundError,
        "apt-get",
    ),
    "truncated idx file": (lambda t, f: read_idx(_truncate_idx(f)), ValueError, "truncated"),
    "val_size larger than the data": (
        lambda t, f: FashionMNISTDataModule(root=str(f), val_size=10_000).setup("fit"),
        ValueError,
        "val_size",
    ),
    "missing dataset root": (
        lambda t, f: ImageFolderDataModule(str(t / "x")).num_classes,
        FileNotFoundError,
        "ImageNet layout",
    ),
    "distillation without teacher weights": (
        lambda t, f: ImageClassifier(arch="ffnet_test", teacher="ffnet_test"),
        ValueError,
        "teacher_weights",
    ),
    "NaN images in training": (lambda t, f: nan_training_batch(), FloatingPointError, "non-finite"),
}


def _truncate_idx(root):
    path = root / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-50]))
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, tmp_path, fashion_root):
    fn, error, match = CASES[case]
    with pytest.raises(error, match=match):
        fn(tmp_path, fashion_root)


def test_class_folders_that_differ_between_splits(image_folder):
    with pytest.raises(ValueError, match="different class folders"):
        mismatched_splits(image_folder)


def test_activation_registry_lists_names():
    with pytest.raises(ValueError, match="gelu"):
        build_activation("Gelu", axis=1)


def test_failed_onnx_check_leaves_no_file(tmp_path):
    with pytest.raises(AssertionError, match="differs"):
        export_classifier(tiny(), tmp_path / "m.onnx", (1, 3, 64, 64), atol=-1.0)
    assert list(tmp_path.iterdir()) == []
