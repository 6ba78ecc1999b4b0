"""The analysis commands on FFNet and a timm ConvNeXt write their figures and summaries."""

import json

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
