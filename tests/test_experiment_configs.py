"""Every experiment config parses with its modality's CLI (types checked, no misspelled keys)."""

import importlib
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
# configs that are used together with a shared base file
BASES = {
    "timeseries": "base.yaml",
    "vision": "imagenet.yaml",
    "vision/segmentation": "ade20k.yaml",
}
STANDALONE = {
    "vision": {"fashion_mnist.yaml", "fashion_mnist_hybrid.yaml"},
    "vision/segmentation": {"scenes_upernet.yaml", "ffnet_seg_cityscapes.yaml"},
}
FOLDERS = (
    "vision", "vision/segmentation", "vision/detection", "timeseries", "superres", "pointcloud",
)  # fmt: skip


def configs():
    for folder in FOLDERS:
        for path in sorted((EXPERIMENTS / folder).glob("*.yaml")):
            if path.name != BASES.get(folder):
                yield folder, path


@pytest.mark.parametrize("folder,path", list(configs()), ids=lambda v: getattr(v, "name", v))
def test_config_parses(folder, path, capsys):
    """A config of ``experiments/<folder>`` runs with ``python -m metamixer.<folder as module>``."""
    main = importlib.import_module(f"metamixer.{folder.replace('/', '.')}.__main__").main
    args = ["fit"]
    base = BASES.get(folder)
    if base and path.name not in STANDALONE.get(folder, set()):
        args += ["--config", str(EXPERIMENTS / folder / base)]
    args += ["--config", str(path), "--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    assert "model:" in capsys.readouterr().out
