"""Point-cloud transforms of the authors' ScanNet recipe, on scene dicts of numpy arrays.

A scene is a dict with ``coord (N, 3)`` float, optional ``color (N, 3)`` in [0, 255],
``normal (N, 3)``, ``segment (N,)`` and extra per-point arrays; every transform keeps the per-point
arrays aligned.  Randomness comes from the ``np.random.Generator`` passed in.
"""

from __future__ import annotations

import numpy as np

Scene = dict[str, np.ndarray]
NOT_PER_POINT = ("inverse", "segment_full", "feat_full")  # indexed by the original points


def select(scene: Scene, keep: np.ndarray) -> Scene:
    """Keep the points ``keep`` (mask or indices) in every per-point array."""
    n = len(scene["coord"])
    return {k: (v[keep] if k not in NOT_PER_POINT and len(v) == n else v) for k, v in scene.items()}


def center_shift(scene: Scene, apply_z: bool = True) -> Scene:
    """Move the bounding-box centre to the origin (and the floor to z = 0 unless ``apply_z``)."""
    lo, hi = scene["coord"].min(0), scene["coord"].max(0)
    shift = (lo + hi) / 2
    if not apply_z:
        shift[2] = 0.0
    else:
        shift[2] = lo[2]
    return {**scene, "coord": scene["coord"] - shift}


def random_dropout(
    scene: Scene, rng: np.random.Generator, ratio: float = 0.2, p: float = 0.2
) -> Scene:
    if rng.random() >= p:
        return scene
    n = len(scene["coord"])
    return select(scene, np.sort(rng.choice(n, int(n * (1 - ratio)), replace=False)))


def _rotation(angle: float, axis: int) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def random_rotate(
    scene: Scene, rng: np.random.Generator, max_angle: float, axis: int, p: float = 0.5
) -> Scene:
    """Rotate about ``axis`` by a uniform angle in ``[-max_angle, max_angle]·π`` with probability p."""
    if rng.random() >= p:
        return scene
    r = _rotation(rng.uniform(-max_angle, max_angle) * np.pi, axis).astype(np.float32)
    out = {**scene, "coord": scene["coord"] @ r.T}
    if "normal" in scene:
        out["normal"] = scene["normal"] @ r.T
    return out


def random_scale(
    scene: Scene, rng: np.random.Generator, low: float = 0.9, high: float = 1.1
) -> Scene:
    return {**scene, "coord": scene["coord"] * rng.uniform(low, high)}


def random_flip(scene: Scene, rng: np.random.Generator, p: float = 0.5) -> Scene:
    out = dict(scene)
    for axis in (0, 1):
        if rng.random() < p:
            out["coord"] = out["coord"].copy()
            out["coord"][:, axis] *= -1
            if "normal" in out:
                out["normal"] = out["normal"].copy()
                out["normal"][:, axis] *= -1
    return out


def random_jitter(
    scene: Scene, rng: np.random.Generator, sigma: float = 0.005, clip: float = 0.02
) -> Scene:
    noise = np.clip(sigma * rng.standard_normal(scene["coord"].shape), -clip, clip)
    return {**scene, "coord": scene["coord"] + noise.astype(np.float32)}


def elastic_distortion(
    scene: Scene,
    rng: np.random.Generator,
    params: tuple[tuple[float, float], ...] = ((0.2, 0.4), (0.8, 1.6)),
) -> Scene:
    """Smooth random displacement fields (granularity, magnitude in metres), applied in turn."""
    from scipy.interpolate import RegularGridInterpolator
    from scipy.ndimage import gaussian_filter

    coord = scene["coord"].astype(np.float64)
    for granularity, magnitude in params:
        lo = coord.min(0) - granularity * 3
        shape = ((coord.max(0) - lo) // granularity).astype(int) + 6
        noise = rng.standard_normal((*shape, 3))
        for _ in range(2):
            noise = gaussian_filter(noise, sigma=(1, 1, 1, 0), mode="nearest")
        axes = [lo[d] + granularity * np.arange(shape[d]) for d in range(3)]
        field = RegularGridInterpolator(axes, noise, bounds_error=False, fill_value=0)
        coord = coord + field(coord) * magnitude
    return {**scene, "coord": coord.astype(np.float32)}


def chromatic_auto_contrast(scene: Scene, rng: np.random.Generator, p: float = 0.2) -> Scene:
    if "color" not in scene or rng.random() >= p:
        return scene
    color = scene["color"].astype(np.float32)
    lo, hi = color.min(0, keepdims=True), color.max(0, keepdims=True)
    contrast = (color - lo) * (255.0 / np.maximum(hi - lo, 1e-6))
    blend = rng.random()
    return {**scene, "color": (1 - blend) * color + blend * contrast}


def chromatic_translation(
    scene: Scene, rng: np.random.Generator, p: float = 0.95, ratio: float = 0.05
) -> Scene:
    if "color" not in scene or rng.random() >= p:
        return scene
    shift = (rng.random((1, 3)) - 0.5) * 255 * 2 * ratio
    return {**scene, "color": np.clip(scene["color"] + shift, 0, 255)}


def chromatic_jitter(
    scene: Scene, rng: np.random.Generator, p: float = 0.95, std: float = 0.05
) -> Scene:
    if "color" not in scene or rng.random() >= p:
        return scene
    noise = rng.standard_normal(scene["color"].shape) * std * 255
    return {**scene, "color": np.clip(scene["color"] + noise, 0, 255)}


def voxelize(
    coord: np.ndarray, grid_size: float, shift: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer grid coordinates (min at 0 with ``shift``), each point's voxel id, and the voxel
    count."""
    grid = np.floor(coord / grid_size).astype(np.int64)
    if shift:
        grid -= grid.min(0)
    _, inverse, counts = np.unique(grid, axis=0, return_inverse=True, return_counts=True)
    return grid, inverse.reshape(-1), counts


def grid_sample(scene: Scene, grid_size: float, rng: np.random.Generator | None) -> Scene:
    """One point per ``grid_size`` voxel (random with ``rng``, else the first), with
    ``grid_coord``; ``inverse`` maps every original point to its kept voxel."""
    grid, inverse, _ = voxelize(scene["coord"], grid_size)
    order = rng.permutation(len(inverse)) if rng is not None else np.arange(len(inverse))
    first = np.full(inverse.max() + 1, len(inverse), dtype=np.int64)
    np.minimum.at(first, inverse[order], np.arange(len(order)))
    keep = order[first]
    out = select(scene, keep)
    out["grid_coord"] = grid[keep]
    out["inverse"] = inverse  # original point -> kept voxel
    return out


def sphere_crop(scene: Scene, rng: np.random.Generator, point_max: int = 102400) -> Scene:
    """Keep the ``point_max`` points nearest a random point when the scene is larger."""
    n = len(scene["coord"])
    if n <= point_max:
        return scene
    centre = scene["coord"][rng.integers(n)]
    nearest = np.argpartition(((scene["coord"] - centre) ** 2).sum(1), point_max)[:point_max]
    out = select(scene, np.sort(nearest))
    out.pop("inverse", None)
    return out


def normalize_color(scene: Scene) -> Scene:
    if "color" not in scene:
        return scene
    return {**scene, "color": scene["color"] / 127.5 - 1.0}


def scannet_train_transform(
    scene: Scene, rng: np.random.Generator, grid_size: float, point_max: int
) -> Scene:
    """The authors' ScanNet training pipeline (Mix3D excluded)."""
    scene = center_shift(scene, apply_z=True)
    scene = random_dropout(scene, rng)
    scene = random_rotate(scene, rng, 1.0, axis=2)
    scene = random_rotate(scene, rng, 1 / 64, axis=0)
    scene = random_rotate(scene, rng, 1 / 64, axis=1)
    scene = random_scale(scene, rng)
    scene = random_flip(scene, rng)
    scene = random_jitter(scene, rng)
    scene = elastic_distortion(scene, rng)
    scene = chromatic_auto_contrast(scene, rng)
    scene = chromatic_translation(scene, rng)
    scene = chromatic_jitter(scene, rng)
    scene = grid_sample(scene, grid_size, rng)
    scene = sphere_crop(scene, rng, point_max)
    scene = center_shift(scene, apply_z=False)
    return normalize_color(scene)


def scannet_eval_transform(scene: Scene, grid_size: float) -> Scene:
    """Evaluation: every original point keeps a voxel (``inverse``) for mapping predictions back."""
    scene = center_shift(scene, apply_z=True)
    scene = grid_sample(scene, grid_size, rng=None)
    scene = center_shift(scene, apply_z=False)
    return normalize_color(scene)
