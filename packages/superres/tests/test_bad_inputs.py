"""Bad-input catalogue (super-resolution): each case raises a specific exception naming the problem."""

import cv2
import numpy as np
import pytest
import torch
from sr_test_images import smooth_image

from metamixer.superres import FFNetSR, load_sr_weights
from metamixer.superres.data import PairedImages, ensure_lr, read_image
from metamixer.superres.inference import upscale
from metamixer.superres.tools import load_model, predict_folder


def float_tiff(t, root):
    path = t / "f.tiff"
    cv2.imwrite(str(path), np.zeros((8, 8, 3), np.float32))
    return read_image(path)


def lr_of_wrong_size(t, root):
    ensure_lr(root, 2)
    cv2.imwrite(str(root / "LR_bicubic" / "X2" / "img0x2.png"), smooth_image(10, 10))
    return PairedImages(root, 2)


def small_hr_for_crop(t, root):
    ensure_lr(root, 2)
    return PairedImages(root, 2, gt_size=96)


def plain_weights(t, root):
    path = t / "w.pth"
    torch.save({"params": FFNetSR(dim=8, depth=1).state_dict()}, path)
    return load_model(str(path))


def wrong_depth(t, root):
    path = t / "w.pth"
    torch.save({"params_ema": FFNetSR(dim=8, depth=2).state_dict()}, path)
    return load_sr_weights(FFNetSR(dim=8, depth=1), path)


def empty(folder):
    (folder / "empty").mkdir()
    return folder / "empty"


CASES = {
    "corrupt image": (
        lambda t, r: (
            (r / "HR" / "img1.png").write_bytes(b"garbage") and read_image(r / "HR" / "img1.png")
        ),
        ValueError,
        "img1.png",
    ),
    "float image file": (float_tiff, ValueError, "8- or 16-bit"),
    "missing HR folder": (lambda t, r: PairedImages(t, 2), FileNotFoundError, "HR"),
    "empty HR folder": (
        lambda t, r: (t / "HR").mkdir() or PairedImages(t, 2),
        ValueError,
        "holds no images",
    ),
    "LR image of the wrong size": (lr_of_wrong_size, ValueError, "img0x2.png"),
    "gt_size not a multiple of the scale": (
        lambda t, r: ensure_lr(r, 2) or PairedImages(r, 2, gt_size=33),
        ValueError,
        "multiple of the scale",
    ),
    "HR smaller than the crop": (small_hr_for_crop, ValueError, "smaller than gt_size"),
    "grey tensor into the model": (
        lambda t, r: FFNetSR(dim=8, depth=1)(torch.zeros(1, 1, 8, 8)),
        ValueError,
        "RGB",
    ),
    "unknown norm": (lambda t, r: FFNetSR(norm="GN"), ValueError, "norm must be one of"),
    "tile too small": (
        lambda t, r: upscale(FFNetSR(dim=8, depth=1), torch.zeros(1, 3, 20, 20), 2, tile=4),
        ValueError,
        "tile must be",
    ),
    "plain weights without --arch": (plain_weights, ValueError, "--arch"),
    "checkpoint of another depth": (wrong_depth, ValueError, "depth 2"),
    "missing checkpoint": (
        lambda t, r: load_model(str(t / "none.pth")),
        FileNotFoundError,
        "no checkpoint",
    ),
    "folder without images to predict": (
        lambda t, r: predict_folder(FFNetSR(dim=8, depth=1), empty(t), t / "out", 2, None),
        ValueError,
        "holds no files of type .png",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, tmp_path, hr_folder):
    fn, error, match = CASES[case]
    with pytest.raises(error, match=match):
        fn(tmp_path, hr_folder)
