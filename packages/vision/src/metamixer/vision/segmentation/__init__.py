"""Semantic segmentation with FFNet backbones: ``python -m metamixer.vision.segmentation``."""
