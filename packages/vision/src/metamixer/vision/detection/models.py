"""Detection networks: any timm ``features_only`` backbone + torchvision's FPN, and torchvision's
detectors on it, registered as architectures (``metamixer.core.ARCHITECTURES``).

``TimmFPNBackbone`` is generic: it turns a timm model (our ``ffnet_1`` … ``ffnet_4`` /
``ffnet_test``, registered when ``metamixer.vision`` is imported, or a peer such as
``convnext_tiny``) into the ``backbone`` that every torchvision detector takes (an ``nn.Module``
returning an ordered dict of feature maps, with ``out_channels``).  On it, four torchvision
detectors, one registered spec each (every head argument spelled once, there; the same knob has
the same name in every spec: ``score_thresh``, ``nms_thresh``, ``detections_per_image``):

* ``mask_rcnn``: Mask R-CNN (boxes + instance masks), pyramid P2–P6 (stride 4 … 64);
* ``faster_rcnn``: Faster R-CNN (boxes), the same pyramid and box head;
* ``retinanet``: RetinaNet (boxes), P3–P7 (stride 8 … 128) as in its paper, anchors of
  ``anchor_scale`` × stride at three octave scales and three aspect ratios;
* ``fcos``: FCOS (boxes, anchor-free), P3–P7, one location per stride.

The authors evaluate FFNet with Cascade Mask R-CNN (their mmdetection fork); torchvision has no
Cascade R-CNN, so ``mask_rcnn`` is the default detector here, and a cascade head would plug into
the same backbone.  ``num_classes`` counts the object categories; torchvision's background label 0
is added by every detector here, so labels are ``1 … K`` whichever detector is chosen.

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
from typing import Any, ClassVar, cast

import timm
from timm.layers import LayerNorm2d
from timm.models import FeatureInfo
from torch import Tensor, nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from metamixer.core import ARCHITECTURES, network_args, register_architecture
from metamixer.core.architectures import get_architecture
from metamixer.vision.backbone import load_backbone_weights

#: the pyramid's extra coarse levels: one max-pooled level (the R-CNNs' P6) or two strided
#: convolutions on the last level (RetinaNet's and FCOS's P6, P7)
EXTRA_LEVELS = ("maxpool", "p6p7")


class TimmFPNBackbone(nn.Module):
    """A timm model's multi-scale features through a feature pyramid (torchvision's FPN with
    extra coarse levels: by default one max-pooled level, as Mask R-CNN expects: keys ``"0"`` …
    ``"3"`` and ``"pool"``).

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
        extra_levels: "maxpool" (one max-pooled level, ``"pool"``) or "p6p7" (two strided 3×3
            convolutions on the last pyramid level, ``"p6"`` and ``"p7"``).
    """

    def __init__(
        self,
        arch: str,
        arch_args: Mapping[str, Any] | None = None,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        fpn_channels: int = 256,
        out_norm: bool = True,
        norm_eval: bool = False,
        extra_levels: str = "maxpool",
    ) -> None:
        super().__init__()
        if extra_levels not in EXTRA_LEVELS:
            raise ValueError(
                f"extra_levels must be one of {', '.join(EXTRA_LEVELS)}, got {extra_levels!r}"
            )
        overrides = dict(arch_args or {})
        if arch in ARCHITECTURES:
            network_args(arch, None, overrides)  # unknown names fail here, listing the valid ones
        self.body = timm.create_model(
            arch, pretrained=False, features_only=True, out_indices=tuple(out_indices), **overrides
        )
        info = cast(FeatureInfo, self.body.feature_info)  # every features_only model has one
        channels = info.channels()
        self.strides = info.reduction()
        self.norms = nn.ModuleList(LayerNorm2d(c) if out_norm else nn.Identity() for c in channels)
        extra: ExtraFPNBlock = (
            LastLevelMaxPool()
            if extra_levels == "maxpool"
            else LastLevelP6P7(fpn_channels, fpn_channels)
        )
        self.fpn = FeaturePyramidNetwork(channels, fpn_channels, extra_blocks=extra)
        self.out_channels = fpn_channels
        self.norm_eval = norm_eval
        extra_count = 1 if extra_levels == "maxpool" else 2
        #: stride of every pyramid level, finest first (the backbone's, then ×2 per extra level)
        self.level_strides = [*self.strides] + [
            self.strides[-1] * 2 ** (i + 1) for i in range(extra_count)
        ]

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


class DetectionNetwork:
    """What every detector of this module shares: its adapter is ``backbone`` (a
    ``TimmFPNBackbone``), ``masks`` says whether it predicts instance masks."""

    masks: ClassVar[bool] = False
    backbone: TimmFPNBackbone


def _image_sizes(min_size: int | Sequence[int], max_size: int) -> dict[str, Any]:
    sizes = tuple(min_size) if isinstance(min_size, Sequence) else (min_size,)
    return {"min_size": sizes, "max_size": max_size}


def _rcnn_args(
    fpn_channels: int,
    num_classes: int,
    rpn_batch_size_per_image: int,
    rpn_proposals: Sequence[int],
    box_batch_size_per_image: int,
    box_head_dim: int,
    score_thresh: float,
    nms_thresh: float,
    detections_per_image: int,
) -> dict[str, Any]:
    """torchvision's (Faster / Mask) R-CNN arguments from ours (the box head and RPN)."""
    train, test = rpn_proposals
    return {
        "rpn_batch_size_per_image": rpn_batch_size_per_image,
        "rpn_pre_nms_top_n_train": train,
        "rpn_post_nms_top_n_train": train,
        "rpn_pre_nms_top_n_test": test,
        "rpn_post_nms_top_n_test": test,
        "box_batch_size_per_image": box_batch_size_per_image,
        "box_score_thresh": score_thresh,
        "box_nms_thresh": nms_thresh,
        "box_detections_per_img": detections_per_image,
        "box_head": TwoMLPHead(7 * 7 * fpn_channels, box_head_dim),
        "box_predictor": FastRCNNPredictor(box_head_dim, num_classes + 1),
    }


_ADAPTER_DOC = """
        num_classes: object categories (background not counted; labels are ``1 … K``).
        backbone: a timm model with ``features_only`` (``ffnet_2``, ``convnext_tiny``, …).
        backbone_args: overrides of the backbone's arguments (checked by name for ours).
        out_indices: the backbone stages fed to the feature pyramid.
        extra_levels: the pyramid's extra coarse levels: "maxpool" (one) or "p6p7" (two).
        fpn_channels: channels of every pyramid level.
        out_norm: a LayerNorm on each backbone stage output before the FPN.
        norm_eval: keep the backbone's BatchNorm statistics frozen while training.
        min_size: short side(s) of the resized images (several: one drawn per training image;
            evaluation uses the last).
        max_size: cap on the long side of the resized images.
        score_thresh: minimum score of a returned detection.
        nms_thresh: IoU above which non-maximum suppression removes the lower-scored box of a
            class.
        detections_per_image: detections kept per image (COCO evaluates 100)."""

_RCNN_DOC = """
        rpn_batch_size_per_image: anchors sampled per image for the RPN loss.
        rpn_proposals: region proposals kept per image (and per pyramid level before NMS) in
            training and in evaluation (torchvision: 2000, 1000).
        box_batch_size_per_image: proposals sampled per image for the box (and mask) losses.
        box_head_dim: width of the box head's two fully connected layers (torchvision: 1024)."""


class FasterRCNNDetector(DetectionNetwork, FasterRCNN):
    __doc__ = f"""torchvision's Faster R-CNN on a ``TimmFPNBackbone`` (boxes only).

    Args:{_ADAPTER_DOC}{_RCNN_DOC}
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str,
        backbone_args: Mapping[str, Any] | None,
        out_indices: Sequence[int],
        extra_levels: str,
        fpn_channels: int,
        out_norm: bool,
        norm_eval: bool,
        min_size: int | Sequence[int],
        max_size: int,
        score_thresh: float,
        nms_thresh: float,
        detections_per_image: int,
        rpn_batch_size_per_image: int,
        rpn_proposals: Sequence[int],
        box_batch_size_per_image: int,
        box_head_dim: int,
    ) -> None:
        super().__init__(
            TimmFPNBackbone(backbone, backbone_args, out_indices, fpn_channels, out_norm,
                            norm_eval, extra_levels),
            **_image_sizes(min_size, max_size),
            **_rcnn_args(fpn_channels, num_classes, rpn_batch_size_per_image, rpn_proposals,
                         box_batch_size_per_image, box_head_dim, score_thresh, nms_thresh,
                         detections_per_image),
        )  # fmt: skip


class MaskRCNNDetector(DetectionNetwork, MaskRCNN):
    __doc__ = f"""torchvision's Mask R-CNN on a ``TimmFPNBackbone`` (boxes and instance masks;
    predictions' ``masks`` are ``(N, 1, H, W)`` probabilities).

    Args:{_ADAPTER_DOC}{_RCNN_DOC}
        mask_head_dim: channels of the mask head's four convolutions (torchvision: 256).
    """

    masks = True

    def __init__(
        self,
        num_classes: int,
        backbone: str,
        backbone_args: Mapping[str, Any] | None,
        out_indices: Sequence[int],
        extra_levels: str,
        fpn_channels: int,
        out_norm: bool,
        norm_eval: bool,
        min_size: int | Sequence[int],
        max_size: int,
        score_thresh: float,
        nms_thresh: float,
        detections_per_image: int,
        rpn_batch_size_per_image: int,
        rpn_proposals: Sequence[int],
        box_batch_size_per_image: int,
        box_head_dim: int,
        mask_head_dim: int,
    ) -> None:
        super().__init__(
            TimmFPNBackbone(backbone, backbone_args, out_indices, fpn_channels, out_norm,
                            norm_eval, extra_levels),
            **_image_sizes(min_size, max_size),
            **_rcnn_args(fpn_channels, num_classes, rpn_batch_size_per_image, rpn_proposals,
                         box_batch_size_per_image, box_head_dim, score_thresh, nms_thresh,
                         detections_per_image),
            mask_head=MaskRCNNHeads(fpn_channels, [mask_head_dim] * 4, 1),
            mask_predictor=MaskRCNNPredictor(mask_head_dim, mask_head_dim, num_classes + 1),
        )  # fmt: skip


class RetinaNetDetector(DetectionNetwork, RetinaNet):
    __doc__ = f"""torchvision's RetinaNet on a ``TimmFPNBackbone`` (boxes only).

    Args:{_ADAPTER_DOC}
        anchor_scale: anchor size of a level in units of its stride (then × 2^0, 2^⅓, 2^⅔, at
            aspect ratios 0.5, 1, 2; torchvision's RetinaNet: 4, i.e. 32 … 512 px on P3–P7).
        fg_iou_thresh: IoU with a box from which an anchor is a positive.
        bg_iou_thresh: IoU below which an anchor is background.
        topk_candidates: best-scoring anchors per level kept before NMS.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str,
        backbone_args: Mapping[str, Any] | None,
        out_indices: Sequence[int],
        extra_levels: str,
        fpn_channels: int,
        out_norm: bool,
        norm_eval: bool,
        min_size: int | Sequence[int],
        max_size: int,
        score_thresh: float,
        nms_thresh: float,
        detections_per_image: int,
        anchor_scale: float,
        fg_iou_thresh: float,
        bg_iou_thresh: float,
        topk_candidates: int,
    ) -> None:
        adapter = TimmFPNBackbone(backbone, backbone_args, out_indices, fpn_channels, out_norm,
                                  norm_eval, extra_levels)  # fmt: skip
        sizes = tuple(
            tuple(int(anchor_scale * s * 2 ** (octave / 3)) for octave in range(3))
            for s in adapter.level_strides
        )
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
        super().__init__(
            adapter, num_classes + 1, **_image_sizes(min_size, max_size),
            anchor_generator=anchors,
            head=RetinaNetHead(fpn_channels, anchors.num_anchors_per_location()[0],
                               num_classes + 1),
            score_thresh=score_thresh, nms_thresh=nms_thresh,
            detections_per_img=detections_per_image, fg_iou_thresh=fg_iou_thresh,
            bg_iou_thresh=bg_iou_thresh, topk_candidates=topk_candidates,
        )  # fmt: skip


class FCOSDetector(DetectionNetwork, FCOS):
    __doc__ = f"""torchvision's FCOS on a ``TimmFPNBackbone`` (boxes only, anchor-free: one
    location per pyramid cell, its level chosen by the box size in units of the level's stride).

    Args:{_ADAPTER_DOC}
        center_sampling_radius: positives lie within this many strides of a box centre.
        topk_candidates: best-scoring locations per level kept before NMS.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str,
        backbone_args: Mapping[str, Any] | None,
        out_indices: Sequence[int],
        extra_levels: str,
        fpn_channels: int,
        out_norm: bool,
        norm_eval: bool,
        min_size: int | Sequence[int],
        max_size: int,
        score_thresh: float,
        nms_thresh: float,
        detections_per_image: int,
        center_sampling_radius: float,
        topk_candidates: int,
    ) -> None:
        if fpn_channels % 32:
            raise ValueError(
                f"fcos needs fpn_channels divisible by 32 (its head's GroupNorm has 32 groups), "
                f"got {fpn_channels}"
            )
        adapter = TimmFPNBackbone(backbone, backbone_args, out_indices, fpn_channels, out_norm,
                                  norm_eval, extra_levels)  # fmt: skip
        anchors = AnchorGenerator(
            tuple((s,) for s in adapter.level_strides), ((1.0,),) * len(adapter.level_strides)
        )
        super().__init__(
            adapter, num_classes + 1, **_image_sizes(min_size, max_size),
            anchor_generator=anchors, head=FCOSHead(fpn_channels, 1, num_classes + 1),
            center_sampling_radius=center_sampling_radius, score_thresh=score_thresh,
            nms_thresh=nms_thresh, detections_per_img=detections_per_image,
            topk_candidates=topk_candidates,
        )  # fmt: skip


#: the task's arguments of every detector: the categories (from the data) and the backbone (the
#: Lightning module's ``arch`` / ``arch_args``)
TASK_ARGS = ("num_classes", "backbone", "backbone_args")
#: set by the data module (``train_scales``, ``max_size``), never in ``detector_args``
IMAGE_ARGS = ("min_size", "max_size")

ADAPTER_P2_P6 = dict(
    out_indices=(0, 1, 2, 3), extra_levels="maxpool", fpn_channels=256, out_norm=True,
    norm_eval=False, min_size=(800,), max_size=1333,
)  # fmt: skip
ADAPTER_P3_P7 = dict(ADAPTER_P2_P6, out_indices=(1, 2, 3), extra_levels="p6p7")
RCNN = dict(
    rpn_batch_size_per_image=256, rpn_proposals=(2000, 1000), box_batch_size_per_image=512,
    box_head_dim=1024, score_thresh=0.05, nms_thresh=0.5, detections_per_image=100,
)  # fmt: skip

#: every argument of each detector (torchvision's values, except ``detections_per_image``: 100
#: everywhere, what COCO evaluates)
DETECTORS: dict[str, tuple[type[nn.Module], Mapping[str, Any]]] = {
    "mask_rcnn": (MaskRCNNDetector, dict(ADAPTER_P2_P6, **RCNN, mask_head_dim=256)),
    "faster_rcnn": (FasterRCNNDetector, dict(ADAPTER_P2_P6, **RCNN)),
    "retinanet": (RetinaNetDetector, dict(
        ADAPTER_P3_P7, score_thresh=0.05, nms_thresh=0.5, detections_per_image=100,
        anchor_scale=4.0, fg_iou_thresh=0.5, bg_iou_thresh=0.4, topk_candidates=1000,
    )),
    "fcos": (FCOSDetector, dict(
        ADAPTER_P3_P7, score_thresh=0.2, nms_thresh=0.6, detections_per_image=100,
        center_sampling_radius=1.5, topk_candidates=1000,
    )),
}  # fmt: skip

for _name, (_cls, _args) in DETECTORS.items():
    register_architecture(
        _name, _cls, _args, task_args=TASK_ARGS,
        test_task={"num_classes": 3, "backbone": "ffnet_test", "backbone_args": None},
    )  # fmt: skip


def build_detector(
    detector: str,
    backbone: str,
    num_classes: int,
    backbone_args: Mapping[str, Any] | None = None,
    detector_args: Mapping[str, Any] | None = None,
    *,
    init_backbone: str | None = None,
) -> nn.Module:
    """A registered detector (``mask_rcnn``, ``faster_rcnn``, ``retinanet``, ``fcos``) on
    ``TimmFPNBackbone(backbone)`` with ``num_classes`` categories; ``detector_args`` override the
    detector's spec (checked by name).  ``init_backbone``: a local classification file (authors'
    release, our export or an ``ImageClassifier`` checkpoint) for the backbone; the FPN and heads
    start from torchvision's initialisation.  Predictions come back in the input images' own
    coordinates."""
    if detector not in DETECTORS:
        known = ", ".join(DETECTORS)
        if detector in ARCHITECTURES or detector in timm.list_models():
            raise ValueError(
                f"{detector!r} is a backbone, not a detector; detectors: {known} (the backbone "
                "is the model's arch)"
            )
        raise ValueError(f"unknown detector {detector!r}; registered detectors: {known}")
    task = {"num_classes": num_classes, "backbone": backbone, "backbone_args": backbone_args}
    entry = get_architecture(detector)
    network = entry.construct(network_args(detector, task, detector_args))
    if init_backbone is not None:
        # every registered detector is a DetectionNetwork (DETECTORS)
        load_backbone_weights(cast(DetectionNetwork, network).backbone.body, init_backbone)
    return network
