"""Super-resolution data in the DIV2K / benchmark layout.

``<root>/HR/0001.png`` and ``<root>/LR_bicubic/X2/0001x2.png``.  When the ``LR_bicubic/X<s>``
folder is absent it is generated once from HR with basicsr's MATLAB-compatible bicubic (the
standard degradation); when it exists, every HR image needs its LR file.  Images load as RGB in
[0, 1]: grey images are replicated to 3 channels, alpha is dropped, 16-bit PNGs keep their
precision, and HR is cropped to a multiple of the scale (as basicsr's ``mod_crop``).
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Protocol, TypedDict, cast

import cv2
import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from metamixer.core.atomic import atomic_path
from metamixer.lab.loaders import split_loader

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def read_image(path: Path) -> np.ndarray:
    """An RGB float32 array ``(H, W, 3)`` in [0, 1] from any 8/16-bit grey, RGB or RGBA file."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"cannot read image {path} (missing, corrupt or not an image)")
    scale = 65535.0 if raw.dtype == np.uint16 else 255.0
    if raw.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: unsupported pixel type {raw.dtype} (use 8- or 16-bit images)")
    image = raw.astype(np.float32) / scale
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    elif image.shape[2] == 4:
        image = image[..., :3]
    elif image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[..., ::-1])  # OpenCV's BGR -> RGB


def write_image(path: Path, image: Tensor | np.ndarray) -> Path:
    """Write an RGB image in [0, 1] (``(3, H, W)`` tensor or ``(H, W, 3)`` array) as 8-bit PNG,
    atomically (temp file + rename)."""
    if isinstance(image, Tensor):
        image = image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    data = (np.clip(image, 0, 1) * 255.0).round().astype(np.uint8)[..., ::-1]
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), data):
            raise OSError(f"could not write {path}")
    return path


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
    h, w = image.shape[:2]
    return image[: h - h % scale, : w - w % scale]


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-compatible bicubic downscaling (basicsr's ``imresize``), HR -> LR, values in [0, 1]."""
    from basicsr.utils.matlab_functions import imresize

    return np.clip(imresize(hr, 1.0 / scale), 0.0, 1.0).astype(np.float32)


def image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {folder}; expected <root>/HR/<name>.png (DIV2K layout)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def lr_path(root: Path, hr: Path, scale: int) -> Path:
    return root / "LR_bicubic" / f"X{scale}" / f"{hr.stem}x{scale}.png"


def ensure_lr(root: Path, scale: int) -> None:
    """Generate ``LR_bicubic/X<scale>`` from HR if the folder does not exist, then check that every
    HR image has its LR file.  The folder is written under a private name and renamed into place,
    so runs started together on a fresh dataset never see it half written."""
    hr_files = image_files(root / "HR")
    lr_dir = root / "LR_bicubic" / f"X{scale}"
    if not lr_dir.is_dir():
        lr_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{lr_dir.name}-", dir=lr_dir.parent))
        try:
            for hr in hr_files:
                image = mod_crop(read_image(hr), scale)
                write_image(
                    staging / lr_path(root, hr, scale).name, bicubic_downscale(image, scale)
                )
            try:
                os.rename(staging, lr_dir)
            except OSError:
                if not lr_dir.is_dir():  # raise unless another run got there first
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    missing = [
        lr_path(root, p, scale).name for p in hr_files if not lr_path(root, p, scale).exists()
    ]
    if missing:
        raise FileNotFoundError(
            f"{lr_dir} lacks the LR files of {len(missing)} HR images, e.g. {missing[:3]}; "
            "add them, or delete the folder to regenerate it with MATLAB bicubic"
        )


def load_pair(root: Path, hr_file: Path, scale: int) -> tuple[np.ndarray, np.ndarray]:
    hr = mod_crop(read_image(hr_file), scale)
    lr = read_image(lr_path(root, hr_file, scale))
    if lr.shape[0] * scale != hr.shape[0] or lr.shape[1] * scale != hr.shape[1]:
        raise ValueError(
            f"{lr_path(root, hr_file, scale)} is {lr.shape[1]}×{lr.shape[0]} but its HR image "
            f"{hr_file.name} (cropped to a multiple of {scale}) is {hr.shape[1]}×{hr.shape[0]}"
        )
    return lr, hr


def to_tensor(image: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def image_tensor(path: Path) -> Tensor:
    """An image file as a ``(3, H, W)`` RGB tensor in [0, 1] (see ``read_image``)."""
    return to_tensor(read_image(path))


class PairedItem(TypedDict):
    """One ``PairedImages`` pair: LR and HR ``(3, H, W)`` tensors in [0, 1], and the file stem."""

    lr: Tensor
    hr: Tensor
    name: str


class PairedImages(Dataset):
    """LR / HR pairs of a folder; training samples are random aligned crops with flips and 90°
    rotations (``gt_size`` HR pixels), evaluation samples are whole images.

    Pairs are decoded once and kept in memory (``repeat`` re-samples crops within an epoch).
    """

    def __init__(
        self, root: Path, scale: int, *, gt_size: int | None = None, repeat: int = 1
    ) -> None:
        self.root, self.scale, self.gt_size, self.repeat = root, scale, gt_size, repeat
        self.files = image_files(root / "HR")
        self.pairs = [load_pair(root, f, scale) for f in self.files]
        if gt_size is not None:
            if gt_size % scale:
                raise ValueError(f"gt_size ({gt_size}) must be a multiple of the scale ({scale})")
            small = [
                f.name
                for f, (_, hr) in zip(self.files, self.pairs, strict=True)
                if min(hr.shape[:2]) < gt_size
            ]
            if small:
                raise ValueError(f"HR images smaller than gt_size={gt_size}: {small[:3]}")

    def __len__(self) -> int:
        return len(self.pairs) * self.repeat

    def __getitem__(self, index: int) -> PairedItem:
        i = index % len(self.pairs)
        lr, hr = self.pairs[i]
        if self.gt_size is not None:
            lr, hr = self._random_crop(lr, hr, self.gt_size)
        return {"lr": to_tensor(lr), "hr": to_tensor(hr), "name": self.files[i].stem}

    def _random_crop(
        self, lr: np.ndarray, hr: np.ndarray, gt_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        s, size = self.scale, gt_size // self.scale
        y = random.randint(0, lr.shape[0] - size)
        x = random.randint(0, lr.shape[1] - size)
        lr = lr[y : y + size, x : x + size]
        hr = hr[y * s : (y + size) * s, x * s : (x + size) * s]
        if random.random() < 0.5:  # horizontal flip
            lr, hr = lr[:, ::-1], hr[:, ::-1]
        if random.random() < 0.5:  # vertical flip
            lr, hr = lr[::-1], hr[::-1]
        if random.random() < 0.5:  # transpose = 90° rotation combined with the flips
            lr, hr = lr.transpose(1, 0, 2), hr.transpose(1, 0, 2)
        return lr, hr


class PairedImageHparams(Protocol):
    """``PairedImageDataModule.hparams``: its constructor's arguments."""

    train_root: str
    val_roots: list[str]
    test_roots: list[str] | None
    scale: int
    gt_size: int
    batch_size: int
    repeat: int
    num_workers: int
    predict_path: str | None


class PairedImageDataModule(L.LightningDataModule):
    """Train on one folder, validate / test on others (each in the HR / LR_bicubic layout).

    Args:
        train_root: training folder (DIV2K / DF2K layout).
        val_roots: validation folders (e.g. ``Set5``); the first one drives checkpointing.
        test_roots: test folders (default: the validation folders).
        scale: upscaling factor.
        gt_size: HR crop size for training.
        batch_size: training batch size.
        repeat: training crops per image per epoch.
        num_workers: data-loading processes.
        predict_path: an image or a folder of images to upscale with ``predict`` (default: the
            test sets' LR images).
    """

    def __init__(
        self,
        train_root: str,
        val_roots: list[str],
        test_roots: list[str] | None = None,
        scale: int = 2,
        gt_size: int = 192,
        batch_size: int = 16,
        repeat: int = 1,
        num_workers: int = 0,
        predict_path: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.sets: dict[str, list[PairedImages]] = {}

    @property
    def hp(self) -> PairedImageHparams:
        """``self.hparams`` (the same object, which the batch-size finder may change), typed."""
        return cast(PairedImageHparams, self.hparams)

    @property
    def scale(self) -> int:
        return self.hp.scale

    @property
    def val_names(self) -> list[str]:
        return [Path(r).name for r in self.hp.val_roots]

    @property
    def test_names(self) -> list[str]:
        return [Path(r).name for r in (self.hp.test_roots or self.hp.val_roots)]

    def _roots(self) -> list[Path]:  # folders whose LR images may need generating
        h = self.hp
        return [Path(r) for r in [h.train_root, *h.val_roots, *(h.test_roots or [])]]

    def prepare_data(self) -> None:
        if self.hp.predict_path is not None:
            return  # only the user's files are read
        for root in self._roots():
            ensure_lr(root, self.hp.scale)

    def setup(self, stage: str) -> None:
        h = self.hp
        if stage == "predict" and h.predict_path is not None:
            return
        if stage == "fit" and "train" not in self.sets:
            self.sets["train"] = [
                PairedImages(Path(h.train_root), h.scale, gt_size=h.gt_size, repeat=h.repeat)
            ]
        if "val" not in self.sets:
            self.sets["val"] = [PairedImages(Path(r), h.scale) for r in h.val_roots]
        if stage in ("test", "predict") and "test" not in self.sets:
            self.sets["test"] = [
                PairedImages(Path(r), h.scale) for r in h.test_roots or h.val_roots
            ]

    def train_dataloader(self) -> DataLoader:
        h = self.hp
        train = self.sets["train"][0]
        return split_loader(train, h.batch_size, h.num_workers, train=True)

    def _eval_loaders(self, split: str) -> list[DataLoader]:
        return [
            DataLoader(d, batch_size=1, num_workers=self.hp.num_workers) for d in self.sets[split]
        ]

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")

    def predict_dataloader(self) -> DataLoader | list[DataLoader]:
        if self.hp.predict_path is None:
            return self._eval_loaders("test")
        from metamixer.lab.inputs import input_files_loader

        return input_files_loader(self.hp.predict_path, IMAGE_EXTENSIONS, image_tensor)
