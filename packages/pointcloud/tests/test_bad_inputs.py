"""Bad-input catalogue (point clouds): each case raises a specific exception naming the problem."""

import numpy as np
import pytest
import torch
from pc_scenes import write_label_tsv, write_las, write_ply, write_raw_scene

from metamixer.core import MixerSettings
from metamixer.pointcloud import SparseFFNet
from metamixer.pointcloud.data import LASDataModule, ScanNetDataModule, read_scene_list
from metamixer.pointcloud.inference import predict_chunked
from metamixer.pointcloud.ops import SceneTokens
from metamixer.pointcloud.scannet import LabelMap, convert_scene, read_ply
from metamixer.pointcloud.sparse import SparseStructure, SparseTensor

TINY = dict(enc_depths=(1, 1), enc_channels=(8, 16), dec_depths=(1,), dec_channels=(8,))


def scene_arrays(root, name="scene0000_00", labels=None, coord=None):
    folder = root / name
    folder.mkdir(parents=True)
    n = 50
    np.save(
        folder / "coord.npy", np.random.rand(n, 3).astype(np.float32) if coord is None else coord
    )
    np.save(folder / "color.npy", np.zeros((n, 3), np.uint8))
    np.save(folder / "normal.npy", np.zeros((n, 3), np.float32))
    np.save(folder / "segment20.npy", np.zeros(n, np.int16) if labels is None else labels)
    (root / "list.txt").write_text(f"{name}\n")
    return ScanNetDataModule(
        str(root), str(root / "list.txt"), str(root / "list.txt"), num_workers=0
    )


def mismatched_labels(t):
    scene = write_raw_scene(t / "raw", "scene0001_00")
    write_ply(
        scene / "scene0001_00_vh_clean_2.labels.ply", np.zeros((3, 3), np.float32), label=np.ones(3)
    )
    convert_scene(scene, t / "out", LabelMap(write_label_tsv(t / "l.tsv")))


def model_call(features, coords, batch):
    return SparseFFNet(**TINY)(features, coords, batch)


def attention_on(voxels: int, max_tokens: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(*[torch.arange(4)] * 3, indexing="ij"), -1).view(-1, 3)
    structure = SparseStructure(coords[:voxels], torch.zeros(voxels, dtype=torch.long), 1)
    x = SparseTensor(torch.randn(voxels, 4), structure)
    return SceneTokens(torch.nn.Identity(), max_tokens)(x).features


CASES = {
    "empty scene": (
        lambda t: SparseStructure(
            torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, dtype=torch.long), 1
        ),
        ValueError,
        "empty point cloud",
    ),
    "negative voxel coordinates": (
        lambda t: SparseStructure(torch.tensor([[0, -2, 0]]), torch.zeros(1, dtype=torch.long), 1),
        ValueError,
        "non-negative",
    ),
    "features with the wrong channel count": (
        lambda t: model_call(
            torch.zeros(4, 3), torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, dtype=torch.long)
        ),
        ValueError,
        r"\(N, 6\)",
    ),
    "NaN features": (
        lambda t: model_call(
            torch.full((4, 6), float("nan")),
            torch.arange(12).view(4, 3),
            torch.zeros(4, dtype=torch.long),
        ),
        ValueError,
        "NaN",
    ),
    "rows that do not match": (
        lambda t: model_call(
            torch.zeros(4, 6), torch.zeros(3, 3, dtype=torch.long), torch.zeros(4, dtype=torch.long)
        ),
        ValueError,
        "one row per voxel",
    ),
    "label mesh with other vertices": (mismatched_labels, ValueError, "label mesh has 3 vertices"),
    "missing mesh": (lambda t: read_ply(t / "none.ply"), FileNotFoundError, "none.ply"),
    "corrupt mesh": (
        lambda t: (t / "x.ply").write_bytes(b"ply\nformat nonsense\n") and read_ply(t / "x.ply"),
        ValueError,
        "not a readable PLY",
    ),
    "label TSV without its columns": (
        lambda t: (t / "l.tsv").write_text("a\tb\n1\t2\n") and LabelMap(t / "l.tsv"),
        ValueError,
        "columns",
    ),
    "labels outside the class map": (
        lambda t: scene_arrays(t, labels=np.full(50, 25, np.int16)).load("scene0000_00"),
        ValueError,
        "labels outside",
    ),
    "NaN coordinates in a scene": (
        lambda t: scene_arrays(t, coord=np.full((50, 3), np.nan, np.float32)).load("scene0000_00"),
        ValueError,
        "NaN or inf",
    ),
    "incomplete scene folder": (
        lambda t: ScanNetDataModule(str(t), "a", "b").load("scene9"),
        FileNotFoundError,
        "incomplete",
    ),
    "missing scene list": (
        lambda t: read_scene_list(t / "train.txt"),
        FileNotFoundError,
        "scene list",
    ),
    "unsupported class count": (
        lambda t: ScanNetDataModule(str(t), "a", "b", num_classes=40),
        ValueError,
        "20 .* or 200",
    ),
    "missing LAS file": (
        lambda t: LASDataModule(str(t / "x.las")).setup("fit"),
        FileNotFoundError,
        "fetch-data laspy",
    ),
    "class names that do not match the map": (
        lambda t: LASDataModule(str(write_las(t / "a.las")), class_names=["a"]),
        ValueError,
        "1 class names for 3 labels",
    ),
    "self-attention on a scene too large for it": (
        lambda t: attention_on(60, max_tokens=50),
        ValueError,
        "self-attention over 60 voxels of one scene at this level exceeds the limit of 50",
    ),
    "self-attention requested at a stage of the wrong count": (
        lambda t: SparseFFNet(**TINY, mixers=MixerSettings(token_mixers=["ffnified", "attention"])),
        ValueError,
        "token_mixers has 2 entries but the network has 3",
    ),
    "empty cloud for chunked inference": (
        lambda t: predict_chunked(SparseFFNet(**TINY), np.zeros((0, 3)), np.zeros((0, 6)), 0.1),
        ValueError,
        "empty point cloud",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, tmp_path):
    fn, error, match = CASES[case]
    with pytest.raises(error, match=match):
        fn(tmp_path)


def test_failed_conversion_leaves_no_partial_scene(tmp_path):
    with pytest.raises(ValueError):
        mismatched_labels(tmp_path)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
