"""Detection on COCO-format data: the reader, the backbone adapter, the CLI, COCO results files."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from metamixer.vision.detection.__main__ import main
from metamixer.vision.detection.data import COCODetectionDataModule
from metamixer.vision.detection.lit import Detector, step_with_warmup
from metamixer.vision.detection.models import TimmFPNBackbone, build_detector

#: category ids with a gap (as COCO's) → labels 1, 2, 3
CATEGORIES = [{"id": 3, "name": "square"}, {"id": 7, "name": "disc"}, {"id": 9, "name": "bar"}]


def shape_mask(kind: str, h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, bw, bh = box
    mask = np.zeros((h, w), np.uint8)
    if kind == "disc":
        yy, xx = np.mgrid[:h, :w]
        cy, cx = y + bh / 2 - 0.5, x + bw / 2 - 0.5
        mask[((yy - cy) / (bh / 2)) ** 2 + ((xx - cx) / (bw / 2)) ** 2 <= 1] = 1
    else:
        mask[y : y + bh, x : x + bw] = 1
    return mask


def write_split(root: Path, split: str, n: int, seed: int, extra_anns=()) -> dict:
    """``n`` images of 64–128 px with 1–3 shapes of known class each, masks as RLE."""
    rng = np.random.default_rng(seed)
    folder = root / f"{split}2017"
    folder.mkdir(parents=True)
    images, anns = [], []
    for i in range(n):
        h, w = (int(v) for v in rng.integers(64, 129, 2))
        pixels = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            cat = CATEGORIES[int(rng.integers(0, 3))]
            bw, bh = int(rng.integers(12, w // 2)), int(rng.integers(12, h // 2))
            if cat["name"] == "bar":
                bh = max(6, bh // 3)
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            mask = shape_mask(cat["name"], h, w, (x, y, bw, bh))
            pixels[mask > 0] = [(255, 60, 60), (60, 255, 60), (60, 60, 255)][CATEGORIES.index(cat)]
            rle = mask_utils.encode(np.asfortranarray(mask))
            anns.append({
                "id": len(anns) + 1, "image_id": 100 + i, "category_id": cat["id"],
                "bbox": [x, y, bw, bh], "area": float(mask.sum()), "iscrowd": 0,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
            })  # fmt: skip
        name = f"{split}_{i:03d}.jpg"
        Image.fromarray(pixels).save(folder / name, quality=95)
        images.append({"id": 100 + i, "file_name": name, "height": h, "width": w})
    for ann in extra_anns:
        anns.append({"id": len(anns) + 1, **ann})
    data = {"images": images, "annotations": anns, "categories": CATEGORIES}
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(data))
    return data


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    write_split(root, "train", 8, 0)
    write_split(root, "val", 4, 1)
    return root


def datamodule(root, **kwargs):
    args = dict(batch_size=2, num_workers=0, train_scales=(64,), max_size=128, hflip=0.0)
    return COCODetectionDataModule(str(root), **{**args, **kwargs})


def test_datamodule_reads_classes_labels_boxes_and_masks(coco_root):
    dm = datamodule(coco_root)
    assert dm.classes == ["square", "disc", "bar"] and dm.num_classes == 3
    assert dm.category_ids == [3, 7, 9]
    dm.setup("fit")
    coco = COCO(str(coco_root / "annotations/instances_train2017.json"))
    image, target = dm.train_set[0]
    info = coco.imgs[int(target["image_id"])]
    assert (
        image.shape == (3, info["height"], info["width"]) and 0 <= image.min() <= image.max() <= 1
    )
    anns = coco.imgToAnns[info["id"]]
    labels = {3: 1, 7: 2, 9: 3}
    assert target["labels"].tolist() == [labels[a["category_id"]] for a in anns]
    x, y, w, h = anns[0]["bbox"]
    assert target["boxes"][0].tolist() == [x, y, x + w, y + h]  # xywh -> xyxy
    assert target["masks"].dtype == torch.uint8
    for mask, ann in zip(target["masks"], anns, strict=True):
        assert torch.equal(mask, torch.from_numpy(coco.annToMask(ann)))
        assert mask.sum() == ann["area"]


def test_horizontal_flip_moves_boxes_with_masks(coco_root):
    dm = datamodule(coco_root, hflip=1.0)
    dm.setup("fit")
    _, target = dm.train_set[0]
    for box, mask in zip(target["boxes"], target["masks"], strict=True):
        cols = mask.any(0).nonzero()[:, 0]
        assert box[0] == cols.min() and box[2] == cols.max() + 1


def test_degenerate_and_crowd_annotations_are_skipped_and_named(tmp_path):
    rle = {
        "size": [64, 64],
        "counts": mask_utils.encode(np.ones((64, 64), np.uint8, "F"))["counts"],
    }
    segm = {"size": rle["size"], "counts": rle["counts"].decode()}
    bad = [
        {"image_id": 100, "category_id": 3, "bbox": [5, 5, 0, 10], "area": 0.0, "iscrowd": 0,
         "segmentation": segm},
        {"image_id": 100, "category_id": 3, "bbox": [5, 5, 10, 0.5], "area": 0.0, "iscrowd": 0,
         "segmentation": segm},
        {"image_id": 101, "category_id": 7, "bbox": [0, 0, 20, 20], "area": 400.0, "iscrowd": 1,
         "segmentation": segm},
    ]  # fmt: skip
    data = write_split(tmp_path, "train", 4, 0, bad)
    write_split(tmp_path, "val", 2, 1)
    # an image with nothing but a crowd annotation: skipped for training
    data["images"].append({**data["images"][0], "id": 999})
    data["annotations"].append({**bad[2], "id": 999, "image_id": 999})
    (tmp_path / "annotations/instances_train2017.json").write_text(json.dumps(data))
    dm = datamodule(tmp_path)
    with pytest.warns(UserWarning) as warned:  # shown by the CLI, unlike a log line
        dm.setup("fit")
    skipped = dm.train_set.skipped
    degenerate = [a["id"] for a in data["annotations"] if a["bbox"][2] < 1 or a["bbox"][3] < 1]
    assert skipped["degenerate boxes"] == degenerate and len(skipped["crowd annotations"]) == 2
    assert skipped["images without annotations"] == [999] and len(dm.train_set) == 4
    (message,) = [str(w.message) for w in warned if "skipped" in str(w.message)]
    assert message.startswith(f"{tmp_path / 'annotations/instances_train2017.json'}: 4 images kept")
    assert f"2 degenerate boxes (annotation ids {degenerate[0]}, {degenerate[1]})" in message
    assert "1 images without annotations (image id 999)" in message
    for i in range(len(dm.train_set)):
        boxes = dm.train_set[i][1]["boxes"]
        assert (boxes[:, 2:] > boxes[:, :2]).all()


def test_missing_image_files_are_named_in_one_error(tmp_path):
    write_split(tmp_path, "train", 6, 0)
    write_split(tmp_path, "val", 2, 1)
    for i in (1, 4):
        (tmp_path / f"train2017/train_{i:03d}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"2 of 6 images .* train_001.jpg, train_004.jpg"):
        datamodule(tmp_path).setup("fit")


def test_backbone_adapter_takes_a_convnext_peer():
    backbone = TimmFPNBackbone(
        "convnext_tiny", {"depths": (1, 1, 1, 1), "dims": (8, 16, 32, 64)}, fpn_channels=16
    )
    features = backbone(torch.randn(1, 3, 64, 96))
    assert list(features) == ["0", "1", "2", "3", "pool"] and backbone.out_channels == 16
    assert [tuple(f.shape[-2:]) for f in features.values()] == [
        (16, 24), (8, 12), (4, 6), (2, 3), (1, 2),
    ]  # fmt: skip


@pytest.mark.parametrize("norm_eval", [False, True])
def test_backbone_batchnorm_trains_unless_norm_eval(norm_eval):
    backbone = TimmFPNBackbone("ffnet_test", fpn_channels=16, norm_eval=norm_eval).train()
    bns = [m for m in backbone.body.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(bn.training != norm_eval for bn in bns)
    assert all(p.requires_grad for p in backbone.parameters())  # nothing frozen
    assert backbone.fpn.training


def test_unknown_ffnet_argument_is_named():
    with pytest.raises(ValueError, match="has no argument 'mlp_ratoi'"):
        TimmFPNBackbone("ffnet_test", {"mlp_ratoi": 2})


def test_backbone_starts_from_a_classification_checkpoint(tmp_path):
    import timm

    classifier = timm.create_model("ffnet_test", num_classes=5)
    torch.save(classifier.state_dict(), tmp_path / "cls.pth")
    model = build_detector(
        "mask_rcnn", "ffnet_test", 3, detector_args={"fpn_channels": 16},
        init_backbone=str(tmp_path / "cls.pth"),
    )  # fmt: skip
    got = model.backbone.body.state_dict()["model.stages.2.blocks.1.token.mixer.query.conv.weight"]
    assert torch.equal(
        got, classifier.state_dict()["stages.2.blocks.1.token.mixer.query.conv.weight"]
    )


def test_schedule_warms_up_then_steps_down():
    f = dict(steps_per_epoch=10, warmup=5, warmup_ratio=0.001, milestones=(8, 11), gamma=0.1)
    assert step_with_warmup(0, **f) == pytest.approx(0.001)
    assert step_with_warmup(5, **f) == 1.0 and step_with_warmup(79, **f) == 1.0
    assert step_with_warmup(80, **f) == pytest.approx(0.1)
    assert step_with_warmup(115, **f) == pytest.approx(0.01)


def test_non_finite_loss_names_the_step(coco_root):
    dm = datamodule(coco_root)
    dm.setup("fit")
    model = Detector(
        "ffnet_test", 3, detector_args={"fpn_channels": 16, "box_head_dim": 32, "mask_head_dim": 16}
    )
    batch = next(iter(dm.train_dataloader()))
    batch["images"][0][0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="at step 0"):
        model.training_step(batch, 0)


SMALL_MODEL = [
    "--model.arch=ffnet_test",
    '--model.detector_args={"fpn_channels": 16, "box_head_dim": 32, "mask_head_dim": 16, '
    '"box_batch_size_per_image": 32, "rpn_batch_size_per_image": 32}',
    "--model.warmup_steps=1",
]


def coco_data_args(root, max_size):
    return [
        "--data=COCODetectionDataModule",
        f"--data.root={root}",
        "--data.batch_size=2",
        "--data.num_workers=0",
        "--data.train_scales=[64]",
        f"--data.max_size={max_size}",
    ]


def cpu_trainer_args(out):
    return [
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.log_every_n_steps=1",
        f"--trainer.default_root_dir={out}",
    ]


def cli_args(root, out, subcommand="fit", *extra):
    return [
        subcommand,
        *coco_data_args(root, max_size=128),
        *SMALL_MODEL,
        *cpu_trainer_args(out),
        *extra,
    ]


def test_cli_fit_test_and_predict_write_a_complete_run(coco_root, tmp_path):
    out = tmp_path / "runs"
    fit = main(
        cli_args(coco_root, out, "fit", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
                 "--trainer.limit_val_batches=1", "--test_after_fit=true")
    )  # fmt: skip
    run = Path(fit.trainer.log_dir)
    assert run.parent == out / "vision" / "default" and run.name.startswith("fit-")
    assert fit.model.hparams.num_classes == 3 and fit.model.hparams.min_size == (64,)
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("test/bbox_mAP", "test/bbox_mAP_50", "test/segm_mAP", "test/segm_mAP_50"):
        assert np.isfinite(metrics[key]), key
    assert (run / "record.json").is_file() and (run / "config.yaml").is_file()
    losses = (run / "metrics.csv").read_text()
    assert "train/loss_mask" in losses and "val/bbox_mAP" in losses

    ckpt = run / "checkpoints" / "last.ckpt"
    if not ckpt.exists():
        ckpt = next((run / "checkpoints").glob("*.ckpt"))
    pred = main(
        cli_args(coco_root, out, "predict", f"--ckpt_path={ckpt}",
                 "--model.detector_args.score_thresh=0.0", "--trainer.limit_predict_batches=1")
    )  # fmt: skip
    results_file = Path(pred.trainer.log_dir) / "predictions" / "results.json"
    results = json.loads(results_file.read_text())
    assert results, "an untrained model with score threshold 0 still returns detections"
    assert {r["category_id"] for r in results} <= {3, 7, 9}
    gt = COCO(str(coco_root / "annotations/instances_val2017.json"))
    loaded = gt.loadRes(str(results_file))
    assert len(loaded.anns) == len(results) and set(loaded.getImgIds()) <= set(gt.getImgIds())
    assert all("counts" in r["segmentation"] for r in results)


def test_predict_command_on_own_images(coco_root, tmp_path):
    from metamixer.vision.detection.predict import main as predict_main

    out = tmp_path / "runs"
    fit = main(
        cli_args(coco_root, out, "fit", "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
                 "--trainer.limit_val_batches=0")
    )  # fmt: skip
    ckpt = next((Path(fit.trainer.log_dir) / "checkpoints").glob("*.ckpt"))
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("b.png", "a.jpg"):
        Image.fromarray(np.full((70, 90, 3), 128, np.uint8)).save(photos / name)
    (photos / "broken.png").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="broken.png"):
        predict_main([str(ckpt), str(photos), "--model.detector_args.score_thresh=0.0"])
    folder = sorted((out / "vision" / "default").glob("predict-*"))[-1] / "predictions"
    results = json.loads((folder / "results.json").read_text())
    assert {(r["image_id"], r["file_name"]) for r in results} <= {(1, "a.jpg"), (2, "b.png")}
    assert (folder / "unreadable.txt").read_text().strip() == "broken.png"


# --- box-only data and the four detectors --------------------------------------------------------

SCENES = Path(__file__).resolve().parents[3] / "data" / "vision" / "scenes" / "coco"
#: small instances of every detector (FCOS's head has GroupNorm(32): 32 pyramid channels)
SMALL = {
    "mask_rcnn": {"fpn_channels": 16, "box_head_dim": 32, "mask_head_dim": 16,
                  "box_batch_size_per_image": 32, "rpn_batch_size_per_image": 32},
    "faster_rcnn": {"fpn_channels": 16, "box_head_dim": 32, "box_batch_size_per_image": 32,
                    "rpn_batch_size_per_image": 32},
    "retinanet": {"fpn_channels": 16, "topk_candidates": 100},
    "fcos": {"fpn_channels": 32, "topk_candidates": 100},
}  # fmt: skip
BOX_ONLY = ["faster_rcnn", "retinanet", "fcos"]


def box_only_split(source: Path, root: Path, split: str, n: int) -> dict:
    """The first ``n`` images of a COCO split with their annotations, ``segmentation`` dropped."""
    data = json.loads((source / f"annotations/instances_{split}2017.json").read_text())
    images = sorted(data["images"], key=lambda i: i["id"])[:n]
    ids = {i["id"] for i in images}
    anns = [
        {k: v for k, v in a.items() if k != "segmentation"}
        for a in data["annotations"]
        if a["image_id"] in ids
    ]
    (root / f"{split}2017").mkdir(parents=True)
    for info in images:
        (root / f"{split}2017" / info["file_name"]).symlink_to(
            source / f"{split}2017" / info["file_name"]
        )
    out = {"images": images, "annotations": anns, "categories": data["categories"]}
    (root / "annotations").mkdir(exist_ok=True)
    (root / f"annotations/instances_{split}2017.json").write_text(json.dumps(out))
    return out


@pytest.fixture(scope="module")
def box_only_root(tmp_path_factory, coco_root):
    """A box-only COCO set: the real scenes set (``scripts/fetch-data scenes``) when it is here,
    else the synthetic one, cut to a few images and stripped of every ``segmentation``."""
    source = SCENES if (SCENES / "annotations/instances_val2017.json").is_file() else coco_root
    root = tmp_path_factory.mktemp("box_only")
    box_only_split(source, root, "train", 6)
    box_only_split(source, root, "val", 4)
    return root


def box_cli(root, out, subcommand, detector, *extra):
    return [
        subcommand,
        *coco_data_args(root, max_size=64),
        "--model.arch=ffnet_test",
        f"--model.detector={detector}",
        f"--model.detector_args={json.dumps(SMALL[detector])}",
        "--model.warmup_steps=1",
        *cpu_trainer_args(out),
        *extra,
    ]


@pytest.mark.parametrize("name", list(SMALL))
def test_every_detector_is_a_registered_architecture_that_trains_and_detects(name):
    from metamixer.core import ARCHITECTURES

    entry = ARCHITECTURES[name]
    assert entry.task_args == ("num_classes", "backbone", "backbone_args")
    for knob in ("score_thresh", "nms_thresh", "detections_per_image", "fpn_channels"):
        assert knob in entry.args  # one name for the same knob in every detector
    torch.manual_seed(0)
    model = build_detector(name, "ffnet_test", 3, detector_args={**SMALL[name], "min_size": 64})
    images = [torch.rand(3, 70, 90), torch.rand(3, 64, 64)]
    targets = [
        {"boxes": torch.tensor([[5.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([2])}
        for _ in images
    ]
    if model.masks:
        for t, image in zip(targets, images, strict=True):
            t["masks"] = torch.zeros(1, *image.shape[1:], dtype=torch.uint8)
            t["masks"][0, 6:50, 5:40] = 1
    losses = model.train()(images, targets)
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.backbone.body.parameters() if p.requires_grad)
    with torch.no_grad():
        detections = model.eval()(images)
    expected = {"boxes", "labels", "scores"} | ({"masks"} if name == "mask_rcnn" else set())
    assert all(set(d) == expected for d in detections)


def test_an_unknown_or_backbone_detector_name_lists_the_detectors():
    with pytest.raises(ValueError, match="registered detectors: mask_rcnn, faster_rcnn, retinanet"):
        Detector("ffnet_test", 3, detector="yolo")
    with pytest.raises(ValueError, match="'ffnet_2' is a backbone, not a detector"):
        Detector("ffnet_test", 3, detector="ffnet_2")
    with pytest.raises(ValueError, match="faster_rcnn has no argument 'mask_head_dim'; valid: "):
        Detector("ffnet_test", 3, detector="faster_rcnn", detector_args={"mask_head_dim": 16})
    with pytest.raises(ValueError, match=r"detector_args\.min_size is set by the data"):
        Detector("ffnet_test", 3, detector="fcos", detector_args={"min_size": 512})


def test_box_only_data_has_no_masks_and_keeps_every_box(box_only_root):
    dm = datamodule(box_only_root)
    assert dm.has_masks is False
    dm.setup("fit")
    _, target = dm.train_set[0]
    assert "masks" not in target and len(target["boxes"]) and (target["area"] > 0).all()
    assert not dm.train_set.skipped.get("annotations without a mask")


def test_no_usable_annotation_names_what_is_missing(box_only_root):
    with pytest.raises(ValueError) as err:
        datamodule(box_only_root, with_masks=True).setup("fit")
    message = str(err.value)
    assert message.startswith(f"{box_only_root / 'annotations/instances_train2017.json'}: no image")
    assert "annotations without a mask (annotation ids 1, 2" in message
    assert "box-only detector: --model.detector faster_rcnn, retinanet or fcos" in message


def test_mask_rcnn_refuses_box_only_data_in_one_line(box_only_root, tmp_path):
    with pytest.raises(ValueError) as err:
        main(box_cli(box_only_root, tmp_path / "runs", "fit", "mask_rcnn"))
    message = str(err.value)
    assert "\n" not in message and message.startswith("mask_rcnn predicts instance masks")
    assert "choose a box-only detector: --model.detector one of faster_rcnn, retinanet, fcos" in (
        message
    )


def fit_box_only(root, out, detector):
    fit = main(
        box_cli(root, out, "fit", detector, "--trainer.max_epochs=1",
                "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
                "--test_after_fit=true")
    )  # fmt: skip
    run = Path(fit.trainer.log_dir)
    assert fit.model.hparams.detector == detector and fit.model.hparams.data_masks is False
    record = json.loads((run / "record.json").read_text())
    for key in ("test/bbox_mAP", "test/bbox_mAP_50"):
        assert np.isfinite(record["metrics"][key]), key
    assert not [k for k in record["metrics"] if "segm" in k]  # no mask AP without masks
    return run


def test_box_only_coco_trains_tests_and_predicts_with_its_image_ids(box_only_root, tmp_path):
    out = tmp_path / "runs"
    run = fit_box_only(box_only_root, out, "faster_rcnn")
    ckpt = next((run / "checkpoints").glob("*.ckpt"))
    pred = main(
        box_cli(box_only_root, out, "predict", "faster_rcnn", f"--ckpt_path={ckpt}",
                f"--data.predict_path={box_only_root / 'val2017'}",
                "--data.predict_ann=annotations/instances_val2017.json",
                "--model.detector_args.score_thresh=0.0")
    )  # fmt: skip
    results_file = Path(pred.trainer.log_dir) / "predictions" / "results.json"
    results = json.loads(results_file.read_text())
    gt = COCO(str(box_only_root / "annotations/instances_val2017.json"))
    by_name = {info["file_name"]: i for i, info in gt.imgs.items()}
    assert results and all(by_name[r["file_name"]] == r["image_id"] for r in results)
    assert {r["image_id"] for r in results} == set(gt.getImgIds())  # every image, its own id
    assert not any("segmentation" in r for r in results)
    from pycocotools.cocoeval import COCOeval

    evaluation = COCOeval(gt, gt.loadRes(str(results_file)), "bbox")  # as written, no remapping
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert np.isfinite(evaluation.stats).all()


@pytest.mark.parametrize("detector", ["retinanet", "fcos"])
def test_box_only_coco_trains_and_tests_the_one_stage_detectors(detector, box_only_root, tmp_path):
    fit_box_only(box_only_root, tmp_path / "runs", detector)


def test_predict_ann_must_list_every_image(tmp_path):
    from metamixer.vision.detection.data import image_ids_by_name

    coco = COCO()
    coco.dataset = {
        "images": [{"id": 7, "file_name": "val/a.jpg"}, {"id": 9, "file_name": "b.jpg"}],
        "annotations": [], "categories": [],
    }  # fmt: skip
    coco.createIndex()
    assert image_ids_by_name(coco, ["a.jpg", "b.jpg"], "ann.json") == {"a.jpg": 7, "b.jpg": 9}
    with pytest.raises(ValueError, match=r"1 of 2 images to predict are not listed in ann.json"):
        image_ids_by_name(coco, ["a.jpg", "c.jpg"], "ann.json")
