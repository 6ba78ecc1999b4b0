import gzip

import numpy as np
import pytest
import torch

from metamixer.vision.classification.data import (
    FashionMNISTDataModule,
    ImageFolder,
    ImageFolderDataModule,
    read_idx,
)


def test_fashion_mnist_splits_and_shapes(fashion_root):
    dm = FashionMNISTDataModule(root=str(fashion_root), batch_size=16, val_size=16)
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 80, "val": 16, "test": 40}
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (16, 1, 32, 32) and batch["label"].dtype == torch.long
    raw = read_idx(fashion_root / "t10k-images-idx3-ubyte.gz")
    first = next(iter(dm.test_dataloader()))["image"][0, 0, 2:30, 2:30]
    expected = (torch.from_numpy(raw[0].astype(np.float32)) / 255 - dm.mean) / dm.std
    torch.testing.assert_close(first, expected)


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    dm = FashionMNISTDataModule(root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        dm.setup("fit")


def test_truncated_idx_file_is_reported(fashion_root):
    path = fashion_root / "train-images-idx3-ubyte.gz"
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[:-100]))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)


def test_not_an_idx_file(tmp_path):
    path = tmp_path / "x-ubyte"
    path.write_bytes(b"PK\x03\x04 zip")
    with pytest.raises(ValueError, match="idx header"):
        read_idx(path)


def test_image_folder_skips_unreadable_images_with_a_warning(image_folder):
    dm = ImageFolderDataModule(
        str(image_folder), batch_size=32, num_workers=0, img_size=64, val_split="train"
    )  # the training images, read in order as an evaluation split
    assert dm.num_classes == 3 and dm.classes == ["cat", "dog", "fish"]
    dm.setup("fit")
    with pytest.warns(UserWarning, match="broken.jpg"):
        batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (19, 3, 64, 64)  # the broken file's place is filled
    assert batch["skipped"].item() == 1


def test_empty_class_folder_and_missing_root(image_folder, tmp_path):
    (image_folder / "train" / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        ImageFolder(image_folder / "train", transform=lambda x: x)
    with pytest.raises(FileNotFoundError, match="ImageNet layout"):
        ImageFolderDataModule(str(tmp_path / "nowhere")).num_classes  # noqa: B018


def test_a_folder_without_any_readable_image_is_refused_by_name(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("x.png", "y.png"):
        (tmp_path / "a" / name).write_bytes(b"not an image")
    dataset = ImageFolder(tmp_path, transform=lambda x: x)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"0 readable images .*x\.png"):
        dataset[0]


def shift(image, dy, dx, fill):
    """Shift a (..., H, W) image by (dy, dx) pixels, filling the vacated border."""
    out = torch.full_like(image, fill)
    h, w = image.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        ..., max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def test_train_augmentation_shifts_and_flips_inside_the_original_frame(fashion_root):
    dm = FashionMNISTDataModule(root=str(fashion_root), batch_size=8, val_size=16)
    dm.setup("fit")
    torch.manual_seed(0)
    batch = next(iter(dm.train_dataloader()))
    fill = -dm.mean / dm.std
    plain = dm._loader("val").collate_fn(list(dm.splits["train"]))["image"][:, 0, 2:30, 2:30]
    unchanged = [any(torch.equal(i[2:30, 2:30], p) for p in plain) for i in batch["image"][:, 0]]
    assert not all(unchanged), "augmentation changed no image"
    for image in batch["image"][:, 0]:
        border = torch.ones(32, 32, dtype=torch.bool)
        border[2:30, 2:30] = False
        assert torch.allclose(image[border], torch.tensor(fill))
        inner = image[2:30, 2:30]
        assert any(
            torch.allclose(shift(src.flip(-1) if flip else src, dy, dx, fill), inner)
            for src in plain
            for flip in (False, True)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        )
