"""Detection and instance segmentation on COCO-format data with FFNet (or any timm) backbones.

``python -m metamixer.vision.detection {fit,validate,test,predict} --config …``; Mask R-CNN + FPN
from torchvision (``models``), COCO JSON through pycocotools (``data``), COCO box / mask AP from
torchmetrics (``lit``), COCO results files from ``predict``.
"""

from metamixer.vision.detection.data import COCODetectionDataModule
from metamixer.vision.detection.lit import Detector
from metamixer.vision.detection.models import TimmFPNBackbone, build_mask_rcnn

__all__ = ["COCODetectionDataModule", "Detector", "TimmFPNBackbone", "build_mask_rcnn"]
