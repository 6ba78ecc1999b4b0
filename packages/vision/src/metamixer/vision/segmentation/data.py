"""Semantic segmentation data: the ADE20K and Cityscapes layouts, with the mmseg training recipe
(random rescale 0.5–2.0, random crop padded with the ignore label, flip, photometric distortion)
through torchvision's joint image/mask transforms.

Labels are class indices with ``IGNORE`` (255) for pixels that count nowhere.  ADE20K's 0
("other") becomes 255 and 1…150 become 0…149 (``reduce_zero_label``); Cityscapes is read from
``*_labelTrainIds.png`` (19 classes, 255 ignored) as made by its ``createTrainIdLabelImgs`` script.
"""

from __future__ import annotations

import colorsys
import logging
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Protocol, cast

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from metamixer.lab.inputs import input_files_loader
from metamixer.lab.loaders import LoadersBySplit, split_loader
from metamixer.vision.images import IMAGE_EXTENSIONS, open_image

log = logging.getLogger(__name__)

IGNORE = 255
LABEL_MODES = ("L", "P", "I;16", "I")  # one class index per pixel
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip


def distinct_palette(n: int) -> list[tuple[int, int, int]]:
    """``n`` well-separated colours (golden-ratio hues, alternating lightness)."""
    colours = []
    for i in range(n):
        r, g, b = colorsys.hls_to_rgb((i * 0.618034) % 1.0, 0.45 + 0.2 * (i % 2), 0.75)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours


def read_label(path: Path) -> np.ndarray:
    """A label PNG as a uint8 array (palette PNGs give their indices, not colours)."""
    try:
        with Image.open(path) as img:
            if img.mode not in LABEL_MODES:
                raise ValueError(
                    f"label {path} is a {img.mode} image; expected one class index per pixel "
                    "(mode L or P)"
                )
            return np.asarray(img).astype(np.int64)
    except (OSError, SyntaxError) as err:
        raise ValueError(f"label {path} is not a readable PNG: {err}") from err


class SegmentationFiles(Dataset):
    """``(image, label)`` file pairs with the label convention of one dataset.

    Each item: ``{"image": float (3, h, w) normalised, "label": int64 (h, w), "name": stem}``.
    A label whose size differs from its image, or with values outside ``[0, num_classes)`` other
    than the ignore value, is an error naming the file.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        num_classes: int,
        transform: v2.Transform,
        reduce_zero_label: bool,
    ) -> None:
        self.pairs, self.num_classes = list(pairs), num_classes
        self.transform, self.reduce_zero_label = transform, reduce_zero_label

    def __len__(self) -> int:
        return len(self.pairs)

    def label(self, index: int) -> np.ndarray:
        label_path = self.pairs[index][1]
        label = read_label(label_path)
        if self.reduce_zero_label:
            label = np.where(label == 0, IGNORE, label - 1)
        bad = np.unique(label[(label >= self.num_classes) & (label != IGNORE)])
        if bad.size:
            raise ValueError(
                f"label {label_path} holds values {bad[:8].tolist()} outside the "
                f"{self.num_classes} classes (ignore value {IGNORE}); wrong dataset layout or "
                "num_classes?"
            )
        return label

    def __getitem__(self, index: int) -> dict[str, Tensor | str]:
        image_path, label_path = self.pairs[index]
        image = open_image(image_path).convert("RGB")
        label = self.label(index)
        if label.shape != (image.height, image.width):
            raise ValueError(
                f"label {label_path} is {label.shape[1]}×{label.shape[0]} but its image "
                f"{image_path} is {image.width}×{image.height}; they must be the same size"
            )
        image_t = tv_tensors.Image(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
        mask = tv_tensors.Mask(torch.from_numpy(label.astype(np.uint8)))
        image_t, mask = self.transform(image_t, mask)
        return {"image": image_t, "label": mask.long(), "name": image_path.stem}


def training_transform(scale: int, ratio_range: Sequence[float], crop: int) -> v2.Transform:
    """mmseg's recipe: short side ``scale × U(ratio_range)``, random crop ``crop`` (padded: image
    0, label ignored), flip, photometric distortion, normalisation (ImageNet statistics)."""
    low, high = ratio_range
    return v2.Compose([
        v2.RandomResize(int(scale * low), int(scale * high) + 1, antialias=True),
        v2.RandomCrop(crop, pad_if_needed=True, fill={tv_tensors.Mask: IGNORE, "others": 0}),
        v2.RandomHorizontalFlip(),
        # mmseg's photometric distortion (brightness here a factor 1 ± 32/255 rather than an
        # offset; contrast and saturation 0.5–1.5, hue ±18°); torchvision's
        # RandomPhotometricDistort would also permute the channels
        v2.ColorJitter(brightness=32 / 255, contrast=0.5, saturation=0.5, hue=0.05),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(MEAN, STD),
    ])  # fmt: skip


def evaluation_transform() -> v2.Transform:
    """Full-resolution images: the segmenter's inference rescales, pads and slides."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


def collate(batch: Sequence[dict]) -> dict:
    """Stack equal-sized samples; differently sized ones (evaluation) stay lists."""
    images, labels = [b["image"] for b in batch], [b["label"] for b in batch]
    same = all(i.shape == images[0].shape for i in images)
    return {
        "image": torch.stack(images) if same else images,
        "label": torch.stack(labels) if same else labels,
        "name": [b["name"] for b in batch],
    }


class SegmentationDataHparams(Protocol):
    """``SegmentationDataModule.hparams``: its constructor's arguments."""

    root: str
    crop_size: int
    scale: int
    ratio_range: tuple[float, float]
    batch_size: int
    val_batch_size: int
    num_workers: int
    predict_path: str | None


class SegmentationDataModule(LoadersBySplit, L.LightningDataModule):
    """Shared loading for the segmentation layouts; subclasses list the file pairs per split.

    Args:
        root: dataset root.
        crop_size: training crop (square).
        scale: short side at ratio 1 for training (mmseg: 512 for ADE20K, 1024 for Cityscapes).
        ratio_range: random rescale range around ``scale``.
        batch_size: per-device training batch size.
        val_batch_size: evaluation batch size (images of different sizes need 1).
        num_workers: data-loading processes.
        predict_path: an image or a folder of images for ``predict`` (default: validation split).

    A subclass gives ``classes`` and ``palette`` (class attributes, or properties computed when
    first read).
    """

    reduce_zero_label = False
    in_chans = 3
    test_split = "val"

    def __init__(
        self,
        root: str,
        crop_size: int = 512,
        scale: int = 512,
        ratio_range: tuple[float, float] = (0.5, 2.0),
        batch_size: int = 2,
        val_batch_size: int = 1,
        num_workers: int = 4,
        predict_path: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.root = Path(root)
        self.splits: dict[str, SegmentationFiles] = {}

    @property
    def hp(self) -> SegmentationDataHparams:
        """``self.hparams`` (the same object, which the batch-size finder may change), typed."""
        return cast(SegmentationDataHparams, self.hparams)

    @property
    def classes(self) -> Sequence[str]:
        """The classes' names (none here: a subclass gives them)."""
        return ()

    @property
    def palette(self) -> Sequence[tuple[int, int, int]]:
        """A colour per class for the written label images (none here: a subclass gives them)."""
        return ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def label_offset(self) -> int:
        """What a class index adds to become its label value (1 where 0 is "other")."""
        return int(self.reduce_zero_label)

    def pairs(self, split: str) -> list[tuple[Path, Path]]:
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        h = self.hp
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("val",)}.get(stage, ())
        for split in wanted:
            if split in self.splits:
                continue
            transform = (
                training_transform(h.scale, h.ratio_range, h.crop_size)
                if split == "train"
                else evaluation_transform()
            )
            pairs = self.pairs(split)
            check_sizes(pairs)
            self.splits[split] = SegmentationFiles(
                pairs, self.num_classes, transform, self.reduce_zero_label
            )
        log.info("%s: %s", type(self).__name__, {k: len(v) for k, v in self.splits.items()})

    def _loader(self, split: str) -> DataLoader:
        h, train = self.hp, split == "train"
        batch_size = h.batch_size if train else h.val_batch_size
        return split_loader(
            self.splits[split], batch_size, h.num_workers, train=train, collate_fn=collate
        )

    def predict_dataloader(self) -> DataLoader:
        h = self.hp
        if h.predict_path is None:
            self.setup("validate")
            return self._loader("val")
        transform = evaluation_transform()

        def read(path: Path) -> Tensor:
            rgb = np.asarray(open_image(path).convert("RGB")).copy()
            return transform(tv_tensors.Image(torch.from_numpy(rgb).permute(2, 0, 1)))

        return input_files_loader(
            h.predict_path, IMAGE_EXTENSIONS, read, batch_size=1, num_workers=h.num_workers
        )


def check_sizes(pairs: Sequence[tuple[Path, Path]]) -> None:
    """Every label has its image's size and one class index per pixel, read from the file
    headers (no pixels decoded), so a bad pair stops the run before its first step."""
    bad = []
    for image_path, label_path in pairs:
        try:
            with Image.open(image_path) as image, Image.open(label_path) as label:
                if label.mode not in LABEL_MODES:
                    raise ValueError(
                        f"label {label_path} is a {label.mode} image; expected one class index "
                        "per pixel (mode L or P)"
                    )
                if label.size != image.size:
                    bad.append(f"{label_path.name} {label.size[0]}×{label.size[1]} vs "
                               f"{image_path.name} {image.size[0]}×{image.size[1]}")  # fmt: skip
        except (OSError, SyntaxError) as err:
            raise ValueError(
                f"cannot read the header of {image_path} or {label_path}: {err}"
            ) from err
    if bad:
        raise ValueError(
            f"{len(bad)} of {len(pairs)} labels differ in size from their image, e.g. "
            f"{'; '.join(bad[:3])}; a label and its image must be the same size"
        )


def matched_pairs(
    images: Path, patterns: Sequence[str], label_for: Callable[[Path], Path], layout: str
) -> list[tuple[Path, Path]]:
    """Every image under ``images`` matching one of ``patterns`` with its label; a missing label
    or folder is an error."""
    if not images.is_dir():
        raise FileNotFoundError(f"{images} does not exist; expected the {layout} layout")
    files = sorted({f for pattern in patterns for f in images.glob(pattern)})
    if not files:
        raise ValueError(
            f"{images} holds no images matching {', '.join(patterns)} ({layout} layout)"
        )
    pairs = [(f, label_for(f)) for f in files]
    missing = [str(lab) for _, lab in pairs if not lab.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(pairs)} images have no label, e.g. {missing[:3]} "
            f"({layout} layout)"
        )
    return pairs


class ADE20KHparams(SegmentationDataHparams, Protocol):
    """``ADE20KDataModule.hparams``: its constructor's arguments."""

    class_file: str | None


class ADE20KDataModule(SegmentationDataModule):
    """ADE20K (``ADEChallengeData2016/images|annotations/{training,validation}``), or a set of
    one's own in that layout: images (JPEG, PNG, …) with same-named PNG labels where 0 = other
    (ignored) and 1…N = the classes.

    The classes come from ``class_file`` (one name per line, or TSV with a ``Name`` column as in
    ADE20K's ``objectInfo150.txt``, read from the root when present), else from ``num_classes``
    (named by their indices); with both, they must agree.

    Args:
        num_classes: number of classes N (labels 1…N).
        class_file: the class names (default: ``root/objectInfo150.txt`` if present).
        Others: see ``SegmentationDataModule``; ``root`` is the ``ADEChallengeData2016`` folder.
    """

    reduce_zero_label = True

    def __init__(
        self,
        root: str,
        crop_size: int = 512,
        scale: int = 512,
        ratio_range: tuple[float, float] = (0.5, 2.0),
        batch_size: int = 2,
        val_batch_size: int = 1,
        num_workers: int = 4,
        predict_path: str | None = None,
        num_classes: int | None = None,
        class_file: str | None = None,
    ) -> None:
        super().__init__(
            root, crop_size, scale, ratio_range, batch_size, val_batch_size, num_workers,
            predict_path,
        )  # fmt: skip
        # the model's hyperparameters hold the resolved count (Lightning refuses a second value)
        self.save_hyperparameters(ignore=["num_classes"])
        self.class_count = num_classes

    @property
    def hp(self) -> ADE20KHparams:
        """``self.hparams`` (the same object, which the batch-size finder may change), typed."""
        return cast(ADE20KHparams, self.hparams)

    @cached_property
    def classes(self) -> tuple[str, ...]:
        h = self.hp
        info = Path(h.class_file) if h.class_file else self.root / "objectInfo150.txt"
        if h.class_file and not info.is_file():
            raise FileNotFoundError(f"data.class_file {info} does not exist")
        if not info.is_file():
            if self.class_count is None:
                raise ValueError(
                    f"no objectInfo150.txt in {self.root}: give the number of classes with "
                    "--data.num_classes N (labels 1…N, 0 ignored) or their names with "
                    "--data.class_file FILE (one per line)"
                )
            return tuple(str(i) for i in range(self.class_count))
        names = read_class_names(info)
        if self.class_count is not None and self.class_count != len(names):
            raise ValueError(
                f"data.num_classes={self.class_count} but {info} names {len(names)} classes; "
                "give one of them, or make them agree"
            )
        return names

    @cached_property
    def palette(self) -> list[tuple[int, int, int]]:
        return distinct_palette(len(self.classes))

    def pairs(self, split: str) -> list[tuple[Path, Path]]:
        folder = {"train": "training", "val": "validation"}[split]
        return matched_pairs(
            self.root / "images" / folder, [f"*{e}" for e in IMAGE_EXTENSIONS],
            lambda f: self.root / "annotations" / folder / f"{f.stem}.png", "ADE20K",
        )  # fmt: skip


def read_class_names(path: Path) -> tuple[str, ...]:
    """Class names from a file: one per line, or tab-separated with a ``Name`` column (ADE20K's
    ``objectInfo150.txt``; a name's synonyms after ``;`` are dropped)."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if lines and "\t" in lines[0]:
        rows = [line.split("\t") for line in lines]
        if "Name" not in rows[0]:
            raise ValueError(f"{path} is tab-separated but has no 'Name' column in its header")
        name = rows[0].index("Name")
        return tuple(r[name].split(";")[0].strip() for r in rows[1:])
    if not lines:
        raise ValueError(f"{path} names no classes")
    return tuple(line.strip() for line in lines)


class CityscapesDataModule(SegmentationDataModule):
    """Cityscapes (``leftImg8bit/{train,val}/<city>/*_leftImg8bit.png`` with
    ``gtFine/{train,val}/<city>/*_gtFine_labelTrainIds.png``): 19 classes, 255 ignored.

    Args: see ``SegmentationDataModule``; the recipe scales and crops at 1024.
    """

    classes = CITYSCAPES_CLASSES
    palette = CITYSCAPES_PALETTE

    def __init__(
        self,
        root: str = "data/cityscapes",
        crop_size: int = 1024,
        scale: int = 1024,
        ratio_range: tuple[float, float] = (0.5, 2.0),
        batch_size: int = 2,
        val_batch_size: int = 1,
        num_workers: int = 4,
        predict_path: str | None = None,
    ) -> None:
        super().__init__(
            root, crop_size, scale, ratio_range, batch_size, val_batch_size, num_workers,
            predict_path,
        )  # fmt: skip

    def pairs(self, split: str) -> list[tuple[Path, Path]]:
        def label_for(image: Path) -> Path:
            stem = image.name.replace("_leftImg8bit.png", "_gtFine_labelTrainIds.png")
            return self.root / "gtFine" / split / image.parent.name / stem

        return matched_pairs(
            self.root / "leftImg8bit" / split, ["*/*_leftImg8bit.png"], label_for, "Cityscapes",
        )  # fmt: skip
