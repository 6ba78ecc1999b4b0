"""``python -m metamixer.superres {fit,validate,test,predict} --config …`` (LightningCLI)."""

from __future__ import annotations

from metamixer.lab.cli import MetaMixerCLI, run_cli

from .data import PairedImageDataModule
from .lit import SuperResolution


def main(args: list[str] | None = None, run: bool = True) -> MetaMixerCLI:
    return MetaMixerCLI(
        SuperResolution,
        PairedImageDataModule,
        links=(("data.scale", "model.scale"),),
        args=args,
        run=run,
        subclass_mode_data=False,
    )


def entry() -> None:
    """Console script ``metamixer-superres`` (also a script path for ``fabric run``)."""
    run_cli(main)


if __name__ == "__main__":
    entry()
