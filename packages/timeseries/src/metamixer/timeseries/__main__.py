"""``python -m metamixer.timeseries {fit,validate,test,predict} --config …`` (LightningCLI)."""

from __future__ import annotations

from metamixer.lab.cli import MetaMixerCLI, run_cli

from .data import TSLibDataModule
from .lit import Forecaster

LINKS = (
    ("data.num_vars", "model.num_vars"),
    ("data.seq_len", "model.seq_len"),
    ("data.pred_len", "model.horizon"),
)


def main(args: list[str] | None = None, run: bool = True) -> MetaMixerCLI:
    return MetaMixerCLI(
        Forecaster,
        TSLibDataModule,
        links=LINKS,
        args=args,
        run=run,
        subclass_mode_data=False,
    )


def entry() -> None:
    """Console script ``metamixer-timeseries`` (also a script path for ``fabric run``)."""
    run_cli(main)


if __name__ == "__main__":
    entry()
