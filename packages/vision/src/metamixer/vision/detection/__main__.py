"""``python -m metamixer.vision.detection {fit,validate,test,predict} --config …`` (LightningCLI)."""

from __future__ import annotations

from lightning.pytorch import LightningDataModule

from metamixer.lab.cli import MetaMixerCLI, run_cli

from . import data as _data  # noqa: F401  (its data module: selectable by short name)
from .lit import Detector

#: the categories and the resize recipe come from the data, never written twice
LINKS = (
    ("data.num_classes", "model.num_classes"),
    ("data.train_scales", "model.min_size"),
    ("data.max_size", "model.max_size"),
)


def main(args: list[str] | None = None, run: bool = True) -> MetaMixerCLI:
    return MetaMixerCLI(Detector, LightningDataModule, links=LINKS, args=args, run=run)


def entry() -> None:
    """Console script entry (also a script path for ``fabric run``)."""
    run_cli(main)


if __name__ == "__main__":
    entry()
