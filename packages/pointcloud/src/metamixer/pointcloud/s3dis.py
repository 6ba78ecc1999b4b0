"""S3DIS: raw rooms -> per-room arrays (``coord``, ``color``, ``normal``, ``segment``).

    python -m metamixer.pointcloud.s3dis --raw Stanford3dDataset_v1.2_Aligned_Version --out data/s3dis

Reads ``Area_<k>/<room>/Annotations/<class>_<i>.txt`` (one object per file, rows ``x y z r g b``)
and writes ``<out>/Area_<k>/<room>/*.npy`` with the 13 benchmark classes (``stairs`` counts as
clutter, as in the usual protocol).  The release has no normals: they are estimated from the 16
nearest neighbours (PCA) and turned towards the room's inside.  Each room is written to a
temporary folder and renamed, so an interrupted run leaves no half room.  The standard protocol
trains on areas 1–4 and 6 and tests on area 5 (``S3DISDataModule(test_area=5)``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .scannet import save_scene

S3DIS_CLASSES = (
    "ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa",
    "bookcase", "board", "clutter",
)  # fmt: skip
ALIASES = {"stairs": "clutter"}


def estimate_normals(coord: np.ndarray, k: int = 16) -> np.ndarray:
    """Unit normals: the least-variance direction of each point's ``k`` nearest neighbours,
    flipped to face the centroid of the points (indoor surfaces face into the room)."""
    from scipy.spatial import cKDTree

    k = min(k, len(coord))
    _, index = cKDTree(coord).query(coord, k=k)
    neighbours = coord[index.reshape(len(coord), k)]
    centred = neighbours - neighbours.mean(1, keepdims=True)
    _, vectors = np.linalg.eigh(np.einsum("nki,nkj->nij", centred, centred))
    normal = vectors[:, :, 0]
    inward = (coord.mean(0) - coord) * normal
    normal[inward.sum(1) < 0] *= -1
    return normal.astype(np.float32)


def read_room(folder: Path) -> dict[str, np.ndarray]:
    """A room's points, colours and class labels from its ``Annotations`` folder."""
    files = sorted((folder / "Annotations").glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"{folder / 'Annotations'} holds no <class>_<i>.txt object files")
    parts, labels = [], []
    for f in files:
        name = ALIASES.get(f.stem.rsplit("_", 1)[0], f.stem.rsplit("_", 1)[0])
        if name not in S3DIS_CLASSES:
            raise ValueError(f"{f}: unknown class {name!r}; S3DIS has {', '.join(S3DIS_CLASSES)}")
        try:
            rows = np.loadtxt(f, dtype=np.float64, ndmin=2)
        except ValueError as err:
            raise ValueError(f"{f} is not rows of 'x y z r g b': {err}") from err
        if rows.shape[1] < 6:
            raise ValueError(f"{f} has {rows.shape[1]} columns; expected x y z r g b")
        parts.append(rows[:, :6])
        labels.append(np.full(len(rows), S3DIS_CLASSES.index(name), dtype=np.int64))
    points = np.concatenate(parts)
    coord = points[:, :3].astype(np.float32)
    return {
        "coord": coord,
        "color": points[:, 3:6].astype(np.float32),
        "normal": estimate_normals(coord),
        "segment": np.concatenate(labels),
    }


def convert_room(folder: Path, out: Path) -> Path:
    return save_scene(out, read_room(folder))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", required=True, help="Stanford3dDataset_v1.2_Aligned_Version")
    parser.add_argument("--out", required=True)
    parser.add_argument("--areas", nargs="+", type=int, default=[1, 2, 3, 4, 5, 6])
    args = parser.parse_args(argv)
    raw, out = Path(args.raw), Path(args.out)
    rooms = [r for a in args.areas for r in sorted((raw / f"Area_{a}").glob("*/"))]
    if not rooms:
        raise SystemExit(f"error: no Area_<k>/<room>/ folders under {raw}")
    for room in rooms:
        target = out / room.parent.name / room.name
        if not target.exists():
            convert_room(room, target)
    print(f"{len(rooms)} rooms in {out}")


if __name__ == "__main__":
    main()
