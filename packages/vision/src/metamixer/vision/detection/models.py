"""Detection networks: any timm ``features_only`` backbone + torchvision's FPN, and Mask R-CNN on it.

``TimmFPNBackbone`` is generic: it turns a timm model (our ``ffnet_1`` … ``ffnet_4`` /
``ffnet_test``, registered when ``metamixer.vision`` is imported, or a peer such as
``convnext_tiny``) into the ``backbone`` that every torchvision detector takes (an ``nn.Module``
returning an ordered dict of feature maps, with ``out_channels``): Faster / Mask / Keypoint R-CNN,
RetinaNet, FCOS.  The authors evaluate FFNet with Cascade Mask R-CNN (their mmdetection fork);
torchvision has no Cascade R-CNN, so ``build_mask_rcnn`` is the detector offered here, and a cascade
head would plug into the same backbone.

Batch normalisation: the authors train the FFNet backbone with its BatchNorms trainable and in
training mode (``SyncBatchNorm`` over 8 GPUs × 2 images).  We keep that default
(``norm_eval=False``; turn on ``trainer.sync_batchnorm`` for multi-GPU runs so that each BN sees
the whole batch).  With few images per device and no synchronisation, ``norm_eval=True`` keeps
the backbone's BN statistics (from the classification checkpoint) fixed while their affine weights
still train, as mmdetection's ``norm_eval`` does for ResNets.  Like the authors' detection
backbone, every stage output passes through a channels-first LayerNorm before the FPN
(``out_norm``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import timm
from timm.layers import LayerNorm2d
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from metamixer.core import ARCHITECTURES, network_args
from metamixer.vision.backbone import load_backbone_weights


class TimmFPNBackbone(nn.Module):
    """A timm model's multi-scale features through a feature pyramid (torchvision's FPN with an
    extra max-pooled level, as Mask R-CNN expects: keys ``"0"`` … ``"3"`` and ``"pool"``).

    Args:
        arch: a timm model with ``features_only`` support (``ffnet_2``, ``convnext_tiny``, …).
        arch_args: overrides of the architecture's arguments (checked by name for our registered
            architectures), e.g. ``drop_path_rate``.
        out_indices: the backbone stages fed to the FPN.
        fpn_channels: channels of every pyramid level (``out_channels``).
        out_norm: a channels-first LayerNorm on each stage output before the FPN (the authors'
            detection backbone has one per stage).
        norm_eval: keep the backbone's BatchNorm layers in evaluation mode while training (frozen
            running statistics; their affine weights still train).
    """

    def __init__(
        self,
        arch: str,
        arch_args: Mapping[str, Any] | None = None,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        fpn_channels: int = 256,
        out_norm: bool = True,
        norm_eval: bool = False,
    ) -> None:
        super().__init__()
        overrides = dict(arch_args or {})
        if arch in ARCHITECTURES:
            network_args(arch, None, overrides)  # unknown names fail here, listing the valid ones
        self.body = timm.create_model(
            arch, pretrained=False, features_only=True, out_indices=tuple(out_indices), **overrides
        )
        channels = self.body.feature_info.channels()
        self.strides = self.body.feature_info.reduction()
        self.norms = nn.ModuleList(LayerNorm2d(c) if out_norm else nn.Identity() for c in channels)
        self.fpn = FeaturePyramidNetwork(channels, fpn_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = fpn_channels
        self.norm_eval = norm_eval

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        features = self.body(images)
        return self.fpn(
            OrderedDict(
                (str(i), norm(f))
                for i, (norm, f) in enumerate(zip(self.norms, features, strict=True))
            )
        )

    def train(self, mode: bool = True) -> TimmFPNBackbone:
        super().train(mode)
        if mode and self.norm_eval:
            for module in self.body.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self


def build_mask_rcnn(
    arch: str,
    num_classes: int,
    arch_args: Mapping[str, Any] | None = None,
    *,
    init_backbone: str | None = None,
    fpn_channels: int = 256,
    out_norm: bool = True,
    norm_eval: bool = False,
    min_size: int | Sequence[int] = 800,
    max_size: int = 1333,
    box_head_dim: int = 1024,
    mask_head_dim: int = 256,
    rpn_batch_size_per_image: int = 256,
    rpn_proposals: tuple[int, int] = (2000, 1000),
    box_batch_size_per_image: int = 512,
    box_score_thresh: float = 0.05,
    box_detections_per_img: int = 100,
) -> MaskRCNN:
    """torchvision's Mask R-CNN on ``TimmFPNBackbone(arch)``.

    ``num_classes`` counts the object categories; torchvision's background class 0 is added here.
    ``min_size`` is the short side of the resized images: several values = one drawn per training
    image (multi-scale training), evaluation uses the last one; the long side is capped at
    ``max_size``.  Predictions come back in the input images' own coordinates.  ``init_backbone``:
    a local classification file (authors' release, our export or an ``ImageClassifier``
    checkpoint) for the backbone; the FPN and heads start from torchvision's initialisation.
    ``rpn_proposals``: proposals kept per image (and FPN level before NMS) in training, evaluation.
    """
    backbone = TimmFPNBackbone(
        arch, arch_args, fpn_channels=fpn_channels, out_norm=out_norm, norm_eval=norm_eval
    )
    if init_backbone is not None:
        load_backbone_weights(backbone.body, init_backbone)
    n = num_classes + 1
    pooled = 7 * 7 * fpn_channels
    return MaskRCNN(
        backbone,
        min_size=tuple(min_size) if isinstance(min_size, Sequence) else min_size,
        max_size=max_size,
        rpn_batch_size_per_image=rpn_batch_size_per_image,
        rpn_pre_nms_top_n_train=rpn_proposals[0],
        rpn_post_nms_top_n_train=rpn_proposals[0],
        rpn_pre_nms_top_n_test=rpn_proposals[1],
        rpn_post_nms_top_n_test=rpn_proposals[1],
        box_batch_size_per_image=box_batch_size_per_image,
        box_score_thresh=box_score_thresh,
        box_detections_per_img=box_detections_per_img,
        box_head=TwoMLPHead(pooled, box_head_dim),
        box_predictor=FastRCNNPredictor(box_head_dim, n),
        mask_head=MaskRCNNHeads(fpn_channels, [mask_head_dim] * 4, 1),
        mask_predictor=MaskRCNNPredictor(mask_head_dim, mask_head_dim, n),
    )
