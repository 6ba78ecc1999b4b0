"""Analysis figures and JSON say where their weights come from; untrained networks are compared only
at equal residual scales; per-class key statistics of a classifier checkpoint."""

import json

import pytest
import torch

from metamixer.core import build_network
from metamixer.lab.analysis import (
    effective_receptive_field,
    residual_scale,
    residual_scale_parameters,
)
from metamixer.vision.analyze import load, load_images, main

COMMON = ["--images", "skimage", "--count", "1", "--size", "64"]


def checkpoint(tmp_path, step: int, name: str = "run.ckpt"):
    """An ImageClassifier checkpoint of ffnet_test on 1-channel, 10-class images (Fashion-MNIST)."""
    torch.manual_seed(0)
    net = build_network("ffnet_test", {"num_classes": 10, "in_chans": 1})
    path = tmp_path / name
    torch.save(
        {
            "global_step": step,
            "hyper_parameters": {"arch": "ffnet_test", "arch_args": {}, "num_classes": 10,
                                 "in_chans": 1},
            "datamodule_hyper_parameters": {"pad": 2},
            "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
        },
        path,
    )  # fmt: skip
    return str(path)


def test_untrained_models_with_unequal_residual_scales_are_refused(tmp_path):
    # ffnet_test starts its layer-scales at 1e-6, resnet18 has none (scale 1)
    with pytest.raises(SystemExit, match=r"unequal residual scales .*--residual_scale 1"):
        main(["erf", "--models", "ffnet_test", "resnet18", *COMMON, "--out", str(tmp_path)])
    assert not (tmp_path / "erf.png").exists()
    with pytest.raises(SystemExit, match="cannot equalise"):
        main(["erf", "--models", "ffnet_test", "resnet18", "--residual_scale", "0.5", *COMMON])


def test_equalised_residual_scales_are_applied_and_labelled(tmp_path):
    main(["erf", "--models", "ffnet_test", *COMMON, "--out", str(tmp_path / "own")])
    own = json.loads((tmp_path / "own" / "erf.json").read_text())["ffnet_test"]
    assert own["weights"] == "untrained (initialisation)"
    assert own["note"].startswith("untrained networks at initialisation")
    out = tmp_path / "equal"
    main(["erf", "--models", "ffnet_test", "resnet18", "--residual_scale", "1", *COMMON,
          "--out", str(out)])  # fmt: skip
    erf = json.loads((out / "erf.json").read_text())
    labels = {k: v["weights"] for k, v in erf.items()}
    assert labels == dict.fromkeys(
        ["ffnet_test", "resnet18"], "untrained (initialisation), layer-scales set to 1"
    )
    torch.manual_seed(0)
    loaded = load("ffnet_test", 1.0)
    assert len(residual_scale_parameters(loaded.model)) == 10
    assert residual_scale(loaded.model) == 1.0 and not loaded.trained
    torch.manual_seed(0)
    tiny = load("ffnet_test").model  # the same weights, layer-scales at 1e-6
    images = load_images("skimage", 64, 3, 1)
    scaled = effective_receptive_field(loaded.model.forward_features, images)
    near_identity = effective_receptive_field(tiny.forward_features, images)
    assert not torch.allclose(scaled, near_identity, rtol=1e-4, atol=0)
    assert residual_scale(load("ffnet_1", 1.0).model) == 1.0  # built with layer-scales (none)
    assert (out / "erf.png").stat().st_size > 5000


def test_unequal_scales_can_be_drawn_only_with_a_label(tmp_path):
    main(["erf", "--models", "ffnet_test", "resnet18", "--allow_unequal_residual_scales",
          *COMMON, "--out", str(tmp_path)])  # fmt: skip
    erf = json.loads((tmp_path / "erf.json").read_text())
    assert all(v["note"].startswith("UNEQUAL residual scales") for v in erf.values())


def test_checkpoints_and_weight_files_are_labelled(tmp_path):
    trained = checkpoint(tmp_path, step=7)
    fresh = checkpoint(tmp_path, step=0, name="fresh.ckpt")
    torch.save(build_network("ffnet_test").state_dict(), tmp_path / "w.pth")
    out = tmp_path / "a"
    main(["sparsity", "--models", trained, fresh, "--count", "1", "--images", "fashion-mnist",
          "--out", str(out)])  # fmt: skip
    rows = json.loads((out / "sparsity.json").read_text())
    assert {r["weights"] for r in rows[trained]} == {f"trained here: {trained} (step 7)"}
    assert {r["weights"] for r in rows[fresh]} == {f"untrained (initialisation): {fresh} (step 0)"}
    assert all(r["note"] == "mixes trained and untrained networks" for r in rows[trained])
    assert (out / "sparsity.png").stat().st_size > 5000  # both models in one figure
    weights = f"ffnet_test={tmp_path / 'w.pth'}"
    main(["coefmaps", "--models", weights, *COMMON, "--top_k", "2", "--out", str(out)])
    maps = json.loads((out / "coefmaps.json").read_text())
    assert maps[weights]["weights"] == f"weights: {tmp_path / 'w.pth'}"


def test_keys_of_a_classifier_checkpoint(tmp_path):
    ckpt = checkpoint(tmp_path, step=3)
    out = tmp_path / "k"
    main(["keys", "--models", ckpt, "--images", "fashion-mnist", "--count", "3",
          "--top_share", "0.25", "--out", str(out)])  # fmt: skip
    result = json.loads((out / "keys.json").read_text())[ckpt]
    assert result["weights"] == f"trained here: {ckpt} (step 3)"
    assert result["fires"] == "top 25% of keys by class-mean activation"
    layers = result["layers"]
    assert len(layers) == 10 and {r["mixes"] for r in layers} == {"tokens", "channels"}
    for r in layers:
        assert len(r["keys_per_class"]) == 10 and "Ankle boot" in r["keys_per_class"]
        k = -(-r["keys"] // 4)  # ceil: every class fires its top quarter
        assert all(len(v) == k for v in r["keys_per_class"].values())
        assert 0 <= r["shared_all"] <= r["shared_half"] <= 1 and k <= r["active"] <= r["keys"]
    assert (out / "keys_run.png").stat().st_size > 5000
    with pytest.raises(ValueError, match="need labelled images"):
        main(["keys", "--models", ckpt, "--images", "skimage", "--out", str(out)])
