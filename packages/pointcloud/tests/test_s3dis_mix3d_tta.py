"""S3DIS conversion and the Area-5 split, Mix3D scene mixing, and rotation and fragment voting at
test time."""

import numpy as np
import pytest
import torch

from metamixer.pointcloud.__main__ import main
from metamixer.pointcloud.data import S3DISDataModule, collate_points, mix3d, mix3d_collate
from metamixer.pointcloud.lit import Segmenter, fragment_picks, rotate_about_z
from metamixer.pointcloud.s3dis import S3DIS_CLASSES, estimate_normals, read_room
from metamixer.pointcloud.s3dis import main as convert


def write_room(folder, seed=0):
    """A 4 × 3 × 2.5 m room in the release layout: floor, ceiling, a wall and a chair."""
    rng = np.random.default_rng(seed)
    (folder / "Annotations").mkdir(parents=True)
    u = rng.uniform(0, 1, (400, 2))
    objects = {
        "floor_1": np.column_stack([4 * u[:, 0], 3 * u[:, 1], np.zeros(400)]),
        "ceiling_1": np.column_stack([4 * u[:, 0], 3 * u[:, 1], np.full(400, 2.5)]),
        "wall_1": np.column_stack([np.zeros(400), 3 * u[:, 0], 2.5 * u[:, 1]]),
        "chair_1": np.column_stack([2 + 0.4 * u[:, 0], 1 + 0.4 * u[:, 1], 0.45 + 0 * u[:, 0]]),
        "stairs_1": np.column_stack([3.5 + 0.2 * u[:, 0], 0.2 * u[:, 1], 0.2 * u[:, 0]]),
    }
    for name, xyz in objects.items():
        rgb = rng.integers(0, 256, (len(xyz), 3))
        np.savetxt(folder / "Annotations" / f"{name}.txt", np.column_stack([xyz, rgb]), fmt="%.4f")


@pytest.fixture
def s3dis_root(tmp_path):
    raw = tmp_path / "Stanford3dDataset_v1.2_Aligned_Version"
    for area, room in ((1, "office_1"), (2, "hallway_1"), (5, "office_1")):
        write_room(raw / f"Area_{area}" / room, seed=area)
    convert(["--raw", str(raw), "--out", str(tmp_path / "s3dis")])
    return tmp_path / "s3dis"


def test_rooms_convert_with_classes_and_inward_normals(s3dis_root, tmp_path):
    room = {
        k: np.load(s3dis_root / "Area_1/office_1" / f"{k}.npy")
        for k in ("coord", "normal", "segment")
    }
    assert len(room["coord"]) == len(room["segment"]) == 2000
    names = [S3DIS_CLASSES[i] for i in np.unique(room["segment"])]
    assert names == ["ceiling", "floor", "wall", "chair", "clutter"]  # stairs count as clutter
    floor = room["segment"] == S3DIS_CLASSES.index("floor")
    np.testing.assert_allclose(room["normal"][floor].mean(0), [0, 0, 1], atol=0.05)  # up, inward
    bad = tmp_path / "bad_room"
    (bad / "Annotations").mkdir(parents=True)
    (bad / "Annotations" / "lamp_1.txt").write_text("0 0 0 1 2 3\n")
    with pytest.raises(ValueError, match="unknown class 'lamp'"):
        read_room(bad)


def test_normals_of_a_plane_are_its_unit_normal():
    xy = np.random.default_rng(0).uniform(0, 1, (300, 2))
    plane = np.column_stack([xy, 0.3 * xy[:, 0]]).astype(np.float32)
    normal = estimate_normals(plane)
    expected = np.array([-0.3, 0, 1]) / np.linalg.norm([-0.3, 0, 1])
    np.testing.assert_allclose(np.abs(normal @ expected), 1, atol=1e-4)


def test_area_5_is_held_out_and_a_model_trains_on_the_rest(s3dis_root, tmp_path):
    dm = S3DISDataModule(str(s3dis_root), grid_size=0.1, batch_size=2, num_workers=0, mix_prob=1.0)
    assert dm.scenes("train") == ["Area_1/office_1", "Area_2/hallway_1"]
    assert dm.scenes("test") == dm.scenes("val") == ["Area_5/office_1"]
    cli = main([
        "fit", "--data=metamixer.pointcloud.data.S3DISDataModule", f"--data.root={s3dis_root}",
        "--data.grid_size=0.1", "--data.batch_size=2", "--data.num_workers=0",
        "--data.mix_prob=1.0", "--model.arch=sparse_ffnet_test", "--model.test_views=4",
        "--model.test_fragments=2",
        "--trainer.max_epochs=1", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false", "--test_after_fit=true",
    ])  # fmt: skip
    assert (
        cli.model.hparams.num_classes == 13 and "test/IoU/ceiling" in cli.trainer.callback_metrics
    )


def scene(seed, n=200):
    rng = np.random.default_rng(seed)
    grid = np.unique(rng.integers(0, 8, (n, 3)), axis=0)
    m = len(grid)
    return {"coord": grid.astype(np.float32) * 0.1, "feat": rng.random((m, 6), dtype=np.float32),
            "segment": rng.integers(0, 5, m), "grid_coord": grid}  # fmt: skip


def test_mix3d_overlays_two_scenes_one_point_per_voxel():
    a, b = scene(0), scene(1)
    mixed = mix3d(a, b)
    assert len(np.unique(mixed["grid_coord"], axis=0)) == len(mixed["grid_coord"])
    assert len(a["coord"]) < len(mixed["coord"]) < len(a["coord"]) + len(b["coord"])
    np.testing.assert_array_equal(mixed["segment"][: len(a["segment"])], a["segment"])
    torch.manual_seed(0)
    batch = mix3d_collate([a, b, scene(2)], mix_prob=1.0)
    assert batch["offset"].tolist() == [
        len(mixed["coord"]),
        len(mixed["coord"]) + len(scene(2)["coord"]),
    ]


def test_rotation_voting_turns_coordinates_and_normals_exactly():
    grid = torch.tensor([[0, 0, 0], [2, 1, 3], [1, 3, 0]])
    feat = torch.tensor([[0.0, 0, 0, 1, 0, 0]] * 3)
    turned = rotate_about_z({"grid_coord": grid, "feat": feat}, 1, 4, (3, 6))
    assert turned["grid_coord"].tolist() == [[3, 0, 0], [2, 2, 3], [0, 1, 0]]  # (x, y) -> (-y, x)
    torch.testing.assert_close(turned["feat"][:, 3:], torch.tensor([[0.0, 1, 0]] * 3))
    back = rotate_about_z(turned, 3, 4, (3, 6))
    torch.testing.assert_close(back["feat"], feat)
    assert (back["grid_coord"] - back["grid_coord"].min(0).values).tolist() == grid.tolist()


def test_fragments_take_the_points_of_each_voxel_in_turn():
    inverse = torch.tensor([0, 1, 0, 1, 2, 0])  # voxel 0: points 0, 2, 5; 1: 1, 3; 2: 4
    picks = fragment_picks(inverse, 4, -1)  # voxel 3 has no listed point (predict's context)
    assert [p.tolist() for p in picks] == [[0, 1, 4, -1], [2, 3, 4, -1], [5, 1, 4, -1]]
    assert [p.tolist() for p in fragment_picks(inverse, 4, 2)] == [[0, 1, 4, -1], [2, 3, 4, -1]]


class Logits(torch.nn.Module):
    """A stand-in network: the first features are the class logits of each voxel."""

    def forward(self, feat, grid_coord, batch):
        return 4 * feat


def test_fragment_votes_sum_each_fragments_probabilities_on_its_points():
    seg = Segmenter(arch="sparse_ffnet_test", num_classes=3, in_channels=3).eval()
    seg.model = Logits()
    inverse = torch.tensor([0, 1, 0, 1, 2, 0])
    truth = torch.tensor([0, 1, 2, 1, 2, 1])  # voxels 0 and 1 hold points of several classes
    feat_full = torch.nn.functional.one_hot(truth, 3).float()
    batch = {"feat": feat_full[[0, 1, 4]], "grid_coord": torch.tensor([[0, 0, 0], [1, 0, 0], [2, 0, 0]]),
             "batch": torch.zeros(3, dtype=torch.long), "inverse": inverse, "feat_full": feat_full,
             "segment_full": truth}  # fmt: skip
    p = (4 * feat_full).softmax(1)  # each point's probabilities when it represents its voxel
    two = seg.fragment_votes(batch, 1, 2)
    expected = torch.stack([p[0], p[1], p[2], p[3], 2 * p[4], p[0] + p[2]])  # point 5: its voxel's
    torch.testing.assert_close(two, expected)
    pred, labels = seg._point_predictions(batch, 1, -1)  # every point seen: all correct
    assert pred.tolist() == labels.tolist() == truth.tolist()
    plain, _ = seg._point_predictions(batch)  # one point per voxel: its class for the whole voxel
    assert plain.tolist() == [0, 1, 0, 1, 2, 0]
    assert seg.fragment_votes(batch, 1, 1).argmax(1).tolist() == plain.tolist()


def test_fragment_voting_votes_for_every_point_and_one_fragment_is_the_plain_prediction():
    rng = np.random.default_rng(0)
    n = 200
    room = {"coord": rng.uniform(0, 1, (n, 3)).astype(np.float32), "color": rng.integers(0, 256, (n, 3)),
            "normal": rng.normal(size=(n, 3)).astype(np.float32), "segment": rng.integers(0, 13, n)}  # fmt: skip
    dm = S3DISDataModule("unused", grid_size=0.25, batch_size=1, num_workers=0)
    batch = collate_points([dm._eval(room, None)])
    first = torch.full((len(batch["feat"]),), n).scatter_reduce(
        0, batch["inverse"], torch.arange(n), "amin"
    )
    torch.testing.assert_close(batch["feat_full"][first], batch["feat"])  # the plain input
    assert len(batch["feat"]) < n / 2  # several points per voxel
    torch.manual_seed(0)
    seg = Segmenter(arch="sparse_ffnet_test", num_classes=13).eval()
    with torch.no_grad():
        plain, labels = seg._point_predictions(batch)
        assert torch.equal(labels, torch.from_numpy(room["segment"]))
        assert torch.equal(seg.fragment_votes(batch, 1, 1).argmax(1), plain)
        votes = seg.fragment_votes(batch, 1, -1)
    assert votes.shape == (n, 13) and bool((votes.sum(1) >= 1 - 1e-4).all())  # every point voted
    assert not torch.equal(votes.argmax(1), plain)  # the points of a voxel can differ now
