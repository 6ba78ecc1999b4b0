"""COCO-format detection data (boxes, and instance masks where the file has them) for torchvision
detectors, read with pycocotools.

Layout (COCO 2017; any dataset written in that format)::

    root/annotations/instances_{train,val}2017.json
    root/{train,val}2017/<file_name of each image entry>

Category ids (any, possibly with gaps as in COCO's 1…90) become contiguous labels ``1 … K`` in the
order of their ids; 0 is torchvision's background.  Boxes are COCO's ``[x, y, width, height]``
turned into ``[x1, y1, x2, y2]``; masks come from the polygons / RLE through ``COCO.annToMask``.
A file without any ``segmentation`` (most detection datasets) is box-only: its targets hold no
masks, and it trains the box-only detectors (``faster_rcnn``, ``retinanet``, ``fcos``).

What is skipped, and reported as a warning naming the file, the count per reason and the first
few annotation (or image) ids, when a split is read:

* crowd annotations (``iscrowd=1``) are not training targets; for evaluation they stay, marked
  ``iscrowd``, so the COCO metric ignores detections on them (as ``COCOeval`` does);
* degenerate boxes (width or height below one pixel, or no overlap with the image) are dropped in
  every split, and so are annotations without a segmentation when masks are read;
* training skips images left without any target (mmdetection's ``filter_empty_gt``); validation /
  test keep every image, so detections on empty images count as false positives.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.functional import pil_to_tensor

from metamixer.lab.inputs import InputFiles
from metamixer.lab.loaders import TrainValLoaders
from metamixer.vision.images import IMAGE_EXTENSIONS, open_image


def read_coco(path: Path) -> Any:
    """``pycocotools.coco.COCO`` of an annotation file (its progress prints silenced)."""
    from pycocotools.coco import COCO

    if not path.is_file():
        raise FileNotFoundError(
            f"annotation file {path} not found; expected the COCO layout "
            "root/annotations/instances_<split>.json"
        )
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return COCO(str(path))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a COCO instances file: {err!r}") from err


def categories_of(coco: Any) -> list[dict[str, Any]]:
    """The categories sorted by id (label ``i + 1`` is entry ``i``)."""
    categories = sorted(coco.loadCats(coco.getCatIds()), key=lambda c: c["id"])
    if not categories:
        raise ValueError("the annotation file lists no categories")
    return categories


def image_tensor(path: Path) -> Tensor:
    """An RGB image as floats in [0, 1], ``(3, H, W)`` (the detector normalises it)."""
    return pil_to_tensor(open_image(path).convert("RGB")).float().div_(255)


def has_segmentation(coco: Any) -> bool:
    """Whether any annotation of a COCO file has a (non-empty) ``segmentation``."""
    return any(a.get("segmentation") for a in coco.anns.values())


class COCOInstances(Dataset):
    """One split of a COCO instances file: ``(image, target)`` with the target of torchvision's
    detectors (``boxes`` xyxy, ``labels`` 1…K and, with ``masks``, ``masks`` uint8 ``(N, H, W)``)
    plus ``iscrowd``, ``area`` (the annotation's, else the box's) and the dataset's ``image_id``.

    Args:
        coco: the split's ``COCO`` object.
        image_dir: folder of the split's images.
        category_ids: COCO category id of each label ``1 … K`` (in that order).
        train: training split (drop crowd annotations and images without targets).
        hflip: probability of a horizontal flip (training only).
        masks: read instance masks (annotations without a segmentation are then skipped).
        source: the annotation file, for messages.
    """

    def __init__(
        self,
        coco: Any,
        image_dir: Path,
        category_ids: Sequence[int],
        train: bool,
        hflip: float = 0.0,
        masks: bool = True,
        source: str | Path | None = None,
    ) -> None:
        self.coco, self.image_dir, self.train, self.hflip = coco, image_dir, train, hflip
        self.masks = masks
        self.label_of = {cat: i + 1 for i, cat in enumerate(category_ids)}
        self.check_files()
        self.skipped: dict[str, list[int]] = {}  # reason -> annotation (or image) ids
        self.annotations: dict[int, list[dict[str, Any]]] = {}
        self.ids: list[int] = []
        for image_id in sorted(coco.imgs):
            keep = [a for a in coco.imgToAnns.get(image_id, []) if self._usable(a, image_id)]
            if train and not keep:
                self.skipped.setdefault("images without annotations", []).append(image_id)
                continue
            self.annotations[image_id] = keep
            self.ids.append(image_id)
        if not self.ids:
            raise ValueError(self._nothing_usable(source or image_dir))

    def _nothing_usable(self, source: str | Path) -> str:
        """Why no image is left: the count per reason, and the fix for the common causes."""
        if not self.coco.imgs:
            return f"{source}: no image with a usable annotation: the file lists no images"
        if not self.coco.anns:
            return f"{source}: no image with a usable annotation: the file has no annotations"
        message = f"{source}: no image with a usable annotation; skipped " + skipped_summary(
            self.skipped
        )
        if "annotations without a mask" in self.skipped:
            message += (
                " (instance masks were asked for, data.with_masks; a box-only file trains a "
                "box-only detector: --model.detector faster_rcnn, retinanet or fcos with "
                "--data.with_masks false)"
            )
        return message

    def check_files(self) -> None:
        """Every image the JSON lists must exist (one error naming the count and the first)."""
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image folder {self.image_dir} does not exist")
        present = set(os.listdir(self.image_dir))
        missing = [
            info["file_name"]
            for info in self.coco.imgs.values()
            if info["file_name"] not in present
            and not (self.image_dir / info["file_name"]).is_file()
        ]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of {len(self.coco.imgs)} images listed in the annotations are "
                f"missing from {self.image_dir}: {', '.join(sorted(missing)[:5])}"
                + (", …" if len(missing) > 5 else "")
            )

    def _usable(self, ann: dict[str, Any], image_id: int) -> bool:
        info = self.coco.imgs[image_id]
        x, y, w, h = ann["bbox"]
        overlap_w = min(x + w, info["width"]) - max(x, 0)
        overlap_h = min(y + h, info["height"]) - max(y, 0)
        if ann["category_id"] not in self.label_of:
            reason = "annotations of unknown categories"
        elif ann.get("iscrowd", 0) and self.train:
            reason = "crowd annotations"
        elif w < 1 or h < 1 or overlap_w <= 0 or overlap_h <= 0:
            reason = "degenerate boxes"
        elif self.masks and not ann.get("segmentation"):
            reason = "annotations without a mask"
        else:
            return True
        self.skipped.setdefault(reason, []).append(ann.get("id", -1))
        return False

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        path = self.image_dir / info["file_name"]
        image = image_tensor(path)
        height, width = image.shape[1:]
        if (width, height) != (info["width"], info["height"]):
            raise ValueError(
                f"{path} is {width}×{height} but the annotations say "
                f"{info['width']}×{info['height']}"
            )
        anns = self.annotations[image_id]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        boxes[:, 0::2].clamp_(0, width)
        boxes[:, 1::2].clamp_(0, height)
        masks = None
        if self.masks:
            masks = torch.from_numpy(
                np.stack([self.coco.annToMask(a) for a in anns])
                if anns
                else np.zeros((0, height, width), np.uint8)
            )
        if self.train and self.hflip > 0 and torch.rand(()) < self.hflip:
            image = image.flip(-1)
            masks = None if masks is None else masks.flip(-1)
            boxes = torch.stack(
                [width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1
            )
        area = [float(a.get("area") or a["bbox"][2] * a["bbox"][3]) for a in anns]
        target = {
            "boxes": boxes,
            "labels": torch.tensor(
                [self.label_of[a["category_id"]] for a in anns], dtype=torch.int64
            ),
            "iscrowd": torch.tensor([a.get("iscrowd", 0) for a in anns], dtype=torch.int64),
            "area": torch.tensor(area, dtype=torch.float32),
            "image_id": torch.tensor(image_id),
        }
        if masks is not None:
            target["masks"] = masks
        return image, target


def skipped_summary(skipped: dict[str, list[int]], first: int = 5) -> str:
    """``3 degenerate boxes (annotation ids 4, 9, 12); 1 images without annotations (image id
    7)``: the count per reason and its first ``first`` ids."""
    parts = []
    for reason, ids in sorted(skipped.items()):
        kind = "image" if reason.startswith("images") else "annotation"
        shown = ", ".join(map(str, ids[:first])) + (", …" if len(ids) > first else "")
        parts.append(f"{len(ids)} {reason} ({kind} id{'s' if len(ids) > 1 else ''} {shown})")
    return "; ".join(parts)


def collate_detection(batch: Sequence[tuple[Tensor, dict[str, Tensor]]]) -> dict[str, Any]:
    """Lists, not stacks: the images keep their own sizes (the detector resizes and pads them)."""
    return {"images": [image for image, _ in batch], "targets": [target for _, target in batch]}


def collate_files(batch: Sequence[tuple[Tensor | None, str]]) -> dict[str, Any]:
    """The user's own images for ``predict``: readable ones as a list, their names, and the
    ``unreadable`` names."""
    return {
        "images": [x for x, _ in batch if x is not None],
        "name": [name for x, name in batch if x is not None],
        "unreadable": [name for x, name in batch if x is None],
    }


class CollateWithIds:
    """``collate_files`` plus ``image_id``: each readable image's id in an annotation file."""

    def __init__(self, ids: dict[str, int]) -> None:
        self.ids = ids

    def __call__(self, batch: Sequence[tuple[Tensor | None, str]]) -> dict[str, Any]:
        out = collate_files(batch)
        out["image_id"] = [self.ids[name] for name in out["name"]]
        return out


def image_ids_by_name(coco: Any, names: Sequence[str], source: str | Path) -> dict[str, int]:
    """The id of each image file ``names`` (paths relative to the predicted folder) in a COCO
    file, matched by its ``file_name`` (or, failing that, by the base name when it is unique);
    one error naming the files it does not list."""
    by_name = {info["file_name"]: image_id for image_id, info in coco.imgs.items()}
    by_base: dict[str, list[int]] = {}
    for file_name, image_id in by_name.items():
        by_base.setdefault(Path(file_name).name, []).append(image_id)
    ids, missing = {}, []
    for name in names:
        if name in by_name:
            ids[name] = by_name[name]
        elif len(by_base.get(Path(name).name, [])) == 1:
            ids[name] = by_base[Path(name).name][0]
        else:
            missing.append(name)
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(names)} images to predict are not listed in {source} (matched "
            f"by file_name): {', '.join(missing[:5])}"
            + (", …" if len(missing) > 5 else "")
            + "; predict them without data.predict_ann (numbered 1…N) or add them to the file"
        )
    return ids


class COCODetectionHparams(Protocol):
    """``COCODetectionDataModule.hparams``: its constructor's arguments."""

    root: str
    train_ann: str
    train_images: str
    val_ann: str
    val_images: str
    batch_size: int
    num_workers: int
    train_scales: tuple[int, ...]
    max_size: int
    hflip: float
    with_masks: bool | None
    predict_path: str | None
    predict_ann: str | None


class COCODetectionDataModule(TrainValLoaders, L.LightningDataModule):
    """COCO-format detection data, with or without instance masks (see the module docstring for
    what is skipped).

    ``test`` evaluates the validation split (COCO's test-dev has no public annotations).  The
    resize itself runs inside the detector (torchvision's transform, which also maps predictions
    back to each image's own size): ``train_scales`` and ``max_size`` are linked to the model.

    Args:
        root: dataset root.
        train_ann: training annotation file, relative to ``root``.
        train_images: training image folder, relative to ``root``.
        val_ann: validation annotation file (also used for ``test`` and the category list).
        val_images: validation image folder.
        batch_size: images per device and step.
        num_workers: data-loading processes.
        train_scales: short side(s) of the resized images; several = one drawn per training image
            (multi-scale training); evaluation uses the last one.
        max_size: cap on the long side of the resized images.
        hflip: probability of a horizontal flip of a training image.
        with_masks: read instance masks (``None``: when the annotation files have any
            ``segmentation``).  Without masks only the box-only detectors train; set it to
            ``false`` to keep the boxes of annotations without a mask in a file that has some.
        predict_path: an image or a folder of images for ``predict`` (default: the validation
            split).
        predict_ann: a COCO annotation file listing the images of ``predict_path`` (relative to
            ``root``, or absolute): the predictions keep its image ids (matched by
            ``file_name``), so ``COCOeval`` reads them against that file as they are.  Without
            it the images are numbered 1…N in sorted order (each result also names its
            ``file_name``).
    """

    reads = "the annotation files"

    def __init__(
        self,
        root: str,
        train_ann: str = "annotations/instances_train2017.json",
        train_images: str = "train2017",
        val_ann: str = "annotations/instances_val2017.json",
        val_images: str = "val2017",
        batch_size: int = 2,
        num_workers: int = 2,
        train_scales: tuple[int, ...] = (800,),
        max_size: int = 1333,
        hflip: float = 0.5,
        with_masks: bool | None = None,
        predict_path: str | None = None,
        predict_ann: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not train_scales or min(train_scales) < 32:
            raise ValueError(f"train_scales must be short sides of at least 32, got {train_scales}")
        self.root = Path(root)
        self.train_scales = tuple(train_scales)
        self.max_size = max_size
        self._coco: dict[str, Any] = {}
        self.train_set: COCOInstances | None = None
        self.val_set: COCOInstances | None = None

    @property
    def hp(self) -> COCODetectionHparams:
        """``self.hparams`` (the same object, which the batch-size finder may change), typed."""
        return cast(COCODetectionHparams, self.hparams)

    def _read(self, split: str) -> Any:
        if split not in self._coco:
            self._coco[split] = read_coco(self.root / getattr(self.hp, f"{split}_ann"))
        return self._coco[split]

    @property
    def categories(self) -> list[dict[str, Any]]:
        """COCO category entries of labels ``1 … K`` (from the validation annotations)."""
        return categories_of(self._read("val"))

    @property
    def category_ids(self) -> list[int]:
        return [c["id"] for c in self.categories]

    @property
    def classes(self) -> list[str]:
        return [c["name"] for c in self.categories]

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def has_masks(self) -> bool:
        """Whether targets hold instance masks: ``with_masks``, else whether the validation
        annotations have any ``segmentation`` (linked to the model's ``data_masks``)."""
        if self.hp.with_masks is not None:
            return bool(self.hp.with_masks)
        return has_segmentation(self._read("val"))

    def _split(self, split: str, train: bool) -> COCOInstances:
        h = self.hp
        coco = self._read(split)
        if split != "val" and categories_of(coco) != self.categories:
            raise ValueError(
                f"{h.train_ann} and {h.val_ann} list different categories; both splits need the "
                "same category ids and names"
            )
        dataset = COCOInstances(
            coco, self.root / getattr(h, f"{split}_images"), self.category_ids, train, h.hflip,
            masks=self.has_masks, source=self.root / getattr(h, f"{split}_ann"),
        )  # fmt: skip
        if dataset.skipped:
            warnings.warn(
                f"{self.root / getattr(h, f'{split}_ann')}: {len(dataset)} images kept; skipped "
                + skipped_summary(dataset.skipped),
                stacklevel=2,
            )
        return dataset

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_set is None:
            self.train_set = self._split("train", train=True)
        if stage != "predict" or self.hp.predict_path is None:
            self.val_set = self.val_set or self._split("val", train=False)

    def _batching(self) -> tuple[int, int, Callable | None]:
        return self.hp.batch_size, self.hp.num_workers, collate_detection

    def predict_dataloader(self) -> DataLoader:
        h = self.hp
        if h.predict_path is None:
            return self._loader("val")
        files = InputFiles(Path(h.predict_path), IMAGE_EXTENSIONS, image_tensor)
        collate: Any = collate_files
        if h.predict_ann is not None:
            source = self.root / h.predict_ann
            names = [str(path.relative_to(files.root)) for path in files.files]
            collate = CollateWithIds(image_ids_by_name(read_coco(source), names, source))
        return DataLoader(
            files, batch_size=h.batch_size, num_workers=h.num_workers, collate_fn=collate
        )
