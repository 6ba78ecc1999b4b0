"""Lightning glue shared by the modality packages: the CLI and run-directory plots.

This module imports lightning and matplotlib (the ``train`` extra); ``import metamixer.core`` does
not import it, so the core stays torch-only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI
from torch import Tensor


class MetaMixerCLI(LightningCLI):
    """``LightningCLI`` with the project's defaults.

    * ``links``: ``(data attribute, model argument)`` pairs resolved after the data module is built,
      e.g. ``("data.num_classes", "model.num_classes")``, so a value is never written twice.
    * ``subclass_mode_data``: the data module is chosen by ``class_path`` (any subclass).
    * ``fit --test_after_fit true`` tests the best checkpoint of the run right after training.
    * the resolved config is saved as ``config.yaml`` in every run directory; seed 0 by default.
    """

    def __init__(
        self,
        model_class: type[LightningModule],
        datamodule_class: type[LightningDataModule],
        *,
        links: Sequence[tuple[str, str]] = (),
        args: list[str] | None = None,
        run: bool = True,
        default_root_dir: str = "runs",
        subclass_mode_data: bool = True,
    ) -> None:
        self.links = tuple(links)
        super().__init__(
            model_class,
            datamodule_class,
            subclass_mode_data=subclass_mode_data,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"default_root_dir": default_root_dir},
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser) -> None:
        for source, target in self.links:
            parser.link_arguments(source, target, apply_on="instantiate")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="fit only: test the best checkpoint (or the last weights) once training ends",
        )

    def before_instantiate_classes(self) -> None:
        """Give every logger of the run the same version, so CSV and TensorBoard share one folder."""
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        loggers = config.trainer.get("logger")
        if not isinstance(loggers, list):
            return
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for logger in loggers:
            init = getattr(logger, "init_args", None)
            if init is not None and "version" in init and init.version is None:
                init.version = stamp

    def after_fit(self) -> None:
        if not self.config.fit.get("test_after_fit"):
            return
        ckpt = "best" if self.trainer.checkpoint_callback is not None else None
        if ckpt == "best" and not self.trainer.checkpoint_callback.best_model_path:
            ckpt = None
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)


def save_figure(fig, path: Path) -> Path:
    """Write a PNG atomically (temp file + rename) and close the figure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    os.replace(tmp, path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def plot_confusion_matrix(matrix: Tensor, class_names: Sequence[str] | None, path: Path) -> Path:
    """Row-normalised confusion matrix (true class per row) as a PNG heat map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = matrix.to(torch.float64)
    rates = counts / counts.sum(1, keepdim=True).clamp_min(1)
    n = len(rates)
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    fig, ax = plt.subplots(figsize=(1 + 0.6 * n, 1 + 0.55 * n))
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                f"{rates[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = counts.diag().sum() / counts.sum().clamp_min(1)
    ax.set_title(f"confusion matrix (accuracy {accuracy:.4f})")
    return save_figure(fig, path)
