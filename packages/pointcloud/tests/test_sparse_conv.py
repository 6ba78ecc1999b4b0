"""Sparse depthwise submanifold convs equal dense grouped conv3d on the active voxels."""

import pytest
import torch
import torch.nn.functional as F
from metamixer_testing import count_modules, randomize_batchnorm

from metamixer.core import reparameterize_model
from metamixer.pointcloud.ops import SparseOps
from metamixer.pointcloud.sparse import (
    SparseDepthwiseConv,
    SparseStructure,
    SparseTensor,
    sparse_depthwise,
)


def random_voxels(n, size, batch_size=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    coords, batch = [], []
    for b in range(batch_size):
        flat = torch.randperm(size**3, generator=gen)[:n]
        coords.append(torch.stack([flat // size**2, flat // size % size, flat % size], 1))
        batch.append(torch.full((n,), b))
    return torch.cat(coords), torch.cat(batch)


def dense_reference(features, coords, batch, weight, bias, size):
    """Scatter into a dense grid, run conv3d(groups=C), read back the active voxels."""
    c = features.shape[1]
    grid = features.new_zeros(int(batch.max()) + 1, c, size, size, size)
    grid[batch, :, coords[:, 0], coords[:, 1], coords[:, 2]] = features
    out = F.conv3d(grid, weight, bias, padding=weight.shape[-1] // 2, groups=c)
    return out[batch, :, coords[:, 0], coords[:, 1], coords[:, 2]]


def assert_same_values_and_gradients(ours, ref, inputs):
    """``ours == ref``, and after the same backward pass through both, the gradient of each
    ``(our input, reference input)`` pair."""
    torch.testing.assert_close(ours, ref)
    g = torch.randn_like(ours)
    ours.backward(g)
    ref.backward(g)
    for mine, theirs in inputs:
        torch.testing.assert_close(mine.grad, theirs.grad)


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("density", [0.05, 0.5])
def test_matches_dense_grouped_conv3d_forward_and_backward(kernel, density):
    size, c = 10, 6
    coords, batch = random_voxels(int(density * size**3), size, seed=kernel)
    structure = SparseStructure(coords, batch, 2)
    conv = SparseDepthwiseConv(c, kernel)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(len(coords), c, requires_grad=True, dtype=torch.float64)
    conv = conv.double()
    out = conv(SparseTensor(x, structure))
    assert out.structure is structure
    ours = out.features
    w = conv.weight.detach().clone().requires_grad_()
    b = conv.bias.detach().clone().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    ref = dense_reference(x_ref, coords, batch, w, b, size)
    assert_same_values_and_gradients(ours, ref, [(x, x_ref), (conv.weight, w), (conv.bias, b)])


def test_neighbour_maps_are_computed_once_per_structure():
    coords, batch = random_voxels(200, 8)
    structure = SparseStructure(coords, batch, 2)
    assert structure.neighbours(3) is structure.neighbours(3)


@pytest.mark.parametrize("kernels", [(5, 3), (3, 1)])
def test_large_small_sparse_branches_fold(kernels):
    size = 9
    coords, batch = random_voxels(150, size, seed=3)
    structure = SparseStructure(coords, batch, 2)
    conv = SparseOps().depthwise(8, kernels[0], small_kernel=kernels[1])
    randomize_batchnorm(conv).eval()
    x = torch.randn(len(coords), 8)
    with torch.no_grad():
        before = conv(SparseTensor(x, structure)).features
        reparameterize_model(conv)
        after = conv(SparseTensor(x, structure)).features
    assert count_modules(conv, torch.nn.BatchNorm1d) == 0
    assert isinstance(conv.fused, SparseDepthwiseConv)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    # the folded kernel is a real 3D depthwise kernel: check it against dense conv3d
    ref = dense_reference(x, coords, batch, conv.fused.weight, conv.fused.bias, size)
    torch.testing.assert_close(after, ref, atol=1e-5, rtol=1e-5)


def test_bad_inputs():
    with pytest.raises(ValueError, match="empty point cloud"):
        SparseStructure(torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="non-negative"):
        SparseStructure(torch.tensor([[-1, 0, 0]]), torch.zeros(1, dtype=torch.long), 1)
    conv = SparseDepthwiseConv(4, 3)
    with pytest.raises(ValueError, match="expected a SparseTensor with 4 channels"):
        conv(torch.zeros(3, 4))
    structure = SparseStructure(
        torch.tensor([[0, 0, 0], [0, 0, 1]]), torch.zeros(2, dtype=torch.long), 1
    )
    with pytest.raises(ValueError, match="expected a SparseTensor with 4 channels"):
        conv(SparseTensor(torch.zeros(2, 5), structure))
    with pytest.raises(ValueError, match=r"\(3, 4\) for a structure of 2 voxels"):
        SparseTensor(torch.zeros(3, 4), structure)
    other = SparseStructure(structure.coords.clone(), structure.batch, 1)
    with pytest.raises(ValueError, match="two structures"):
        SparseTensor(torch.zeros(2, 4), structure) + SparseTensor(torch.zeros(2, 4), other)


def test_full_sparse_conv_matches_dense_conv3d():
    from metamixer.pointcloud.sparse import SparseFullConv

    size = 8
    coords, batch = random_voxels(120, size, seed=5)
    structure = SparseStructure(coords, batch, 2)
    conv = SparseFullConv(4, 6, 3).double()
    torch.nn.init.normal_(conv.weight)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(len(coords), 4, dtype=torch.float64)
    # (k³, in, out) -> dense (out, in, k, k, k)
    dense_w = conv.weight.detach().view(3, 3, 3, 4, 6).permute(4, 3, 0, 1, 2)
    grid = x.new_zeros(2, 4, size, size, size)
    grid[batch, :, coords[:, 0], coords[:, 1], coords[:, 2]] = x
    ref = F.conv3d(grid, dense_w, conv.bias.detach(), padding=1)[
        batch, :, coords[:, 0], coords[:, 1], coords[:, 2]
    ]
    torch.testing.assert_close(conv(SparseTensor(x, structure)).features, ref)


@pytest.mark.parametrize("mixer", ["ffnified", "convnext", "pooling", "attention"])
def test_a_sparse_block_runs_on_its_own(mixer):
    """No stage, no side channel: a block's sparse ops read the structure from their input."""
    from metamixer.core import CHANNEL_MIXERS, TOKEN_MIXERS, MetaBlock, MixerContext
    from metamixer.pointcloud.ops import SceneDropPath

    coords, batch = random_voxels(120, 6, seed=2)
    structure = SparseStructure(coords, batch, 2)
    where = "test block"
    context = MixerContext(8, SparseOps(), kernel_size=3, conv_norm=True, where=where)
    registry = CHANNEL_MIXERS if mixer == "convnext" else TOKEN_MIXERS
    block = MetaBlock(8, registry.build(mixer, context), norm=torch.nn.LayerNorm(8),
                      drop_path=SceneDropPath(0.2), channel_axis=-1)  # fmt: skip
    x = torch.randn(len(coords), 8, requires_grad=True)
    out = block(SparseTensor(x, structure))
    assert isinstance(out, SparseTensor) and out.structure is structure
    assert out.shape == (len(coords), 8)
    out.features.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_torch_scatter_backend_equals_dense_forward_and_backward():
    size, c, k = 10, 5, 3
    coords, batch = random_voxels(300, size, seed=3)
    pairs = SparseStructure(coords, batch, 2).pairs(k)
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(c, 1, k, k, k, dtype=torch.float64, generator=gen, requires_grad=True)
    x = torch.randn(len(coords), c, dtype=torch.float64, generator=gen, requires_grad=True)
    ours = sparse_depthwise(x, weight.view(c, -1).t(), pairs, scatter="torch_scatter")
    x_ref = x.detach().clone().requires_grad_()
    w_ref = weight.detach().clone().requires_grad_()
    ref = dense_reference(x_ref, coords, batch, w_ref, None, size)
    assert_same_values_and_gradients(ours, ref, [(x, x_ref), (weight, w_ref)])
