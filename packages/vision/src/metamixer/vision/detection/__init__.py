"""Detection and instance segmentation on COCO-format data with FFNet (or any timm) backbones.

``python -m metamixer.vision.detection {fit,validate,test,predict} --config …``; Mask R-CNN,
Faster R-CNN, RetinaNet or FCOS + FPN from torchvision (``models``, ``--model.detector``), COCO
JSON through pycocotools (``data``), COCO box / mask AP from torchmetrics (``lit``), COCO results
files from ``predict``.
"""

from metamixer.vision.detection.data import COCODetectionDataModule
from metamixer.vision.detection.lit import Detector
from metamixer.vision.detection.models import DETECTORS, TimmFPNBackbone, build_detector

__all__ = ["DETECTORS", "COCODetectionDataModule", "Detector", "TimmFPNBackbone", "build_detector"]
