"""Every experiment config parses with its modality's CLI (types checked, no misspelled keys)."""

import importlib
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
# configs that are used together with a shared base file
BASES = {"timeseries": "base.yaml", "vision": "imagenet.yaml"}
STANDALONE = {"vision": {"fashion_mnist.yaml", "fashion_mnist_hybrid.yaml"}}


def configs():
    for modality in ("vision", "timeseries", "superres", "pointcloud"):
        for path in sorted((EXPERIMENTS / modality).glob("*.yaml")):
            if path.name != BASES.get(modality):
                yield modality, path


@pytest.mark.parametrize("modality,path", list(configs()), ids=lambda v: getattr(v, "name", v))
def test_config_parses(modality, path, capsys):
    main = importlib.import_module(f"metamixer.{modality}.__main__").main
    args = ["fit"]
    base = BASES.get(modality)
    if base and path.name not in STANDALONE.get(modality, set()):
        args += ["--config", str(EXPERIMENTS / modality / base)]
    args += ["--config", str(path), "--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    assert "model:" in capsys.readouterr().out
