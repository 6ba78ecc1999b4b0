"""Whole-scene inference with bounded memory: voxelise, predict, map back to every point.

Large scenes are cut into square columns of ``chunk`` metres; each is predicted together with a
margin of ``context`` metres around it (so voxels near a cut see their neighbours), and only the
column's own points keep the prediction.  Every chunk is voxelised on the whole scene's grid, so
with a context at least the network's receptive field the labels equal whole-scene inference.
Peak memory then depends on the chunk, not the scene.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from .transforms import voxelize


@torch.no_grad()
def predict_points(
    model: nn.Module,
    coord: np.ndarray,
    feat: np.ndarray,
    grid_size: float,
    origin: np.ndarray | None = None,
) -> Tensor:
    """Labels ``(N,)`` of all points: one voxel per ``grid_size`` cell (first point's features);
    ``origin`` (default: the points' minimum) anchors the voxel grid."""
    origin = coord.min(0) if origin is None else origin
    grid, inverse, _ = voxelize(coord - origin, grid_size, shift=False)
    first = np.full(inverse.max() + 1, len(inverse), dtype=np.int64)
    np.minimum.at(first, inverse, np.arange(len(inverse)))
    logits = model(
        torch.from_numpy(np.ascontiguousarray(feat[first], dtype=np.float32)),
        torch.from_numpy(grid[first]),
        torch.zeros(len(first), dtype=torch.long),
    )
    return logits.argmax(1)[torch.from_numpy(inverse)]


@torch.no_grad()
def predict_chunked(
    model: nn.Module,
    coord: np.ndarray,
    feat: np.ndarray,
    grid_size: float,
    *,
    chunk: float | None = None,
    context: float = 1.0,
) -> Tensor:
    """Labels of every point of a scene of any size; ``chunk`` (metres) bounds the memory."""
    if len(coord) == 0:
        raise ValueError("empty point cloud")
    if not np.isfinite(coord).all():
        raise ValueError("coordinates contain NaN or inf; drop those points first")
    if chunk is None:
        return predict_points(model, coord, feat, grid_size)
    labels = torch.empty(len(coord), dtype=torch.long)
    lo = coord[:, :2].min(0)
    cell = np.floor((coord[:, :2] - lo) / chunk).astype(np.int64)
    for cx, cy in np.unique(cell, axis=0):
        core = (cell[:, 0] == cx) & (cell[:, 1] == cy)
        x0, y0 = lo + np.array([cx, cy]) * chunk
        near = (
            (coord[:, 0] >= x0 - context) & (coord[:, 0] < x0 + chunk + context)
            & (coord[:, 1] >= y0 - context) & (coord[:, 1] < y0 + chunk + context)
        )  # fmt: skip
        index = np.nonzero(near)[0]
        pred = predict_points(model, coord[index], feat[index], grid_size, coord.min(0))
        keep = core[index]
        labels[torch.from_numpy(index[keep])] = pred[torch.from_numpy(keep)]
    return labels
