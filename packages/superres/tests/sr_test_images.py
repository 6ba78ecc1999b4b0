"""Synthetic test images for the super-resolution tests."""

import numpy as np


def smooth_image(h, w, seed=0, channels=3):
    """A textured but band-limited test image (random low-frequency waves), uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / 8.0
    out = np.zeros((h, w, channels))
    for c in range(channels):
        for _ in range(4):
            fy, fx, ph = rng.uniform(0.2, 1.5, 3)
            out[..., c] += np.sin(fy * y + fx * x + 6 * ph)
    out = (out - out.min()) / (out.max() - out.min() + 1e-9)
    return (out * 255).astype(np.uint8)
