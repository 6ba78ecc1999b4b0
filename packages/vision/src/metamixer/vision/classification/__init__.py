"""Image classification: FFNet-1…4 (timm) trained with the FFNet recipe."""
