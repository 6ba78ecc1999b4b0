"""The PoolFormer built from core's pooling mixer computes timm's poolformer_s12 once timm's weights
are converted, so a local timm PoolFormer weight file goes through the MetaMixer analyses."""

import json

import pytest
import timm
import torch
from timm.models.metaformer import MetaFormer

from metamixer.core import build_network
from metamixer.lab.analysis import coefficient_sparsity, metamixers
from metamixer.vision.analyze import main
from metamixer.vision.models import PoolFormer
from metamixer.vision.models.poolformer_weights import convert_timm_poolformer_state_dict


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (layer-scales around 1, not timm's 1e-5, so that every block counts)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            scale = "scale" in name or "norm" in name
            p.copy_(
                1 + 0.2 * noise if scale and name.endswith(("scale", "weight")) else 0.05 * noise
            )
    return model.eval()


def test_poolformer_s12_computes_timms_after_converting_its_weights():
    theirs = randomized(timm.create_model("poolformer_s12", pretrained=False))
    ours = build_network("poolformer_s12").eval()
    assert isinstance(ours, PoolFormer)
    ours.load_state_dict(convert_timm_poolformer_state_dict(theirs.state_dict()), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_features(x), theirs.forward_features(x))
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)
        assert ours(x).std() > 1e-3  # not a trivially constant output
    # a wrong weight breaks it (the comparison can fail)
    state = convert_timm_poolformer_state_dict(theirs.state_dict())
    key = "stages.2.blocks.3.channel.mixer.key.weight"
    state[key] = state[key] * 1.5  # a new tensor: the state dict shares timm's parameters
    ours.load_state_dict(state)
    with torch.no_grad():
        assert not torch.allclose(ours(x), theirs(x), atol=1e-4)


def test_its_channel_mixers_are_metamixers_with_gelu_coefficients():
    model = build_network("poolformer_s12").eval()
    mixers = metamixers(model)
    assert len(mixers) == 24 and [m.mixes for _, m in mixers[:2]] == ["tokens", "channels"]
    with torch.no_grad():
        rows = coefficient_sparsity(model, [torch.randn(1, 3, 64, 64)])
    assert len(rows) == 12 and {r["mixes"] for r in rows} == {"channels"}
    assert {r["act"] for r in rows} == {"GELU"} and all(0 < r["active"] < 1 for r in rows)


def test_conversion_refuses_other_layouts():
    with pytest.raises(ValueError, match="not in timm's PoolFormer layout"):
        convert_timm_poolformer_state_dict({"stages.0.blocks.0.attn.qkv.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="original layout"):
        convert_timm_poolformer_state_dict({"network.0.0.mlp.fc1.weight": torch.zeros(1)})
    ours = build_network("poolformer_test").state_dict()
    assert convert_timm_poolformer_state_dict(ours).keys() == ours.keys()  # ours passes through


def tiny_timm_poolformer() -> torch.nn.Module:
    """timm's MetaFormer with poolformer_s12's settings at poolformer_test's size."""
    from timm.layers import GroupNorm1

    return MetaFormer(
        depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), downsample_norm=None, mlp_act=torch.nn.GELU,
        mlp_bias=True, norm_layers=GroupNorm1, layer_scale_init_values=1e-5,
        res_scale_init_values=None, use_mlp_head=False,
    )  # fmt: skip


def test_a_timm_poolformer_weight_file_is_analysed_with_its_provenance(tmp_path):
    theirs = randomized(tiny_timm_poolformer(), seed=1)
    torch.save({"state_dict": theirs.state_dict()}, tmp_path / "poolformer.pth")
    spec = f"poolformer_test={tmp_path / 'poolformer.pth'}"
    common = ["--images", "skimage", "--count", "1", "--size", "64", "--out", str(tmp_path)]
    main(["sparsity", "--models", spec, *common])
    rows = json.loads((tmp_path / "sparsity.json").read_text())[spec]
    assert [r["layer"] for r in rows] == [f"stages.{i}.blocks.0.channel.mixer" for i in range(4)]
    assert {r["weights"] for r in rows} == {f"weights: {tmp_path / 'poolformer.pth'}"}
    assert (tmp_path / "sparsity_poolformer_test.png").stat().st_size > 5000
    # the same sparsity, computed on timm's own model with a hook on its GELUs
    from metamixer.vision.analyze import load_images

    image = load_images("skimage", 64, 3, 1)[0]
    seen = []
    hooks = [
        stage.blocks[0].mlp.act.register_forward_hook(lambda m, i, o: seen.append(o))
        for stage in theirs.stages
    ]
    with torch.no_grad():
        theirs(image)
    for h in hooks:
        h.remove()
    expected = [float((o > 0).float().mean()) for o in seen]
    assert [r["active"] for r in rows] == pytest.approx(expected, abs=1e-6)
    # the same weights as a .safetensors file (timm's hub format, read from local disk)
    from safetensors.torch import save_file

    save_file(theirs.state_dict(), str(tmp_path / "model.safetensors"))
    spec = f"poolformer_test={tmp_path / 'model.safetensors'}"
    main(["sparsity", "--models", spec, *common])
    again = json.loads((tmp_path / "sparsity.json").read_text())[spec]
    assert [r["active"] for r in again] == [r["active"] for r in rows]
