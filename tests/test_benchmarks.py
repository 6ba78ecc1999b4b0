"""Benchmarks that write records run end to end at tiny sizes: every check passes, every row
becomes a record."""

import subprocess
import sys
from pathlib import Path

from metamixer.core.results import grouped_table, load_records

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_checks_dry_run_writes_a_record_per_result(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--device", "cpu", "--quick",
           "--modes", "eager", "--records", str(tmp_path)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    steps = load_records([tmp_path / "steps"])
    assert len(steps) == 4 * 2 + 1  # four modalities × (32-true, bf16-mixed) + the sparse check
    assert all(r["finite"] for r in steps)
    throughput = load_records([tmp_path / "throughput"])
    models = {r["group"]["model"] for r in throughput}
    assert "ffnet_1 authors' (fused)" in models and "ffnet_sr_light authors' (fused)" in models
    authors = [r for r in throughput if "authors'" in r["group"]["model"]]
    assert all(r["max rel diff vs ours"] < 1e-4 for r in authors)  # the same function
    assert all(r["metrics"]["images/s"] > 0 for r in throughput)
    header, *rows = grouped_table(throughput)
    assert header[:3] == ["task", "model", "mode"] and len(rows) == 6


def test_the_sparse_conv_benchmark_times_every_row_and_records_it(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks/pointcloud.py"), "--voxels", "3000",
           "--channels", "8", "--repeats", "1", "--records", str(tmp_path)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    convs = load_records([tmp_path / "convs"])
    names = {r["group"]["conv"] for r in convs}
    assert {
        "spconv SubMConv3d (full C→C)",
        "depthwise (ours, native)",
        "depthwise (naive)",
    } <= names
    assert all(r["metrics"]["fwd+bwd ms"] > 0 for r in convs)
    networks = load_records([tmp_path / "networks"])
    assert [r["group"]["params (M)"] for r in networks] == [11.1, 103.2]  # ours, the authors'
