"""The vision tasks of ``metamixer``: ``vision`` (image classification), ``segmentation`` and
``detection`` (see ``metamixer.lab.tasks``)."""

from metamixer.lab.tasks import register_task

V = "metamixer.vision"
SCENES = f"{V}.scenes:main"
#: what the image classifier and the segmenter take from their data modules
IMAGE_LINKS = [
    ("data.num_classes", "model.num_classes"),
    ("data.in_chans", "model.in_chans"),
    ("data.classes", "model.classes"),
]

register_task(
    "vision",
    model=f"{V}.classification.lit:ImageClassifier",
    data=f"{V}.classification.data:ClassificationData",
    links=IMAGE_LINKS,
    writer=f"{V}.classification.writer:ClassificationWriter",
    handoffs=[("classes", "classes")],
    tools={"export": f"{V}.export:main", "analyze": f"{V}.analyze:main"},
    description="image classification (FFNet-1…4, timm)",
)
register_task(
    "segmentation",
    model=f"{V}.segmentation.lit:SemanticSegmenter",
    data=f"{V}.segmentation.data:SegmentationDataModule",
    links=IMAGE_LINKS,
    writer=f"{V}.segmentation.writer:PaletteWriter",
    handoffs=[("palette", "palette"), ("label_offset", "label_offset")],
    tools={"export": f"{V}.export:main", "prepare": SCENES},
    description="semantic segmentation (UperNet / FPN on FFNet, FFNet-seg)",
)
register_task(
    "detection",
    model=f"{V}.detection.lit:Detector",
    data=f"{V}.detection.data:COCODetectionDataModule",
    links=[
        ("data.num_classes", "model.num_classes"),
        ("data.train_scales", "model.min_size"),
        ("data.max_size", "model.max_size"),
        ("data.has_masks", "model.data_masks"),
    ],
    writer=f"{V}.detection.writer:COCOResultsWriter",
    handoffs=[("category_ids", "category_ids")],
    tools={"prepare": SCENES},
    description="object detection and instance segmentation (torchvision detectors on FFNet)",
)
