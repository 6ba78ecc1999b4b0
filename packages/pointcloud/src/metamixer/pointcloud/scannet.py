"""ScanNet v2: raw release -> per-scene arrays (``coord``, ``color``, ``normal``, ``segment20``).

    python -m metamixer.pointcloud.scannet --raw scans/ --labels scannetv2-labels.combined.tsv \
        --out data/scannet

Reads ``<scene>/<scene>_vh_clean_2.ply`` (vertices, colours, mesh faces) and
``<scene>_vh_clean_2.labels.ply`` (per-vertex NYU40 ``label``).  Normals are the area-weighted
normals of the mesh faces.  Labels map to the 20 benchmark classes (other labels -> -1); when the
scene's ``.aggregation.json`` and ``_vh_clean_2.0.010000.segs.json`` are present, the raw
categories are also mapped through the label TSV to the 200 ScanNet200 classes (``segment200``).
Each scene is written to a temporary folder and renamed, so an interrupted run leaves no half scene.
"""

from __future__ import annotations

import argparse
import csv
import json
import warnings
from pathlib import Path

import numpy as np

from metamixer.core.atomic import atomic_path

# Benchmark class ids (NYU40 ids for ScanNet20, raw category ids for ScanNet200).
VALID_CLASS_IDS_20 = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
VALID_CLASS_IDS_200 = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 24, 26, 27, 28, 29,
    31, 32, 33, 34, 35, 36, 38, 39, 40, 41, 42, 44, 45, 46, 47, 48, 49, 50, 51, 52, 54, 55, 56, 57,
    58, 59, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 82, 84, 86,
    87, 88, 89, 90, 93, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 110, 112, 115,
    116, 118, 120, 121, 122, 125, 128, 130, 131, 132, 134, 136, 138, 139, 140, 141, 145, 148, 154,
    155, 156, 157, 159, 161, 163, 165, 166, 168, 169, 170, 177, 180, 185, 188, 191, 193, 195, 202,
    208, 213, 214, 221, 229, 230, 232, 233, 242, 250, 261, 264, 276, 283, 286, 300, 304, 312, 323,
    325, 331, 342, 356, 370, 392, 395, 399, 408, 417, 488, 540, 562, 570, 572, 581, 609, 748, 776,
    1156, 1163, 1164, 1165, 1166, 1167, 1168, 1169, 1170, 1171, 1172, 1173, 1174, 1175, 1176, 1178,
    1179, 1180, 1181, 1182, 1183, 1184, 1185, 1186, 1187, 1188, 1189, 1190, 1191,
)  # fmt: skip
assert len(VALID_CLASS_IDS_20) == 20 and len(VALID_CLASS_IDS_200) == 200


class LabelMap:
    """``scannetv2-labels.combined.tsv``: raw category name -> raw id and NYU40 id."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"label map {path} not found (scannetv2-labels.combined.tsv)")
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        needed = {"id", "raw_category", "nyu40id", "nyu40class"}
        if not rows or not needed <= set(rows[0]):
            raise ValueError(
                f"{path} is not the ScanNet label TSV (needs columns {sorted(needed)})"
            )
        self.raw_to_id = {r["raw_category"]: int(r["id"]) for r in rows}
        self.nyu40_names = {int(r["nyu40id"]): r["nyu40class"] for r in rows if r["nyu40id"]}
        self.class_names20 = [self.nyu40_names.get(i, str(i)) for i in VALID_CLASS_IDS_20]

    @staticmethod
    def to_benchmark(ids: np.ndarray, valid: tuple[int, ...]) -> np.ndarray:
        """Map ids to 0..len(valid)-1, everything else to -1."""
        lut = np.full(max(valid) + 1, -1, dtype=np.int16)
        lut[list(valid)] = np.arange(len(valid))
        out = np.full(ids.shape, -1, dtype=np.int16)
        known = (ids >= 0) & (ids < len(lut))
        out[known] = lut[ids[known]]
        return out


def read_ply(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Vertex properties and the ``(F, 3)`` triangle indices (``None`` without faces)."""
    from plyfile import PlyData

    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        ply = PlyData.read(str(path))
    except Exception as err:  # plyfile raises several types for corrupt files
        raise ValueError(f"{path} is not a readable PLY file: {err}") from err
    if "vertex" not in ply:
        raise ValueError(f"{path} has no vertex element")
    vertex = ply["vertex"].data
    props = {name: np.asarray(vertex[name]) for name in vertex.dtype.names}
    faces = None
    if "face" in ply and len(ply["face"].data):
        faces = np.stack(ply["face"].data["vertex_indices"]).astype(np.int64)
    return props, faces


def vertex_normals(coord: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals of a triangle mesh (unit length; zero for isolated vertices)."""
    a, b, c = (coord[faces[:, i]] for i in range(3))
    face_normals = np.cross(b - a, c - a)  # length = 2 × area
    normals = np.zeros_like(coord)
    for i in range(3):
        np.add.at(normals, faces[:, i], face_normals)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)


def _segment200(
    scene_dir: Path, scene: str, num_vertices: int, labels: LabelMap
) -> np.ndarray | None:
    segs = scene_dir / f"{scene}_vh_clean_2.0.010000.segs.json"
    agg = scene_dir / f"{scene}.aggregation.json"
    if not (segs.is_file() and agg.is_file()):
        return None
    seg_indices = np.asarray(json.loads(segs.read_text())["segIndices"])
    if len(seg_indices) != num_vertices:
        raise ValueError(f"{segs}: {len(seg_indices)} segment ids for {num_vertices} vertices")
    raw = np.full(num_vertices, -1, dtype=np.int64)
    for group in json.loads(agg.read_text())["segGroups"]:
        raw_id = labels.raw_to_id.get(group["label"], -1)
        raw[np.isin(seg_indices, group["segments"])] = raw_id
    return LabelMap.to_benchmark(raw, VALID_CLASS_IDS_200)


def convert_scene(scene_dir: Path, out_root: Path, labels: LabelMap) -> Path:
    """Convert one raw scene folder; returns the output folder."""
    scene = scene_dir.name
    props, faces = read_ply(scene_dir / f"{scene}_vh_clean_2.ply")
    coord = np.stack([props[k] for k in ("x", "y", "z")], 1).astype(np.float32)
    if not np.isfinite(coord).all():
        raise ValueError(f"{scene}: vertex coordinates contain NaN or inf")
    if all(k in props for k in ("red", "green", "blue")):
        color = np.stack([props[k] for k in ("red", "green", "blue")], 1).astype(np.uint8)
    else:
        warnings.warn(f"{scene}: the mesh has no colours; filling with grey (128)", stacklevel=2)
        color = np.full_like(coord, 128, dtype=np.uint8)
    if faces is not None:
        normal = vertex_normals(coord.astype(np.float64), faces).astype(np.float32)
    else:
        warnings.warn(f"{scene}: the mesh has no faces; normals are set to zero", stacklevel=2)
        normal = np.zeros_like(coord)
    label_props, _ = read_ply(scene_dir / f"{scene}_vh_clean_2.labels.ply")
    if len(label_props["x"]) != len(coord):
        raise ValueError(
            f"{scene}: the label mesh has {len(label_props['x'])} vertices, the scan {len(coord)}"
        )
    if "label" not in label_props:
        raise ValueError(f"{scene}_vh_clean_2.labels.ply has no 'label' vertex property")
    arrays: dict[str, np.ndarray] = {
        "coord": coord,
        "color": color,
        "normal": normal,
        "segment20": LabelMap.to_benchmark(
            label_props["label"].astype(np.int64), VALID_CLASS_IDS_20
        ),
    }
    segment200 = _segment200(scene_dir, scene, len(coord), labels)
    if segment200 is not None:
        arrays["segment200"] = segment200
    return save_scene(out_root / scene, arrays)


def save_scene(out: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write a scene folder of ``<name>.npy`` arrays atomically: into a temporary folder that is
    renamed at the end, so an interrupted conversion leaves no half scene."""
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert raw ScanNet v2 scenes to arrays.")
    parser.add_argument("--raw", required=True, help="folder of scene* folders (ScanNet 'scans')")
    parser.add_argument("--labels", required=True, help="scannetv2-labels.combined.tsv")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    labels = LabelMap(Path(args.labels))
    scenes = sorted(
        p for p in Path(args.raw).iterdir() if p.is_dir() and p.name.startswith("scene")
    )
    if not scenes:
        raise SystemExit(f"no scene* folders under {args.raw}")
    for i, scene in enumerate(scenes, 1):
        convert_scene(scene, Path(args.out), labels)
        print(f"[{i}/{len(scenes)}] {scene.name}", flush=True)


if __name__ == "__main__":
    main()
