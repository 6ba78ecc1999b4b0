"""Benchmarks that write records run end to end at tiny sizes: every check passes, every row
becomes a record."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metamixer.lab.results import grouped_table, load_records

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
    tasks = {r["group"]["task"] for r in throughput}  # named for the size that ran
    assert tasks == {"classification 64²", "super-resolution ×2 of 64²"}
    header, *rows = grouped_table(throughput)
    assert header[:3] == ["task", "model", "mode"] and len(rows) == 6


@pytest.mark.slow
def test_the_gpu_profiles_dry_run_classes_the_time_and_times_every_candidate(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks/gpu_profile.py"), "--device", "cpu", "--quick",
           "--records", str(tmp_path)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    profile = load_records([tmp_path / "profile"])
    eager = {r["group"]["operator class"]: r["metrics"]["% of time"] for r in profile
             if r["group"]["network"] == "ffnet_1 fused" and r["group"]["mode"] == "eager"}  # fmt: skip
    assert {"pointwise conv", "depthwise conv 7×7", "GELU", "outside modules"} <= set(eager)
    assert abs(sum(eager.values()) - 100) < 1e-6
    modes = {(r["group"]["network"], r["group"]["mode"]) for r in profile}
    assert modes == {
        (n, m) for n in ("ffnet_1 fused", "convnext_tiny") for m in ("eager", "compiled")
    }
    candidates = load_records([tmp_path / "candidates"])
    assert candidates[0]["metrics"]["× convnext_tiny compiled"] == 1
    assert len(candidates) == 8 and all(r["metrics"]["img/s"] > 0 for r in candidates)


@pytest.mark.slow
def test_the_runtimes_benchmark_times_every_target_and_records_it(tmp_path):
    header, *rows = run("runtimes.py", ["--res", "64", "--sr-res", "32", "--batch", "1",
                        "--rounds", "1", "--seconds", "0.05", "--models", "ffnet_1 (fused)",
                        "ffnet_1 authors' (fused)"], tmp_path)  # fmt: skip
    table = {(row[0], row[1]): dict(zip(header, row, strict=True)) for row in rows}
    assert table["ffnet_1 authors' (fused)", "torch fp32"]["× base"] == "1 (1)"
    assert ("ffnet_1 (fused)", "openvino int8, NNCF mixed") in table  # quantizers, placements
    compile_s = table["ffnet_1 (fused)", "torch compile"]["compile s"]
    assert float(compile_s.split()[0]) > 0


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


def run(script: str, args: list[str], out: Path, times: int = 1) -> list[list[str]]:
    """Run a CPU benchmark ``times`` into one records folder; its README table (mean ± std over
    runs)."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *args, "--records", str(out)]
    for _ in range(times):
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    return grouped_table(load_records([out]))


def test_the_vision_benchmark_records_every_model_and_mode(tmp_path):
    header, *rows = run("vision.py", ["--models", "ffnet_1 (fused)", "resnet50", "--modes",
                        "eager", "jit", "--batch", "1", "--rounds", "1", "--seconds", "0.05"],
                        tmp_path, times=2)  # fmt: skip
    assert header[:4] == ["model", "res", "params (M)", "GMACs"]
    assert [row[0] for row in rows] == ["ffnet_1 (fused)", "resnet50"]
    base = dict(zip(header, rows[0], strict=True))
    assert base["eager @1 ×"] == base["jit @1 ×"] == "1.00 ± 0 (2)"  # the reference, both runs
    assert base["best @1 ×"] == "1.00 ± 0 (2)"
    assert base["params (M)"] == "13.66" and rows[1][2] == "25.56"  # FFNet-1 fused, ResNet-50


def test_the_onednn_mode_fuses_agrees_with_eager_and_switches_the_fuser_back_off():
    spec = importlib.util.spec_from_file_location("torchscript", ROOT / "benchmarks/torchscript.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.GELU()).eval()
    x = torch.randn(1, 3, 16, 16)
    run = module.torchscript(model, x, "onednn")
    with torch.inference_mode():
        for _ in range(2):  # the fuser rewrites the graph on the profiled runs
            y = run(x)
        assert "oneDNNFusionGroup" in str(torch.jit.last_executed_optimized_graph())
        torch.testing.assert_close(y, model(x))
    assert not torch.jit.onednn_fusion_enabled()
    with pytest.raises(ValueError, match="unknown TorchScript mode 'nnc'"):
        module.torchscript(model, x, "nnc")


def test_the_segmentation_benchmark_records_every_network(tmp_path):
    header, *rows = run("segmentation.py", ["--size", "64", "--modes", "eager",
                        "--rounds", "1", "--seconds", "0.05"], tmp_path)  # fmt: skip
    assert header == ["network", "params (M)", "GMACs", "eager img/s", "eager ×", "code"]
    assert len(rows) == 5 and rows[0][0] == "UperNet ConvNeXt-T" and rows[0][4] == "1 (1)"


def test_the_superres_benchmark_records_every_model(tmp_path):
    header, *rows = run("superres.py", ["--size", "32", "--repeats", "1", "--models",
                        "ffnet_sr_light", "ffnet_sr_light_authors"], tmp_path)  # fmt: skip
    table = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert set(table) == {"ffnet_sr_light", "ffnet_sr_light_authors", "swinir_light"}
    assert table["swinir_light"]["× SwinIR-light"] == "1 (1)"
    assert table["ffnet_sr_light"]["params"] == table["ffnet_sr_light_authors"]["params"]


def test_the_same_process_superres_timing_records_both_networks(tmp_path):
    header, *rows = run("deploy.py", ["--workloads", "--same-process", "--rounds", "2"], tmp_path)
    assert header[:3] == ["network", "img/s", "× first row"]
    assert [row[0] for row in rows] == ["ours, fold + channels-last",
                                        "authors', fold + channels-last"]  # fmt: skip
    assert rows[0][2] == "1 (1)"  # the reference
    (record,) = [r for r in load_records([tmp_path]) if r["group"]["network"].startswith("auth")]
    assert record["same_graph"] is True and record["rounds"] == 2
