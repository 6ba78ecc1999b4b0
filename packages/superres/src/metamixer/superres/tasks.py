"""The super-resolution task of ``metamixer`` (see ``metamixer.lab.tasks``)."""

from metamixer.lab.tasks import register_task

S = "metamixer.superres"

register_task(
    "superres",
    model=f"{S}.lit:SuperResolution",
    data=f"{S}.data:PairedImageDataModule",
    links=[
        ("data.scale", "model.scale"),
        ("data.val_names", "model.val_names"),
        ("data.test_names", "model.test_names"),
    ],
    writer=f"{S}.writer:SuperResolutionWriter",
    handoffs=[("scale", "scale")],
    subclass_mode_data=False,
    tools={
        "prepare": f"{S}.prepare:main",
        "evaluate": f"{S}.tools:evaluate_main",
        "upscale": f"{S}.tools:upscale_main",
        "export": f"{S}.tools:export_main",
    },
    description="image super-resolution (FFNet-SR, basicsr)",
)
