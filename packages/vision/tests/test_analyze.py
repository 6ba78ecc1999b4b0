"""The analysis commands on FFNet and a timm ConvNeXt write their figures and summaries."""

import json
from pathlib import Path

from metamixer.vision.analyze import main


def test_erf_sparsity_and_coefficient_maps(tmp_path):
    common = ["--images", "skimage", "--count", "2", "--size", "64", "--out", str(tmp_path)]
    main(["erf", "--models", "ffnet_test", "convnext_atto", *common])
    erf = json.loads((tmp_path / "erf.json").read_text())
    assert set(erf) == {"ffnet_test", "convnext_atto"} and all(
        0 < v["0.99"] <= 1 for v in erf.values()
    )
    main(["sparsity", "--models", "ffnet_test", *common])
    rows = json.loads((tmp_path / "sparsity.json").read_text())["ffnet_test"]
    assert {r["mixes"] for r in rows} == {"tokens", "channels"} and len(rows) == 10
    main(["coefmaps", "--models", "ffnet_test", "--top_k", "2", *common])
    for name in ("erf.png", "sparsity_ffnet_test.png", "coefmaps_ffnet_test.png"):
        assert (tmp_path / name).stat().st_size > 5000


def test_a_checkpoint_is_analysed_at_its_own_resolution_and_channels(tmp_path, capsys):
    from metamixer.vision.__main__ import main as cli

    fit = cli(["fit", "--config", str(Path(__file__).parents[3] / "experiments/vision/fashion_mnist.yaml"),
               "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
               "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
               f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"])  # fmt: skip
    ckpt = Path(fit.trainer.log_dir) / "checkpoints" / "last.ckpt"
    main(["sparsity", "--models", str(ckpt), "--count", "2", "--out", str(tmp_path / "a")])
    assert "1-channel images at 32×32" in capsys.readouterr().out
