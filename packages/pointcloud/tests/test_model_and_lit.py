import itertools

import pytest
import torch
from metamixer_testing import randomize_batchnorm
from pc_scenes import write_las

from metamixer.core import count_params, reparameterize_model
from metamixer.pointcloud import SparseFFNet
from metamixer.pointcloud.__main__ import main
from metamixer.pointcloud.lit import iou_from_confusion, lovasz_softmax
from metamixer.pointcloud.ops import SceneDropPath
from metamixer.pointcloud.sparse import SparseStructure, SparseTensor

TINY = dict(enc_depths=(1, 1, 1), enc_channels=(8, 16, 32), dec_depths=(1, 1), dec_channels=(8, 16))


def scene(n=600, seed=0):
    gen = torch.Generator().manual_seed(seed)
    coords = torch.unique(torch.randint(0, 24, (n, 3), generator=gen), dim=0)
    batch = (torch.arange(len(coords)) % 2).long()
    return torch.randn(len(coords), 6, generator=gen), coords, batch


def block_params(dim: int, k: int, full: bool, mlp_ratio: int = 4) -> int:
    """One block's parameters counted by hand: LayerNorm + FFNified attention (linear query,
    two sparse k³ convs + BN) and LayerNorm + ConvNeXt mixer (k³ conv + BN, FFN)."""
    conv = dim * dim * k**3 + dim if full else dim * k**3  # depthwise: bias-free conv + BN
    bn, norm = 2 * dim, 2 * dim
    token = norm + (dim * dim + dim) + 2 * (conv + bn)
    channel = (
        norm + conv + bn + (dim * mlp_ratio * dim + mlp_ratio * dim) + (mlp_ratio * dim * dim + dim)
    )
    return token + channel


def network_params(full: bool) -> int:
    enc, widths, dec, dec_widths = (
        (2, 2, 2, 6, 2),
        (32, 64, 128, 256, 512),
        (2, 2, 2, 2),
        (64, 64, 128, 256),
    )
    stem = 6 * 32 * 5**3 + 2 * 32
    blocks = sum(n * block_params(w, 3, full) for n, w in zip(enc, widths, strict=True))
    blocks += sum(n * block_params(w, 3, full) for n, w in zip(dec, dec_widths, strict=True))
    pools = sum(a * b + b + 2 * b for a, b in itertools.pairwise(widths))
    up_widths = [*dec_widths, widths[-1]]
    unpools = sum(
        (up_widths[s + 1] * w + w + 2 * w) + (widths[s] * w + w + 2 * w)
        for s, w in enumerate(dec_widths)
    )
    head = dec_widths[0] * 20 + 20
    return stem + blocks + pools + unpools + head


def test_paper_sized_model_parameter_counts():
    assert count_params(SparseFFNet()) == network_params(full=False) == 11_127_316
    assert count_params(SparseFFNet(full_convs=True)) == network_params(full=True) == 103_212_436


@pytest.mark.parametrize("full", [False, True])
def test_forward_backward_and_input_order(full):
    torch.manual_seed(0)
    model = SparseFFNet(num_classes=5, full_convs=full, **TINY)
    feats, coords, batch = scene()
    out = model(feats, coords, batch)
    assert out.shape == (len(feats), 5)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    perm = torch.randperm(len(feats))
    with torch.no_grad():
        torch.testing.assert_close(
            model(feats[perm], coords[perm], batch[perm]),
            model(feats, coords, batch)[perm],
            atol=1e-5,
            rtol=1e-5,
        )


def test_reparameterized_model_gives_the_same_logits():
    torch.manual_seed(0)
    model = randomize_batchnorm(SparseFFNet(num_classes=4, **TINY)).eval()
    feats, coords, batch = scene()
    with torch.no_grad():
        before = model(feats, coords, batch)
        after = reparameterize_model(model)(feats, coords, batch)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_bad_inputs_name_the_problem():
    model = SparseFFNet(**TINY)
    feats, coords, batch = scene()
    with pytest.raises(ValueError, match=r"features \(N, 6\)"):
        model(feats[:, :3], coords, batch)
    bad = feats.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(bad, coords, batch)
    with pytest.raises(ValueError, match="one row per voxel"):
        model(feats[:-1], coords, batch)


def test_drop_path_drops_whole_scenes():
    coords = torch.randint(0, 5, (40, 3))
    structure = SparseStructure(coords, torch.arange(40) % 8, 8)
    drop = SceneDropPath(0.5).train()
    torch.manual_seed(1)
    out = drop(SparseTensor(torch.ones(40, 3), structure)).features
    per_scene = [out[structure.batch == b] for b in range(8)]
    assert all(((s == 0).all() or (s == 2).all()) for s in per_scene)
    assert 0 < sum((s == 0).all() for s in per_scene) < 8


def test_miou_from_a_hand_computed_confusion_matrix():
    confusion = torch.tensor([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    iou, _, (miou, macc, allacc), _ = iou_from_confusion(confusion)
    torch.testing.assert_close(iou[:2], torch.tensor([5 / 8, 3 / 6], dtype=torch.float64))
    assert torch.isnan(iou[2])  # absent class left out of the mean
    assert miou.item() == pytest.approx((5 / 8 + 3 / 6) / 2)
    assert macc.item() == pytest.approx((5 / 6 + 3 / 5) / 2) and allacc.item() == pytest.approx(
        8 / 11
    )


def test_lovasz_is_zero_for_perfect_and_positive_for_wrong_predictions():
    labels = torch.tensor([0, 1, 2, -1])
    perfect = torch.eye(3)[[0, 1, 2, 0]]
    assert lovasz_softmax(perfect, labels).item() == pytest.approx(0.0)
    assert lovasz_softmax(perfect.flip(0), labels).item() > 0.5


def test_cli_fit_and_test_on_a_las_tile(tmp_path):
    path = write_las(tmp_path / "tile.las")
    cli = main([
        "fit", "--data=metamixer.pointcloud.data.LASDataModule", f"--data.path={path}",
        "--data.grid_size=0.8", "--data.crops_per_epoch=4", "--data.batch_size=2", "--data.crop_size=12",
        "--model.arch_args.enc_depths=[1, 1]", "--model.arch_args.enc_channels=[8, 16]",
        "--model.arch_args.dec_depths=[1]", "--model.arch_args.dec_channels=[8]",
        "--trainer.max_epochs=1", "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}",
        "--test_after_fit=true",
    ])  # fmt: skip
    metrics = cli.trainer.callback_metrics
    assert {"test/mIoU", "test/mAcc", "test/allAcc", "test/IoU/building"} <= set(metrics)
    assert any(tmp_path.rglob("per_class_iou.csv"))


def test_chunked_prediction_equals_whole_scene_prediction(tmp_path):
    """Chunks are voxelised on the scene's grid: with a context wider than the network's
    receptive field every point gets the whole-scene label."""
    import laspy
    import numpy as np

    from metamixer.pointcloud.inference import predict_chunked

    las = laspy.read(write_las(tmp_path / "tile.las", n=6000))
    coord = np.stack([las.x, las.y, las.z], 1).astype(np.float32)
    feat = np.random.default_rng(0).standard_normal((len(coord), 6)).astype(np.float32)
    torch.manual_seed(0)
    model = randomize_batchnorm(SparseFFNet(num_classes=6, **TINY)).eval()
    whole = predict_chunked(model, coord, feat, 0.5)
    assert len(torch.unique(whole)) > 1
    chunked = predict_chunked(model, coord, feat, 0.5, chunk=12.0, context=16.0)
    assert torch.equal(chunked, whole)
