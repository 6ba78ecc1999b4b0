"""Generated scenes in the raw ScanNet formats and LAS, for the point-cloud tests."""

from pathlib import Path

import numpy as np

TSV_HEADER = "id\traw_category\tcategory\tcount\tnyu40id\teigen13id\tnyuClass\tnyu40class\n"
TSV_ROWS = [
    (1, "wall", 1, "wall"), (2, "floor", 2, "floor"), (3, "cabinet", 3, "cabinet"),
    (5, "chair", 5, "chair"), (7, "table", 7, "table"), (40, "ceiling", 22, "ceiling"),
]  # fmt: skip


def write_label_tsv(path: Path) -> Path:
    lines = [TSV_HEADER] + [
        f"{i}\t{raw}\t{raw}\t1\t{nyu}\t1\t{cls}\t{cls}\n" for i, raw, nyu, cls in TSV_ROWS
    ]
    path.write_text("".join(lines))
    return path


def room_mesh(n_side: int = 12, seed: int = 0):
    """A floor grid and a wall grid as triangle meshes, with nyu40 labels (floor 2, wall 1, and a
    'ceiling' patch labelled 22, which is not a benchmark class)."""
    rng = np.random.default_rng(seed)
    u, v = np.meshgrid(np.linspace(0, 3, n_side), np.linspace(0, 3, n_side))
    floor = np.stack([u.ravel(), v.ravel(), np.zeros(u.size)], 1)
    wall = np.stack([u.ravel(), np.zeros(u.size), v.ravel()], 1)
    coord = np.concatenate([floor, wall]) + rng.normal(0, 0.001, (2 * u.size, 3))
    faces = []
    for base in (0, u.size):
        for i in range(n_side - 1):
            for j in range(n_side - 1):
                a = base + i * n_side + j
                faces += [(a, a + 1, a + n_side), (a + 1, a + n_side + 1, a + n_side)]
    labels = np.concatenate([np.full(u.size, 2), np.full(u.size, 1)])
    labels[-5:] = 22
    color = rng.integers(0, 256, (len(coord), 3))
    return coord.astype(np.float32), np.array(faces), color.astype(np.uint8), labels


def write_ply(path: Path, coord, color=None, faces=None, label=None) -> Path:
    from plyfile import PlyData, PlyElement

    fields = [("x", "f4"), ("y", "f4"), ("z", "f4")]
    if color is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")]
    if label is not None:
        fields += [("label", "u2")]
    vertex = np.empty(len(coord), dtype=fields)
    vertex["x"], vertex["y"], vertex["z"] = coord.T
    if color is not None:
        vertex["red"], vertex["green"], vertex["blue"] = color.T
        vertex["alpha"] = 255
    if label is not None:
        vertex["label"] = label
    elements = [PlyElement.describe(vertex, "vertex")]
    if faces is not None:
        face = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
        face["vertex_indices"] = faces
        elements.append(PlyElement.describe(face, "face"))
    PlyData(elements, text=False).write(str(path))
    return path


def write_raw_scene(
    root: Path, name: str, seed: int = 0, *, colours: bool = True, faces: bool = True
) -> Path:
    coord, tri, color, labels = room_mesh(seed=seed)
    scene = root / name
    scene.mkdir(parents=True)
    write_ply(
        scene / f"{name}_vh_clean_2.ply", coord, color if colours else None, tri if faces else None
    )
    write_ply(scene / f"{name}_vh_clean_2.labels.ply", coord, color, tri, label=labels)
    return scene


def write_las(path: Path, n: int = 3000, seed: int = 0) -> Path:
    """A synthetic LAS tile: ground plane, a box 'building', scattered 'vegetation', some noise."""
    import laspy

    rng = np.random.default_rng(seed)
    xyz = np.column_stack([rng.uniform(0, 40, n), rng.uniform(0, 30, n), np.zeros(n)])
    cls = np.full(n, 2)
    building = (xyz[:, 0] > 5) & (xyz[:, 0] < 12) & (xyz[:, 1] > 5) & (xyz[:, 1] < 12)
    xyz[building, 2], cls[building] = 8.0, 6
    veg = rng.random(n) < 0.25
    xyz[veg, 2], cls[veg] = rng.uniform(2, 10, veg.sum()), 5
    cls[:10] = 7
    header = laspy.LasHeader(point_format=3, version="1.2")
    header.scales = [0.01, 0.01, 0.01]
    las = laspy.LasData(header)
    las.x, las.y, las.z = xyz.T
    las.classification = cls
    las.intensity = rng.integers(0, 1000, n)
    las.return_number = np.ones(n, dtype=np.uint8)
    las.number_of_returns = np.ones(n, dtype=np.uint8)
    las.write(str(path))
    return path
