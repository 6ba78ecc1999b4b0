"""Point-cloud datasets: preprocessed ScanNet / S3DIS scenes and LAS/LAZ aerial LiDAR tiles.

Samples are scene dicts (see ``transforms``); ``collate_points`` concatenates them into an
offset-batched dict: ``feat (N, F)``, ``grid_coord (N, 3)``, ``batch (N,)``, ``segment (N,)`` and,
for evaluation, ``inverse`` / ``segment_full`` to score every original point and ``feat_full``
(every original point's features, for test-time fragments).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Generic, Protocol, TypeVar, cast

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from metamixer.lab.loaders import split_loader

from . import transforms as T
from .s3dis import S3DIS_CLASSES
from .scannet import LabelMap

SCANNET20_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
    "bathtub", "otherfurniture",
)  # fmt: skip


def collate_points(samples: Sequence[T.Scene]) -> dict[str, Tensor]:
    """Concatenate scenes; ``batch`` holds each point's scene index, ``offset`` the cumulative
    counts.  Evaluation samples also carry ``inverse`` (shifted per scene) and ``segment_full``,
    and ``feat_full`` when every sample has it."""
    out: dict[str, list] = {"feat": [], "grid_coord": [], "batch": [], "segment": []}
    full, inverse, feat_full, shift = [], [], [], 0
    for i, s in enumerate(samples):
        n = len(s["coord"])
        out["feat"].append(torch.from_numpy(np.ascontiguousarray(s["feat"], dtype=np.float32)))
        out["grid_coord"].append(torch.from_numpy(s["grid_coord"]))
        out["batch"].append(torch.full((n,), i, dtype=torch.long))
        out["segment"].append(torch.from_numpy(s["segment"].astype(np.int64)))
        if "segment_full" in s:
            full.append(torch.from_numpy(s["segment_full"].astype(np.int64)))
            inverse.append(torch.from_numpy(s["inverse"]) + shift)
        if "feat_full" in s:
            feat_full.append(torch.from_numpy(np.ascontiguousarray(s["feat_full"], np.float32)))
        shift += n
    batch = {k: torch.cat(v) for k, v in out.items()}
    batch["offset"] = torch.tensor([len(s["coord"]) for s in samples]).cumsum(0)
    if full:
        batch["segment_full"], batch["inverse"] = torch.cat(full), torch.cat(inverse)
        if len(feat_full) == len(full):
            batch["feat_full"] = torch.cat(feat_full)
    return batch


#: what a ``SceneDataset``'s ``load`` gives its ``transform`` (a scene, or just its name)
Loaded = TypeVar("Loaded")


class SceneDataset(Dataset[T.Scene], Generic[Loaded]):
    """Scenes loaded by ``load(i)`` and turned into model inputs by ``transform(scene, rng)``."""

    def __init__(
        self,
        names: list[str],
        load: Callable[[str], Loaded],
        transform: Callable[[Loaded, np.random.Generator | None], T.Scene],
        *,
        train: bool,
        repeat: int = 1,
    ) -> None:
        if not names:
            raise ValueError("no scenes to load (empty scene list)")
        self.names, self.load, self.transform, self.train, self.repeat = (
            names,
            load,
            transform,
            train,
            repeat,
        )

    def __len__(self) -> int:
        return len(self.names) * self.repeat

    def __getitem__(self, index: int) -> T.Scene:
        scene = self.load(self.names[index % len(self.names)])
        rng = np.random.default_rng(int(torch.randint(0, 2**31, ()))) if self.train else None
        return self.transform(scene, rng)


def _loader(
    dataset: SceneDataset,
    batch_size: int,
    num_workers: int,
    train: bool,
    collate: Callable | None = None,
) -> DataLoader:
    return split_loader(
        dataset, batch_size, num_workers, train=train, collate_fn=collate or collate_points
    )


# --- ScanNet --------------------------------------------------------------------------------------


def read_scene_list(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"scene list {path} not found (one scene name per line)")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


class PointCloudData(L.LightningDataModule):
    """The base of the point-cloud data modules (``--data NAME`` picks a subclass, yours
    included); a subclass provides ``num_classes``, ``in_channels`` and ``classes``."""

    #: the feature channels holding normals (``None``: none)
    normal_channels: tuple[int, int] | None = None


def _training_rng(rng: np.random.Generator | None) -> np.random.Generator:
    """The generator a training transform draws from (``SceneDataset`` gives one when training)."""
    if rng is None:
        raise ValueError("a training transform needs a random generator (SceneDataset(train=True))")
    return rng


class IndoorScenesHparams(Protocol):
    """The constructor arguments every ``IndoorScenes`` saves in its ``hparams``."""

    root: str
    grid_size: float
    point_max: int
    batch_size: int
    num_workers: int
    mix_prob: float


class IndoorScenes(PointCloudData):
    """Preprocessed indoor scenes (``coord``, ``color``, ``normal``, labels as ``.npy`` per
    scene folder) with the authors' training pipeline, optional Mix3D, and every original point
    scored in evaluation.  ``ScanNetDataModule`` and ``S3DISDataModule`` choose the scenes."""

    in_channels = 6
    normal_channels = (3, 6)  # features are colour (0:3) then normal (3:6)
    num_classes: int
    segment_key: str

    def __init__(self, root: str, grid_size: float, point_max: int, batch_size: int,
                 num_workers: int, mix_prob: float) -> None:  # fmt: skip
        super().__init__()
        if not 0.0 <= mix_prob <= 1.0:
            raise ValueError(f"mix_prob must be in [0, 1], got {mix_prob}")
        self.root = Path(root)
        self.sets: dict[str, SceneDataset] = {}

    @property
    def hp(self) -> IndoorScenesHparams:
        """``self.hparams`` (the same object, which the batch-size finder may change), typed."""
        return cast(IndoorScenesHparams, self.hparams)

    def scenes(self, split: str) -> list[str]:
        """Scene folder names (relative to ``root``) of "train", "val" or "test"."""
        raise NotImplementedError

    def load(self, name: str) -> T.Scene:
        folder = self.root / name
        try:
            scene = {k: np.load(folder / f"{k}.npy") for k in ("coord", "color", "normal")}
            scene["segment"] = np.load(folder / f"{self.segment_key}.npy").astype(np.int64)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"scene {folder} is incomplete ({err.filename} missing); convert the raw scans "
                "with `python -m metamixer.pointcloud.scannet` / `metamixer.pointcloud.s3dis`"
            ) from err
        n = len(scene["coord"])
        if any(len(v) != n for v in scene.values()):
            raise ValueError(f"scene {folder}: arrays have different lengths")
        if n == 0:
            raise ValueError(f"scene {folder} is empty")
        if not np.isfinite(scene["coord"]).all():
            raise ValueError(f"scene {folder}: coordinates contain NaN or inf")
        if scene["segment"].max() >= self.num_classes or scene["segment"].min() < -1:
            raise ValueError(f"scene {folder}: labels outside -1..{self.num_classes - 1}")
        return scene

    def _train(self, scene: T.Scene, rng: np.random.Generator | None) -> T.Scene:
        h = self.hp
        out = T.scannet_train_transform(scene, _training_rng(rng), h.grid_size, h.point_max)
        out["feat"] = np.concatenate([out["color"], out["normal"]], 1)
        return out

    def _eval(self, scene: T.Scene, rng: np.random.Generator | None) -> T.Scene:
        full = T.normalize_color(scene)  # features of every original point (colour, normal)
        feat_full = np.concatenate([full["color"], full["normal"]], 1)
        out = T.scannet_eval_transform(
            {**scene, "segment_full": scene["segment"], "feat_full": feat_full},
            self.hp.grid_size,
        )
        out["feat"] = np.concatenate([out["color"], out["normal"]], 1)
        return out

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.sets["train"] = SceneDataset(
                self.scenes("train"), self.load, self._train, train=True
            )
        self.sets["val"] = SceneDataset(self.scenes("val"), self.load, self._eval, train=False)
        self.sets["test"] = SceneDataset(self.scenes("test"), self.load, self._eval, train=False)

    def train_dataloader(self) -> DataLoader:
        h = self.hp
        collate = partial(mix3d_collate, mix_prob=h.mix_prob) if h.mix_prob > 0 else None
        return _loader(self.sets["train"], h.batch_size, h.num_workers, True, collate)

    def val_dataloader(self) -> DataLoader:
        return _loader(self.sets["val"], 1, self.hp.num_workers, False)

    def test_dataloader(self) -> DataLoader:
        return _loader(self.sets["test"], 1, self.hp.num_workers, False)


def mix3d(first: T.Scene, second: T.Scene) -> T.Scene:
    """Mix3D: overlay two training scenes (each centred) into one out-of-context scene; voxels of
    ``second`` that fall on a voxel of ``first`` are dropped (one point per voxel)."""
    taken = {tuple(c) for c in first["grid_coord"].tolist()}
    keep = np.array([tuple(c) not in taken for c in second["grid_coord"].tolist()], dtype=bool)
    shift = np.minimum(first["grid_coord"].min(0), second["grid_coord"][keep].min(0, initial=0))
    keys = ("coord", "feat", "segment", "grid_coord")
    merged = {k: np.concatenate([first[k], second[k][keep]]) for k in keys}
    merged["grid_coord"] = merged["grid_coord"] - shift
    return merged


def mix3d_collate(samples: Sequence[T.Scene], mix_prob: float) -> dict[str, Tensor]:
    """``collate_points`` after merging consecutive pairs of scenes with probability ``mix_prob``
    (drawn from torch's generator, which ``EpochShuffle`` seeds per epoch)."""
    out, i = [], 0
    while i < len(samples):
        if i + 1 < len(samples) and torch.rand(()).item() < mix_prob:
            out.append(mix3d(samples[i], samples[i + 1]))
            i += 2
        else:
            out.append(samples[i])
            i += 1
    return collate_points(out)


class ScanNetHparams(IndoorScenesHparams, Protocol):
    """``ScanNetDataModule.hparams``: its constructor's arguments."""

    train_list: str
    val_list: str
    test_list: str | None
    num_classes: int
    label_tsv: str | None


class ScanNetDataModule(IndoorScenes):
    """Preprocessed ScanNet v2 / ScanNet200 (``metamixer.pointcloud.scannet`` output).

    Args:
        root: folder of per-scene folders (``coord.npy``, ``color.npy``, ``normal.npy``,
            ``segment20.npy`` / ``segment200.npy``).
        train_list, val_list: text files with one scene name per line (the official splits).
        test_list: scenes scored on every original point (default: ``val_list``).
        num_classes: 20 (ScanNet v2) or 200 (ScanNet200).
        label_tsv: ``scannetv2-labels.combined.tsv`` for the class names (optional).
        grid_size: voxel size in metres.
        point_max: sphere-crop size for training.
        batch_size: scenes per batch.
        num_workers: data-loading processes.
        mix_prob: Mix3D probability of merging two training scenes into one (the authors: 0.8).
    """

    def __init__(
        self,
        root: str,
        train_list: str,
        val_list: str,
        test_list: str | None = None,
        num_classes: int = 20,
        label_tsv: str | None = None,
        grid_size: float = 0.02,
        point_max: int = 102400,
        batch_size: int = 12,
        num_workers: int = 4,
        mix_prob: float = 0.0,
    ) -> None:
        super().__init__(root, grid_size, point_max, batch_size, num_workers, mix_prob)
        if num_classes not in (20, 200):
            raise ValueError(
                f"num_classes must be 20 (ScanNet v2) or 200 (ScanNet200), got {num_classes}"
            )
        self.save_hyperparameters()
        self.num_classes = num_classes
        self.segment_key = f"segment{num_classes}"

    @property
    def hp(self) -> ScanNetHparams:
        """``self.hparams`` (the same object, which the batch-size finder may change), typed."""
        return cast(ScanNetHparams, self.hparams)

    @property
    def classes(self) -> list[str]:
        if self.num_classes == 20:
            if self.hp.label_tsv:
                return LabelMap(Path(self.hp.label_tsv)).class_names20
            return list(SCANNET20_NAMES)
        return [f"class{i}" for i in range(self.num_classes)]

    def scenes(self, split: str) -> list[str]:
        h = self.hp
        lists = {"train": h.train_list, "val": h.val_list, "test": h.test_list or h.val_list}
        return read_scene_list(Path(lists[split]))


class S3DISHparams(IndoorScenesHparams, Protocol):
    """``S3DISDataModule.hparams``: its constructor's arguments."""

    test_area: int


class S3DISDataModule(IndoorScenes):
    """S3DIS rooms (``metamixer.pointcloud.s3dis`` output): train on every area but
    ``test_area``, validate and test on it (the Area-5 protocol).

    Args:
        root: folder of ``Area_<k>/<room>/`` folders.
        test_area: the held-out area (5 in the standard protocol).
        grid_size: voxel size in metres.
        point_max: sphere-crop size for training.
        batch_size: rooms per batch.
        num_workers: data-loading processes.
        mix_prob: Mix3D probability of merging two training rooms into one.
    """

    num_classes = len(S3DIS_CLASSES)
    segment_key = "segment"
    classes = S3DIS_CLASSES

    def __init__(
        self,
        root: str,
        test_area: int = 5,
        grid_size: float = 0.02,
        point_max: int = 80000,
        batch_size: int = 12,
        num_workers: int = 4,
        mix_prob: float = 0.0,
    ) -> None:
        super().__init__(root, grid_size, point_max, batch_size, num_workers, mix_prob)
        self.save_hyperparameters()

    @property
    def hp(self) -> S3DISHparams:
        """``self.hparams`` (the same object, which the batch-size finder may change), typed."""
        return cast(S3DISHparams, self.hparams)

    def scenes(self, split: str) -> list[str]:
        rooms = sorted(p for p in self.root.glob("Area_*/*") if p.is_dir())
        test = f"Area_{self.hp.test_area}"
        if not any(r.parent.name == test for r in rooms):
            raise FileNotFoundError(
                f"no {test}/<room>/ folders under {self.root}; convert the release with "
                "`python -m metamixer.pointcloud.s3dis`"
            )
        chosen = [r for r in rooms if (r.parent.name == test) == (split != "train")]
        return [f"{r.parent.name}/{r.name}" for r in chosen]


# --- LAS / LAZ aerial LiDAR ---------------------------------------------------------------------

ASPRS_DEFAULT_MAP = {2: 0, 3: 1, 4: 1, 5: 1, 6: 2}  # ground, vegetation (low/med/high), building
DEFAULT_LAS_NAMES = ("ground", "vegetation", "building")


def read_las(path: Path, class_map: dict[int, int]) -> T.Scene:
    """Points, features and mapped labels of a LAS/LAZ file (ASPRS classes not in the map -> -1)."""
    import laspy

    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; `scripts/fetch-data laspy` extracts the laspy sample tiles"
        )
    try:
        las = laspy.read(path)
    except Exception as err:  # laspy raises its own exception types for bad files
        raise ValueError(f"{path} is not a readable LAS/LAZ file: {err}") from err
    coord = np.stack([las.x, las.y, las.z], 1).astype(np.float64)
    if len(coord) == 0:
        raise ValueError(f"{path} holds no points")
    finite = np.isfinite(coord).all(1)
    if not finite.all():
        warnings.warn(f"{path}: dropping {int((~finite).sum())} points with NaN/inf", stacklevel=2)
    classes = np.asarray(las.classification, dtype=np.int64)
    lut = np.full(256, -1, dtype=np.int64)
    for asprs, label in class_map.items():
        lut[int(asprs)] = int(label)
    intensity = np.asarray(las.intensity, dtype=np.float32)
    returns = np.maximum(np.asarray(las.number_of_returns, dtype=np.float32), 1)
    ret = np.asarray(las.return_number, dtype=np.float32)
    scene = {
        "coord": (coord - coord.min(0)).astype(np.float32),
        "intensity": (np.log1p(intensity) - np.log1p(intensity).mean())
        / (np.log1p(intensity).std() + 1e-6),
        "returns": np.stack([ret / returns, returns / returns.max()], 1),
        "segment": lut[classes],
        "row": np.arange(len(coord)),  # the point's row in the file
    }
    return T.select(scene, np.asarray(finite))


class LASHparams(Protocol):
    """``LASDataModule.hparams``: its constructor's arguments."""

    path: str
    class_map: dict[int, int] | None
    class_names: list[str] | None
    grid_size: float
    train_fraction: float
    crop_size: float
    crops_per_epoch: int
    batch_size: int
    num_workers: int
    predict_path: str | None


class LASDataModule(PointCloudData):
    """One LAS/LAZ tile, split spatially along x into a training and a test part.

    Training samples are random square crops of the training part with rotation / flip / scale /
    jitter; validation and test score every point of the test part.  Features (6): position
    relative to the crop (x, y, z in metres / 10), intensity (log, standardised), return number /
    number of returns, number of returns / max.

    Args:
        path: the LAS/LAZ file.
        class_map: ASPRS class -> label (others ignored); default ground / vegetation / building.
        class_names: one name per label.
        grid_size: voxel size in metres.
        train_fraction: share of the x extent used for training (the rest is the test part).
        crop_size: side of training crops in metres.
        crops_per_epoch: training crops per epoch.
        batch_size: crops per batch.
        num_workers: data-loading processes.
        predict_path: a LAS/LAZ file to label with ``predict``, in square chunks of
            ``crop_size`` metres with a quarter of that as context (bounded memory); the same
            file with its ``classification`` predicted is written into the run folder.
    """

    in_channels = 6
    normal_channels = None  # intensity / return features do not turn with the scene

    def __init__(
        self,
        path: str = "data/pointcloud/laspy/file_with_both_wkt_and_geotiff_vlrs.las",
        class_map: dict[int, int] | None = None,
        class_names: list[str] | None = None,
        grid_size: float = 0.4,
        train_fraction: float = 0.7,
        crop_size: float = 24.0,
        crops_per_epoch: int = 64,
        batch_size: int = 4,
        num_workers: int = 0,
        predict_path: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.class_map = dict(ASPRS_DEFAULT_MAP if class_map is None else class_map)
        self.predict_path = predict_path
        self.classes = list(class_names or DEFAULT_LAS_NAMES)
        self.num_classes = max(self.class_map.values()) + 1
        if len(self.classes) != self.num_classes:
            raise ValueError(f"{len(self.classes)} class names for {self.num_classes} labels")
        self.parts: dict[str, T.Scene] = {}

    @property
    def hp(self) -> LASHparams:
        """``self.hparams`` (the same object, which the batch-size finder may change), typed."""
        return cast(LASHparams, self.hparams)

    def setup(self, stage: str) -> None:
        if self.parts or (stage == "predict" and self.hp.predict_path is not None):
            return
        h = self.hp
        scene = read_las(Path(h.path), self.class_map)
        cut = scene["coord"][:, 0].min() + h.train_fraction * np.ptp(scene["coord"][:, 0])
        left = scene["coord"][:, 0] < cut
        self.parts = {"train": T.select(scene, left), "test": T.select(scene, ~left)}
        for name, part in self.parts.items():
            if len(part["coord"]) == 0:
                raise ValueError(f"the {name} part of {h.path} is empty; change train_fraction")

    def _features(self, scene: T.Scene, full: T.Scene | None = None) -> T.Scene:
        """``feat`` of the scene's points, and ``feat_full`` of ``full``'s (its original points)
        in the same frame."""
        origin = np.array([*scene["coord"][:, :2].mean(0), scene["coord"][:, 2].min()])
        for key, points in (("feat", scene), ("feat_full", full)):
            if points is not None:
                rel = points["coord"] - origin
                scene[key] = np.concatenate(
                    [rel / 10.0, points["intensity"][:, None], points["returns"]], 1
                )
        return scene

    def _crop(self, name: str, rng: np.random.Generator | None) -> T.Scene:
        h = self.hp
        part = self.parts["train"]
        xy = part["coord"][:, :2]
        rng = _training_rng(rng)
        centre = xy[rng.integers(len(xy))]
        inside = (np.abs(xy - centre) <= h.crop_size / 2).all(1)
        scene = T.select(part, inside)
        scene = T.random_rotate(scene, rng, 1.0, axis=2, p=1.0)
        scene = T.random_flip(scene, rng)
        scene = T.random_scale(scene, rng, 0.9, 1.1)
        scene = T.random_jitter(scene, rng, sigma=0.02, clip=0.05)
        scene = T.grid_sample(scene, h.grid_size, rng)
        return self._features(scene)

    def _whole(self, name: str, rng: np.random.Generator | None) -> T.Scene:
        part = self.parts[name]
        scene = T.grid_sample({**part, "segment_full": part["segment"]}, self.hp.grid_size, None)
        return self._features(scene, full=part)

    def train_dataloader(self) -> DataLoader:
        h = self.hp
        data = SceneDataset(
            ["train"],
            lambda n: n,
            lambda n, rng: self._crop(n, rng),
            train=True,
            repeat=h.crops_per_epoch,
        )
        return _loader(data, h.batch_size, h.num_workers, True)

    def _eval(self) -> DataLoader:
        data = SceneDataset(["test"], lambda n: n, lambda n, rng: self._whole(n, rng), train=False)
        return _loader(data, 1, self.hp.num_workers, False)

    def val_dataloader(self) -> DataLoader:
        return self._eval()

    def test_dataloader(self) -> DataLoader:
        return self._eval()

    def predict_dataloader(self) -> DataLoader:
        if self.hp.predict_path is None:
            return self._eval()
        return DataLoader(LASChunks(self), batch_size=None, num_workers=self.hp.num_workers)


class LASChunks(Dataset):
    """Square chunks of ``crop_size`` metres of a LAS/LAZ file, each with a quarter of that as
    context: grid-sampled model input plus ``index`` (the file rows of the chunk's own points)
    and ``inverse`` (their voxels), so every point gets the label of its voxel."""

    def __init__(self, dm: LASDataModule) -> None:
        if dm.hp.predict_path is None:
            raise ValueError("LASChunks reads the data module's predict_path, which is not set")
        self.dm, self.path = dm, Path(dm.hp.predict_path)
        self.scene = read_las(self.path, dm.class_map)  # rows = the file's finite points
        size = dm.hp.crop_size
        xy = self.scene["coord"][:, :2]
        self.cell = np.floor(xy / size).astype(np.int64)
        self.cells = np.unique(self.cell, axis=0)

    def __len__(self) -> int:
        return len(self.cells)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        size, (cx, cy) = self.dm.hp.crop_size, self.cells[i]
        xy = self.scene["coord"][:, :2]
        lo, margin = np.array([cx, cy]) * size, size / 4
        near = np.nonzero(((xy >= lo - margin) & (xy < lo + size + margin)).all(1))[0]
        core = (self.cell[near] == (cx, cy)).all(1)
        part = T.select(self.scene, near)
        region = T.grid_sample(
            {**part, "segment_full": part["segment"]}, self.dm.hp.grid_size, None
        )
        batch = collate_points([self.dm._features(region, full=part)])
        keep = torch.from_numpy(core)
        batch["row"], batch["inverse"] = torch.from_numpy(part["row"][core]), batch["inverse"][keep]
        batch["feat_full"] = batch["feat_full"][keep]
        return batch
