"""FFNet-seg: the authors' checkpoint layouts load into our FFNetSeg and give their architecture's
logits; sizes match the paper; mismatching files are refused with the keys named."""

import pytest
import torch
from ffnet_seg_official_reference import (
    backbone_layout,
    official_backbone_forward,
    official_segmenter_forward,
    random_checkpoint,
    segmenter_layout,
)
from metamixer_testing import randomize_batchnorm

import metamixer.vision  # noqa: F401  (registers the architectures)
from metamixer.core import build_network, reparameterize_model
from metamixer.vision.segmentation.ffnet_seg import SEG_VARIANTS, FFNetSeg, StripRepDWConv
from metamixer.vision.segmentation.ffnet_seg_weights import (
    convert_official_ffnet_seg,
    load_official_ffnet_seg,
)

#: The authors' Cityscapes configuration (ffnet_seg_1024_city_160k) relative to the ADE20K one.
CITYSCAPES = dict(head_depth=5, head_mlp_ratio=1.0, head_drop_path_rate=0.0, drop_path_rate=0.35)


def backbone_args(v, **extra):
    return dict(
        stem=v["stem_dim"], token_kernels=v["token_kernels"], channel_kernel=v["channel_kernels"],
        expansion=v["mlp_ratio"], **extra,
    )  # fmt: skip


def layout_of(name, num_classes, **overrides):
    v = {**SEG_VARIANTS[name], **overrides}
    return segmenter_layout(
        v["depths"], v["dims"], **backbone_args(v), head_width=v["head_width"],
        head_depth=v["head_depth"], head_kernel=v["head_kernel"],
        head_expansion=v["head_mlp_ratio"], head_out_ratio=v["head_out_ratio"],
        num_classes=num_classes,
    )  # fmt: skip


def their_checkpoint(shapes, seed):
    """Random weights and BN statistics; layer-scales small enough that 30 blocks stay tame."""
    sd = random_checkpoint(shapes, seed=seed)
    for key in sd:
        if key.endswith("layer_scale"):
            sd[key] = sd[key] * 0.3
    return sd


def unfilled(name, num_classes, **overrides):
    """The network with uninitialised tensors (built on the meta device: fast for 68M parameters);
    a strict load must then fill every one of them."""
    with torch.device("meta"):
        net = build_network(name, {"num_classes": num_classes, "in_chans": 3}, overrides)
    return net.to_empty(device="cpu")


def save_mmseg(sd, path):
    torch.save({"meta": {"iter": 160000}, "state_dict": sd}, path)  # mmseg EncoderDecoder file
    return path


def test_tiny_segmenter_checkpoint_matches_their_logits(tmp_path):
    sd = their_checkpoint(layout_of("ffnet_seg_test", 5), seed=0)
    net = build_network("ffnet_seg_test", {"num_classes": 5, "in_chans": 3})
    load_official_ffnet_seg(net, save_mmseg(sd, tmp_path / "seg.pth")).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ours = net(x)
        torch.testing.assert_close(ours, official_segmenter_forward(sd, x), atol=1e-4, rtol=1e-4)
        folded = reparameterize_model(net)(x)
    torch.testing.assert_close(folded, ours, atol=1e-4, rtol=1e-4)
    assert ours.shape == (2, 5, 64, 96)


def test_ffnet_seg_ade20k_checkpoint_layout_matches_their_logits(tmp_path):
    """The real ffnet_seg_sys_512_160k_ade20k layout (150 classes), random weights, at 64×64."""
    sd = their_checkpoint(layout_of("ffnet_seg", 150), seed=1)
    net = unfilled("ffnet_seg", 150)
    load_official_ffnet_seg(net, save_mmseg(sd, tmp_path / "ade.pth")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = net(x), official_segmenter_forward(sd, x)
    assert theirs.abs().max() > 1e-2  # a meaningful comparison, not two near-zero maps
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("overrides", "num_classes"), [({}, 150), (CITYSCAPES, 19)], ids=["ade20k", "cityscapes"]
)
def test_their_layouts_have_exactly_our_tensors(overrides, num_classes):
    """Key for key and shape for shape, for both of their configurations (no weights needed)."""
    shapes = layout_of("ffnet_seg", num_classes, **overrides)
    theirs = convert_official_ffnet_seg(
        {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    )
    with torch.device("meta"):
        net = FFNetSeg(**{**SEG_VARIANTS["ffnet_seg"], **overrides}, num_classes=num_classes)
    assert {k: tuple(v.shape) for k, v in theirs.items()} == {
        k: tuple(v.shape) for k, v in net.state_dict().items()
    }


def test_parameter_count_matches_the_paper():
    """The paper reports 68M parameters for FFNet-seg (ADE20K, 150 classes)."""
    with torch.device("meta"):
        net = build_network("ffnet_seg", {"num_classes": 150, "in_chans": 3})
    count = sum(p.numel() for p in net.parameters())
    assert round(count / 1e6) == 68, count
    assert count == 68_476_566


@pytest.mark.parametrize("wrapper", ["model", "state_dict"])
def test_backbone_file_initialises_the_backbone(tmp_path, wrapper):
    """Their ImageNet file (ffnet_seg.pth.tar layout: backbone + head1/head2 classifier)."""
    v = SEG_VARIANTS["ffnet_seg_test"]
    sd = their_checkpoint(
        backbone_layout(v["depths"], v["dims"], **backbone_args(v, classifier=True)), seed=2
    )
    path = tmp_path / "ffnet_seg.pth.tar"
    torch.save({wrapper: {f"module.{k}": t for k, t in sd.items()}, "epoch": 300}, path)
    net = build_network("ffnet_seg_test", {"num_classes": 5, "in_chans": 3})
    head_before = {k: t.clone() for k, t in net.head.state_dict().items()}
    net.load_backbone(str(path))
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(
            net.forward_features(x), official_backbone_forward(sd, x), strict=True
        ):
            torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    for key, value in net.head.state_dict().items():
        assert torch.equal(value, head_before[key]), key
    backbone = dict(net.backbone.named_parameters())  # what layer-wise learning rates see
    assert backbone == {k: p for k, p in net.named_parameters() if not k.startswith("head.")}


def test_mismatching_checkpoints_are_refused_naming_keys(tmp_path):
    net = build_network("ffnet_seg_test", {"num_classes": 5, "in_chans": 3})
    sd = their_checkpoint(layout_of("ffnet_seg_test", 7), seed=0)
    with pytest.raises(ValueError, match=r"head\.classifier\.weight: checkpoint \(7, 64"):
        load_official_ffnet_seg(net, save_mmseg(sd, tmp_path / "classes.pth"))
    deeper = their_checkpoint(layout_of("ffnet_seg_test", 5, head_depth=3), seed=0)
    with pytest.raises(ValueError, match=r"unexpected .*head\.blocks\.2\."):
        load_official_ffnet_seg(net, save_mmseg(deeper, tmp_path / "deeper.pth"))
    partial = their_checkpoint(layout_of("ffnet_seg_test", 5), seed=0)
    del partial["backbone.stages.2.1.channel_mixer.layer_scale"]
    with pytest.raises(ValueError, match=r"missing .*stages\.2\.blocks\.0\.channel\.layer_s"):
        load_official_ffnet_seg(net, save_mmseg(partial, tmp_path / "partial.pth"))
    foreign = {"backbone.layer1.0.conv1.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"not in the authors'.*layer1\.0\.conv1"):
        load_official_ffnet_seg(net, save_mmseg(foreign, tmp_path / "resnet.pth"))
    classification = tmp_path / "classifier.pth"
    torch.save({"model": {"patch_embed.0.c.weight": torch.zeros(16, 3, 3, 3)}}, classification)
    with pytest.raises(ValueError, match=r"365 missing .*stages\.0\.blocks\.0\."):
        net.load_backbone(str(classification))


def test_strip_branch_conv_folds_into_one_conv():
    for small in (None, 3):
        conv = randomize_batchnorm(StripRepDWConv(6, 7, small), seed=4).eval()
        x = torch.randn(2, 6, 11, 13)
        with torch.no_grad():
            before = conv(x)
            conv.reparameterize()
            after = conv(x)
        assert isinstance(conv.fused, torch.nn.Conv2d) and conv.fused.kernel_size == (7, 7)
        torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="small_kernel"):
        StripRepDWConv(6, 7, 4)


def test_any_input_size_gives_logits_at_that_size():
    net = build_network("ffnet_seg_test", {"num_classes": 5, "in_chans": 1}).eval()
    with torch.no_grad():
        logits = net(torch.randn(1, 1, 72, 100))
    assert logits.shape == (1, 5, 72, 100)
    with pytest.raises(ValueError, match="at least 32"):
        net(torch.randn(1, 1, 16, 64))
    with pytest.raises(ValueError, match=r"\(batch, 1, height, width\)"):
        net(torch.randn(1, 3, 64, 64))
