"""``python -m metamixer.vision {fit,validate,test,predict} --config …`` (LightningCLI)."""

from __future__ import annotations

from lightning.pytorch import LightningDataModule

from metamixer.lab.cli import MetaMixerCLI, run_cli

from . import data as _data  # noqa: F401  (its data modules: selectable by short name, listed in --help)
from .lit import ImageClassifier

LINKS = (("data.num_classes", "model.num_classes"), ("data.in_chans", "model.in_chans"))


def main(args: list[str] | None = None, run: bool = True) -> MetaMixerCLI:
    return MetaMixerCLI(
        ImageClassifier,
        LightningDataModule,
        links=LINKS,
        args=args,
        run=run,
    )


def entry() -> None:
    """Console script ``metamixer-vision`` (also a script path for ``fabric run``)."""
    run_cli(main)


if __name__ == "__main__":
    entry()
