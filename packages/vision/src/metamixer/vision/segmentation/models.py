"""Semantic segmentation on a timm backbone: UperNet or semantic FPN from segmentation_models_pytorch.

The backbone is any timm model with feature maps at strides 4/8/16/32 (our ``ffnet_*`` variants,
registered with timm, or a peer such as ``convnext_tiny``); smp builds the decoder on it
(``encoder_name="tu-<model>"``), so nothing here is written by hand.

Contract of every segmentation network of this project (also ``FFNetSeg``): ``forward(images)``
returns logits ``(B, num_classes, H, W)`` at the input resolution (H, W multiples of 32);
``forward_with_features`` returns ``(logits, backbone feature maps, finest first, the last two at
strides 16 and 32)`` and ``feature_channels`` their widths (the training recipe's auxiliary head
reads the stride-16 map); ``backbone`` is the feature extractor and ``load_backbone(path)``
initialises it from a classification checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import segmentation_models_pytorch as smp
import torch
from torch import Tensor, nn

from metamixer.core import register_architecture
from metamixer.vision.backbone import load_backbone_weights

DECODERS = {"upernet": smp.UPerNet, "fpn": smp.FPN}


class SegmentationNetwork(nn.Module):
    """A timm backbone with an smp decoder.

    Args:
        encoder: timm model name of the backbone (``ffnet_1`` … ``ffnet_4``, ``convnext_tiny``…).
        decoder: "upernet" or "fpn" (semantic FPN).
        num_classes: classes to predict.
        in_chans: input image channels.
        encoder_args: the backbone's own arguments (e.g. ``depths``, ``token_mixers``).
        drop_path_rate: the backbone's stochastic depth.
        decoder_channels: UperNet width (FPN: the pyramid width; its segmentation branch is half).
    """

    def __init__(
        self,
        encoder: str = "ffnet_2",
        decoder: str = "upernet",
        num_classes: int = 150,
        in_chans: int = 3,
        encoder_args: dict[str, Any] | None = None,
        drop_path_rate: float = 0.2,
        decoder_channels: int = 512,
    ) -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; valid: {', '.join(DECODERS)}")
        widths = (
            {"decoder_channels": decoder_channels}
            if decoder == "upernet"
            else {
                "decoder_pyramid_channels": decoder_channels,
                "decoder_segmentation_channels": decoder_channels // 2,
            }
        )
        self.num_classes, self.in_chans = num_classes, in_chans
        self.net = DECODERS[decoder](
            encoder_name=f"tu-{encoder}", encoder_weights=None, in_channels=in_chans,
            classes=num_classes, drop_path_rate=drop_path_rate, **widths, **(encoder_args or {}),
        )  # fmt: skip
        self.feature_channels = [c for c in self.net.encoder.out_channels[1:] if c > 0]

    @property
    def backbone(self) -> nn.Module:
        """The timm feature extractor (for layer-wise learning rates)."""
        return self.net.encoder.model

    def check_input(self, images: Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != self.in_chans:
            raise ValueError(
                f"expected images (B, {self.in_chans}, H, W), got {tuple(images.shape)}"
            )
        if images.shape[-2] % 32 or images.shape[-1] % 32:
            raise ValueError(
                f"image size {tuple(images.shape[-2:])} is not a multiple of 32 (the backbone's "
                "stride); pad it (the segmenter's inference pads for you)"
            )

    def forward_with_features(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        self.check_input(images)
        features = self.net.encoder(images)
        logits = self.net.segmentation_head(self.net.decoder(features))
        return logits, [f for f in features[1:] if f.shape[1] > 0]  # without the input and the
        # empty stride-2 slot smp keeps for 4-stage encoders

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_with_features(images)[0]

    def load_backbone(self, path: str) -> None:
        """Initialise the backbone from a classification file (authors' release or ours)."""
        load_backbone_weights(self.net.encoder.model, path)


def _example(network: nn.Module) -> tuple[Tensor]:
    in_chans = cast(
        SegmentationNetwork, network
    ).in_chans  # registered for SegmentationNetwork only
    return (torch.randn(2, in_chans, 64, 64),)


#: Every argument of each variant.  UperNet FFNet-2/3/4: the paper's ADE20K models (with the
#: recipe's auxiliary head: 58 / 80 / 113 M parameters at 150 classes, as the paper reports).
UPERNET = dict(decoder="upernet", encoder_args=None, decoder_channels=512)
FPN = dict(decoder="fpn", encoder_args=None, decoder_channels=256)
VARIANTS: dict[str, Mapping[str, Any]] = {
    "upernet_ffnet_1": dict(UPERNET, encoder="ffnet_1", drop_path_rate=0.1),
    "upernet_ffnet_2": dict(UPERNET, encoder="ffnet_2", drop_path_rate=0.2),
    "upernet_ffnet_3": dict(UPERNET, encoder="ffnet_3", drop_path_rate=0.3),
    "upernet_ffnet_4": dict(UPERNET, encoder="ffnet_4", drop_path_rate=0.3),
    "fpn_ffnet_1": dict(FPN, encoder="ffnet_1", drop_path_rate=0.1),
    "fpn_ffnet_2": dict(FPN, encoder="ffnet_2", drop_path_rate=0.2),
    # the peer of the speed table: ConvNeXt-T with the same UperNet
    "upernet_convnext_tiny": dict(UPERNET, encoder="convnext_tiny", drop_path_rate=0.4),
    "upernet_ffnet_test": dict(UPERNET, encoder="ffnet_test", drop_path_rate=0.0,
                               decoder_channels=32),
    "fpn_ffnet_test": dict(FPN, encoder="ffnet_test", drop_path_rate=0.0, decoder_channels=64),
}  # fmt: skip

for _name, _args in VARIANTS.items():
    register_architecture(
        _name, SegmentationNetwork, _args, task_args=("num_classes", "in_chans"),
        example=_example, test_task={"num_classes": 5, "in_chans": 3},
    )  # fmt: skip
