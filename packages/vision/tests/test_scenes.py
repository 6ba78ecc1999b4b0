"""The composed-scenes generator: both layouts describe the same pixels, and the loaders read them."""

import json

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from metamixer.vision.scenes import write_scenes
from metamixer.vision.segmentation.data import IGNORE, ADE20KDataModule


def test_ade_labels_and_coco_masks_agree(fashion_root, tmp_path):
    out = tmp_path / "scenes"
    assert write_scenes(out, train=4, val=3, size=96, fashion_mnist=str(fashion_root)) == {
        "train": 4,
        "val": 3,
    }
    coco = json.loads((out / "coco/annotations/instances_val2017.json").read_text())
    assert len(coco["images"]) == 3 and len(coco["categories"]) == 10 and coco["annotations"]
    for image in coco["images"]:
        stem = f"ADE_val_{image['id']:08d}"
        label = np.asarray(
            Image.open(out / f"ADEChallengeData2016/annotations/validation/{stem}.png")
        )
        from_coco = np.ones_like(label)  # background
        for ann in (a for a in coco["annotations"] if a["image_id"] == image["id"]):
            mask = mask_utils.decode(ann["segmentation"]).astype(bool)
            assert not (from_coco[mask] > 1).any()  # instances do not overlap
            from_coco[mask] = ann["category_id"] + 1
            x, y, w, h = ann["bbox"]
            ys, xs = np.nonzero(mask)
            assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())
            assert ann["area"] == mask.sum()
        labelled = label != 0  # 0 = the ignored rims of items
        np.testing.assert_array_equal(from_coco[labelled], label[labelled])

    dm = ADE20KDataModule(str(out / "ADEChallengeData2016"), crop_size=64, scale=96, num_workers=0)
    assert dm.num_classes == 11 and dm.classes[0] == "background" and dm.classes[1] == "T-shirt/top"
    dm.setup("fit")
    sample = dm.splits["val"][0]
    assert sample["image"].shape == (3, 96, 96)
    assert set(sample["label"].unique().tolist()) <= set(range(11)) | {IGNORE}
