"""The point-cloud segmentation task of ``metamixer`` (see ``metamixer.lab.tasks``)."""

from metamixer.lab.tasks import register_task

P = "metamixer.pointcloud"

register_task(
    "pointcloud",
    model=f"{P}.lit:Segmenter",
    data=f"{P}.data:PointCloudData",
    links=[
        ("data.num_classes", "model.num_classes"),
        ("data.in_channels", "model.in_channels"),
        ("data.classes", "model.classes"),
        ("data.normal_channels", "model.normal_channels"),
    ],
    writer=f"{P}.writer:PointLabelWriter",
    handoffs=[("predict_path", "predict_path"), ("class_map", "class_map")],
    tools={"prepare-scannet": f"{P}.scannet:main", "prepare-s3dis": f"{P}.s3dis:main"},
    description="point-cloud semantic segmentation (sparse 3D FFNet, spconv)",
)
