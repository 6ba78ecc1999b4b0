"""Image classification data: ImageNet-style folders (timm transforms) and Fashion-MNIST idx files."""

from __future__ import annotations

import gzip
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import lightning as L
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from timm.data import create_transform
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate

from metamixer.lab.inputs import input_files_loader
from metamixer.lab.loaders import LoadersBySplit, TrainValLoaders, split_loader
from metamixer.vision.images import IMAGE_EXTENSIONS, open_image

log = logging.getLogger(__name__)


class ImageFolder(Dataset):
    """``root/<class>/<image>``: classes are the sorted sub-folder names.

    An unreadable image does not stop training or change a batch's shape: a warning names the file
    and the next readable image (in file order) takes its place; each sample carries how many
    unreadable files it passed over, summed per batch as ``skipped``.  A folder with no readable
    image at all is an error naming its files.
    """

    def __init__(self, root: Path, transform: Callable[[Image.Image], Tensor]) -> None:
        if not root.is_dir():
            raise FileNotFoundError(
                f"image folder {root} does not exist; expected <root>/<split>/<class>/<image> "
                "(the ImageNet layout)"
            )
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not self.classes:
            raise ValueError(f"{root} holds no class folders; expected {root}/<class>/<image>")
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            files = sorted(
                p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not files:
                raise ValueError(
                    f"class folder {root / name} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                    "remove it or add its images"
                )
            self.samples += [(f, label) for f in files]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        """``(image, label, unreadable files passed over)``."""
        for skipped in range(len(self.samples)):
            path, label = self.samples[(index + skipped) % len(self.samples)]
            try:
                with Image.open(path) as img:
                    image = img.convert("RGB")
            except (OSError, UnidentifiedImageError, ValueError) as err:
                warnings.warn(f"skipping unreadable image {path}: {err}", stacklevel=1)
                continue
            return self.transform(image), label, skipped
        files = ", ".join(str(p) for p, _ in self.samples[:3])
        raise ValueError(f"0 readable images among {len(self.samples)} files: {files}, …")


def collate_skipping(batch: Sequence[tuple[Tensor, int, int]]) -> dict[str, Tensor]:
    """Stack a batch; ``skipped`` counts the unreadable files its samples replaced."""
    images, labels, skipped = default_collate(list(batch))
    return {"image": images, "label": labels, "skipped": skipped.sum()}


class ClassificationData(L.LightningDataModule):
    """The base of the image classification data modules (``--data NAME`` picks a subclass, yours
    included); a subclass provides ``num_classes``, ``in_chans`` and ``classes``."""


class ImageFolderHparams(Protocol):
    """``ImageFolderDataModule.hparams``: its constructor's arguments."""

    root: str
    batch_size: int
    num_workers: int
    img_size: int
    crop_pct: float
    interpolation: str
    auto_augment: str
    re_prob: float
    hflip: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train_split: str
    val_split: str
    predict_path: str | None


class ImageFolderDataModule(TrainValLoaders, ClassificationData):
    """ImageNet layout ``root/{train,validation}/<class>/<image>`` with timm's training transforms.

    Args:
        root: dataset root.
        batch_size: per-device batch size.
        num_workers: data-loading processes per device.
        img_size: training / evaluation resolution.
        crop_pct: evaluation centre-crop fraction (FFNet: 0.9 for 1/2, 0.95 for 3/4).
        interpolation: resize interpolation.
        auto_augment: timm RandAugment policy ("" = none).
        re_prob: RandomErasing probability.
        hflip: horizontal-flip probability.
        mean: normalisation mean per channel.
        std: normalisation std per channel.
        train_split: training sub-folder.
        val_split: validation sub-folder (also used for ``test``).
        predict_path: an image or a folder of images for ``predict`` (default: the validation
            split); RGB, resized and cropped like the evaluation images.
    """

    reads = "the image folders"

    def __init__(
        self,
        root: str,
        batch_size: int = 128,
        num_workers: int = 8,
        img_size: int = 256,
        crop_pct: float = 0.9,
        interpolation: str = "bicubic",
        auto_augment: str = "rand-m9-mstd0.5-inc1",
        re_prob: float = 0.25,
        hflip: float = 0.5,
        mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
        std: tuple[float, float, float] = (0.229, 0.224, 0.225),
        train_split: str = "train",
        val_split: str = "validation",
        predict_path: str | None = None,
    ) -> None:
        super().__init__()
        if not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1] (a share of the image), got {crop_pct}")
        self.save_hyperparameters()
        self.root = Path(root)
        self.in_chans = 3
        self.train_set: ImageFolder | None = None
        self.val_set: ImageFolder | None = None

    @property
    def hp(self) -> ImageFolderHparams:
        """``self.hparams`` (the same object, which the batch-size finder may change), typed."""
        return cast(ImageFolderHparams, self.hparams)

    @property
    def classes(self) -> list[str]:
        train = self.root / self.hp.train_split
        if not train.is_dir():
            raise FileNotFoundError(
                f"dataset root {self.root} has no '{self.hp.train_split}' folder; expected "
                f"{self.root}/{self.hp.train_split}/<class>/<image> (the ImageNet layout)"
            )
        return sorted(p.name for p in train.iterdir() if p.is_dir())

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _transform(self, training: bool) -> Callable:
        h = self.hp
        common: dict[str, Any] = dict(mean=h.mean, std=h.std, interpolation=h.interpolation)
        if training:
            return create_transform(
                h.img_size,
                is_training=True,
                auto_augment=h.auto_augment or None,
                re_prob=h.re_prob,
                hflip=h.hflip,
                **common,
            )
        return create_transform(h.img_size, is_training=False, crop_pct=h.crop_pct, **common)

    def setup(self, stage: str) -> None:
        h = self.hp
        if stage == "fit":
            self.train_set = ImageFolder(self.root / h.train_split, self._transform(True))
        self.val_set = ImageFolder(self.root / h.val_split, self._transform(False))
        if self.train_set is not None and self.train_set.classes != self.val_set.classes:
            raise ValueError(
                f"{h.train_split} and {h.val_split} have different class folders; "
                "both splits need the same <class> sub-folders"
            )

    def _batching(self) -> tuple[int, int, Callable | None]:
        return self.hp.batch_size, self.hp.num_workers, collate_skipping

    def predict_dataloader(self) -> DataLoader:
        h = self.hp
        if h.predict_path is None:
            return self._loader("val")
        rgb = self._transform(False)
        return input_files_loader(
            h.predict_path, IMAGE_EXTENSIONS, lambda p: rgb(open_image(p).convert("RGB")),
            batch_size=h.batch_size, num_workers=h.num_workers,
        )  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Fashion-MNIST (Debian package dataset-fashion-mnist), the embedded default.

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """Read an idx-ubyte(.gz) file (the MNIST format) into an array, checking its header."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; install Fashion-MNIST with `apt-get install dataset-fashion-mnist` "
            "(or `scripts/fetch-data fashion-mnist`), or point `root` at a folder with the idx files"
        )
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path} is not a readable idx file: {err}") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} has no idx header (magic 0x0000 08 NN); is it an MNIST idx file?")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(
            f"{path} is truncated: header says {shape} ({int(np.prod(shape))} values), "
            f"file holds {data.size}"
        )
    return data.reshape(shape)


class TensorImages(Dataset):
    """Uint8 images ``(N, H, W)`` with integer labels; ``PadShiftFlip`` turns batches into tensors."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = torch.from_numpy(images.copy())
        self.labels = torch.from_numpy(labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]


class PadShiftFlip:
    """Collate uint8 grey images into a normalised ``(B, 1, H + 2 pad, W + 2 pad)`` batch.

    With ``augment``, each image is shifted by up to ``pad`` pixels and flipped horizontally with
    probability 0.5 (vectorised over the batch, so data loading stays cheap on CPU).
    """

    def __init__(self, *, pad: int, augment: bool, mean: float, std: float) -> None:
        self.pad, self.augment, self.mean, self.std = pad, augment, mean, std

    def __call__(self, batch: Sequence[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
        images, labels = default_collate(list(batch))
        x = (images.float() / 255.0 - self.mean) / self.std
        p = self.pad
        x = torch.nn.functional.pad(x, [p] * 4, value=-self.mean / self.std)
        if self.augment and p > 0:
            b, h, w = x.shape[0], x.shape[1] - 2 * p, x.shape[2] - 2 * p
            dy, dx = torch.randint(0, 2 * p + 1, (2, b, 1))
            rows = (torch.arange(h) + dy)[:, :, None]  # (B, h, 1), shifted crop of the padded image
            cols = torch.arange(w) + dx  # (B, w)
            flip = torch.rand(b, 1) < 0.5
            cols = torch.where(flip, cols.flip(1), cols)[:, None, :]
            shifted = x[torch.arange(b)[:, None, None], rows, cols]
            x = torch.nn.functional.pad(shifted, [p] * 4, value=-self.mean / self.std)
        return {"image": x[:, None], "label": labels, "skipped": torch.tensor(0)}


class FashionMNISTHparams(Protocol):
    """``FashionMNISTDataModule.hparams``: its constructor's arguments."""

    root: str
    batch_size: int
    num_workers: int
    val_size: int
    pad: int
    augment: bool
    predict_path: str | None


class FashionMNISTDataModule(LoadersBySplit, ClassificationData):
    """Fashion-MNIST from its idx files (60k train / 10k test, 28×28 grey, 10 classes).

    The last ``val_size`` training images are held out for validation; ``test`` is the official
    10k test set.  Images are padded to 32×32 (FFNet's total stride); training adds random shifts
    of up to ``pad`` pixels and horizontal flips.

    Args:
        root: folder with ``{train,t10k}-{images-idx3,labels-idx1}-ubyte(.gz)``.
        batch_size: per-device batch size.
        num_workers: data-loading processes.
        val_size: training images held out for validation.
        pad: zero padding on each side (2 makes 32×32).
        augment: random shift + flip for training.
        predict_path: an image or a folder of images for ``predict`` (default: the test set);
            converted to grey and resized to 28×28 like the dataset.
    """

    mean, std = 0.2860, 0.3530

    def __init__(
        self,
        root: str = FASHION_MNIST_ROOT,
        batch_size: int = 128,
        num_workers: int = 0,
        val_size: int = 5000,
        pad: int = 2,
        augment: bool = True,
        predict_path: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.root = Path(root)
        self.classes = FASHION_MNIST_CLASSES
        self.num_classes = len(FASHION_MNIST_CLASSES)
        self.in_chans = 1
        self.splits: dict[str, TensorImages] = {}

    @property
    def hp(self) -> FashionMNISTHparams:
        """``self.hparams`` (the same object, which the batch-size finder may change), typed."""
        return cast(FashionMNISTHparams, self.hparams)

    def _read(self, prefix: str) -> tuple[np.ndarray, np.ndarray]:
        def find(kind: str) -> Path:
            for name in (f"{prefix}-{kind}-ubyte.gz", f"{prefix}-{kind}-ubyte"):
                if (self.root / name).exists():
                    return self.root / name
            return self.root / f"{prefix}-{kind}-ubyte.gz"

        images, labels = read_idx(find("images-idx3")), read_idx(find("labels-idx1"))
        if images.ndim != 3 or len(images) != len(labels):
            raise ValueError(
                f"{self.root}: {prefix} images {images.shape} and labels {labels.shape} disagree"
            )
        return images, labels

    def setup(self, stage: str) -> None:
        if self.splits:
            return
        h = self.hp
        images, labels = self._read("train")
        if not 0 < h.val_size < len(images):
            raise ValueError(f"val_size must be in (0, {len(images)}), got {h.val_size}")
        test_images, test_labels = self._read("t10k")
        cut = len(images) - h.val_size
        self.splits = {
            "train": TensorImages(images[:cut], labels[:cut]),
            "val": TensorImages(images[cut:], labels[cut:]),
            "test": TensorImages(test_images, test_labels),
        }
        log.info("Fashion-MNIST: %s", {k: len(v) for k, v in self.splits.items()})

    def _loader(self, split: str) -> DataLoader:
        h, train = self.hp, split == "train"
        collate = PadShiftFlip(pad=h.pad, augment=h.augment and train, mean=self.mean, std=self.std)
        return split_loader(
            self.splits[split], h.batch_size, h.num_workers, train=train, collate_fn=collate
        )

    def predict_dataloader(self) -> DataLoader:
        h = self.hp
        if h.predict_path is None:
            return self._loader("test")

        def grey(path: Path) -> Tensor:
            img = open_image(path).convert("L").resize((28, 28))
            x = (torch.from_numpy(np.asarray(img, dtype=np.float32)) / 255 - self.mean) / self.std
            return torch.nn.functional.pad(x, [h.pad] * 4, value=-self.mean / self.std)[None]

        return input_files_loader(
            h.predict_path, IMAGE_EXTENSIONS, grey, batch_size=h.batch_size,
            num_workers=h.num_workers,
        )  # fmt: skip
