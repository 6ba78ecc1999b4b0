import numpy as np
import pytest
import torch
from pc_scenes import write_label_tsv, write_las, write_ply, write_raw_scene

from metamixer.pointcloud import transforms as T
from metamixer.pointcloud.data import LASDataModule, ScanNetDataModule, collate_points
from metamixer.pointcloud.scannet import LabelMap, convert_scene, vertex_normals


@pytest.fixture
def scannet_root(tmp_path):
    raw = tmp_path / "scans"
    for i, name in enumerate(["scene0000_00", "scene0001_00", "scene0002_00"]):
        write_raw_scene(raw, name, seed=i)
    tsv = write_label_tsv(tmp_path / "labels.tsv")
    out = tmp_path / "scannet"
    for scene in sorted(raw.iterdir()):
        convert_scene(scene, out, LabelMap(tsv))
    (tmp_path / "train.txt").write_text("scene0000_00\nscene0001_00\n")
    (tmp_path / "val.txt").write_text("scene0002_00\n")
    return tmp_path


def test_converter_writes_the_preprocessed_layout(scannet_root):
    scene = scannet_root / "scannet" / "scene0000_00"
    arrays = {k: np.load(scene / f"{k}.npy") for k in ("coord", "color", "normal", "segment20")}
    n = len(arrays["coord"])
    assert all(len(a) == n for a in arrays.values())
    seg = arrays["segment20"]
    assert set(np.unique(seg)) == {-1, 0, 1}  # wall -> 0, floor -> 1, ceiling (nyu40 22) ignored
    assert (seg[: n // 2] == 1).all() and (seg[-5:] == -1).all()
    # floor normals point along ±z, wall normals along ±y
    assert np.allclose(np.abs(arrays["normal"][:10, 2]), 1, atol=0.05)
    assert np.allclose(np.abs(arrays["normal"][n // 2 : n // 2 + 10, 1]), 1, atol=0.05)
    assert not list((scannet_root / "scannet").glob(".*tmp"))


def test_vertex_normals_of_a_tetrahedron_are_unit():
    coord = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    n = vertex_normals(coord, faces)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1)
    np.testing.assert_allclose(n[0], -np.ones(3) / np.sqrt(3), atol=1e-6)


def test_mesh_without_colours_or_faces_is_filled_with_a_warning(tmp_path):
    write_raw_scene(tmp_path / "raw", "scene0005_00", colours=False, faces=False)
    tsv = write_label_tsv(tmp_path / "labels.tsv")
    with pytest.warns(UserWarning) as record:
        out = convert_scene(tmp_path / "raw" / "scene0005_00", tmp_path / "out", LabelMap(tsv))
    messages = " ".join(str(r.message) for r in record)
    assert "no colours" in messages and "no faces" in messages
    assert (np.load(out / "normal.npy") == 0).all()


def test_vertex_count_mismatch_between_mesh_and_labels(tmp_path):
    scene = write_raw_scene(tmp_path / "raw", "scene0006_00")
    coord = np.zeros((5, 3), np.float32)
    write_ply(scene / "scene0006_00_vh_clean_2.labels.ply", coord, label=np.ones(5))
    with pytest.raises(ValueError, match="label mesh has 5 vertices"):
        convert_scene(scene, tmp_path / "out", LabelMap(write_label_tsv(tmp_path / "l.tsv")))


def test_scannet_datamodule_batches_and_maps_every_point(scannet_root):
    dm = ScanNetDataModule(
        str(scannet_root / "scannet"), str(scannet_root / "train.txt"), str(scannet_root / "val.txt"),
        grid_size=0.1, batch_size=2, num_workers=0,
    )  # fmt: skip
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["feat"].shape[1] == 6 and batch["batch"].max() == 1
    assert batch["grid_coord"].min() >= 0 and (batch["feat"][:, :3].abs() <= 1.0 + 1e-6).all()
    test = next(iter(dm.test_dataloader()))
    n_points = len(np.load(scannet_root / "scannet" / "scene0002_00" / "coord.npy"))
    assert len(test["inverse"]) == len(test["segment_full"]) == n_points
    assert test["inverse"].max() < len(test["feat"]) < n_points  # voxels < points


def test_grid_sample_keeps_one_point_per_voxel_and_every_point_maps_back():
    rng = np.random.default_rng(0)
    scene = {"coord": rng.uniform(0, 1, (500, 3)).astype(np.float32), "segment": np.zeros(500)}
    out = T.grid_sample(scene, 0.25, rng)
    keys = {tuple(k) for k in out["grid_coord"]}
    assert len(keys) == len(out["coord"])
    np.testing.assert_array_equal(
        np.floor(scene["coord"] / 0.25).astype(int)
        - np.floor(scene["coord"] / 0.25).astype(int).min(0),
        out["grid_coord"][out["inverse"]],
    )


def test_sphere_crop_limits_points():
    rng = np.random.default_rng(0)
    scene = {
        "coord": rng.normal(size=(1000, 3)).astype(np.float32),
        "grid_coord": np.zeros((1000, 3), int),
    }
    assert len(T.sphere_crop(scene, rng, 300)["coord"]) == 300


def test_las_tile_splits_spatially(tmp_path):
    path = write_las(tmp_path / "tile.las")
    dm = LASDataModule(str(path), grid_size=0.5, crop_size=10, crops_per_epoch=4, batch_size=2)
    dm.setup("fit")
    assert dm.parts["train"]["coord"][:, 0].max() < dm.parts["test"]["coord"][:, 0].min() + 1e-6
    assert set(np.unique(dm.parts["train"]["segment"])) <= {-1, 0, 1, 2}  # noise (7) ignored
    batch = next(iter(dm.train_dataloader()))
    assert batch["feat"].shape[1] == dm.in_channels and len(batch["offset"]) == 2
    test = next(iter(dm.test_dataloader()))
    assert len(test["segment_full"]) == len(dm.parts["test"]["coord"])


def test_missing_and_corrupt_las(tmp_path):
    with pytest.raises(FileNotFoundError, match="fetch-data laspy"):
        LASDataModule(str(tmp_path / "nope.las")).setup("fit")
    bad = tmp_path / "bad.las"
    bad.write_bytes(b"LASF" + b"\0" * 50)
    with pytest.raises(ValueError, match="not a readable LAS"):
        LASDataModule(str(bad)).setup("fit")


def test_collate_offsets():
    scenes = [
        {
            "coord": np.zeros((n, 3)),
            "feat": np.zeros((n, 6)),
            "grid_coord": np.zeros((n, 3), np.int64),
            "segment": np.zeros(n),
        }
        for n in (3, 5)
    ]
    batch = collate_points(scenes)
    assert batch["offset"].tolist() == [3, 8] and batch["batch"].tolist() == [0] * 3 + [1] * 5
    assert batch["feat"].dtype == torch.float32


def test_laz_reads_like_the_uncompressed_las(tmp_path):
    import laspy

    from metamixer.pointcloud.data import read_las

    las_path = write_las(tmp_path / "tile.las")
    laz_path = tmp_path / "tile.laz"
    laspy.read(las_path).write(str(laz_path))  # compressed by the lazrs backend
    assert laz_path.stat().st_size < las_path.stat().st_size
    with laspy.open(laz_path) as f:
        assert f.header.point_format.id == 3 and f.header.are_points_compressed
    classes = {2: 0, 5: 1, 6: 2}
    las, laz = read_las(las_path, classes), read_las(laz_path, classes)
    assert las.keys() == laz.keys()
    for key in las:
        np.testing.assert_array_equal(laz[key], las[key], err_msg=key)
