"""The design card's central use: a mixer defined in the user's own module (not in the packages),
registered by name and swept across all four modalities through their experiment configs."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXP = ROOT / "experiments"
LIMITS = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3",
          "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1"]  # fmt: skip
MODALITIES = {
    "vision": ([EXP / "vision/fashion_mnist.yaml"], "test/acc1", []),
    "timeseries": (
        [EXP / "timeseries/base.yaml", EXP / "timeseries/elecdemand.yaml"], "test/mse",
        ["--model.plot_series=0", "--model.arch_args.dim=8"],
    ),
    "superres": (
        [EXP / "superres/skimage_x2.yaml"], "test/heldout/psnr",
        ["--model.save_images=false", "--data.gt_size=48"],
    ),
    "pointcloud": ([EXP / "pointcloud/laspy_aerial.yaml"], "test/mIoU", []),
}  # fmt: skip


def test_a_user_mixer_is_swept_in_every_modality_by_name(tmp_path):
    shutil.copy(ROOT / "tests/user_mixers/gated_conv_mixer.py", tmp_path)
    spec = {
        "imports": ["gated_conv_mixer"],
        "parallel": 2,
        "grid": {"token_mixer": ["gated_conv"]},
        "modalities": {
            name: {
                "config": [str(c) for c in configs],
                "metric": metric,
                "budget": LIMITS + extra,
                "knobs": {"token_mixer": "--model.arch_args.token_mixers={}"},
            }
            for name, (configs, metric, extra) in MODALITIES.items()
        },
    }
    (tmp_path / "user.yaml").write_text(yaml.safe_dump(spec))
    out = subprocess.run(
        [sys.executable, "-m", "metamixer.lab.sweep", str(tmp_path / "user.yaml"),
         "--out", str(tmp_path / "runs")],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    results = [json.loads(p.read_text()) for p in (tmp_path / "runs/user").glob("*/result.json")]
    logs = {
        p.parent.name: p.read_text()[-1500:] for p in (tmp_path / "runs/user").glob("*/log.txt")
    }
    assert out.returncode == 0, (out.stdout[-2000:], logs)
    assert {r["modality"] for r in results} == set(MODALITIES)
    assert all(r["value"] is not None for r in results), results
    configs = list((tmp_path / "runs/user").rglob("config.yaml"))
    assert len(configs) == 4 and all("gated_conv" in c.read_text() for c in configs)
