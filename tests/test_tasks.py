"""The task table and the one command: every task gets Lightning's verbs, ``predict-files`` and its
tools; a modality of the user's own (a folder outside the repository, one ``register_task``) runs
through the same command; bad names are one line naming the valid ones."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from metamixer.lab.tasks import TASKS, discover, register_task

TOY = textwrap.dedent('''
    """A toy modality: 1D signals, a MetaMixer of the library, a writer of its own."""
    import lightning as L
    import torch
    from torch import nn

    from metamixer.core import DenseOps, MetaBlock, MixerContext, TOKEN_MIXERS
    from metamixer.lab.tasks import register_task


    class ToyModel(L.LightningModule):
        """Args:
            width: channels.
            length: positions (linked from the data).
        """

        def __init__(self, width: int = 4, length: int = 16) -> None:
            super().__init__()
            self.save_hyperparameters()
            mixer = TOKEN_MIXERS.build("ffnified", MixerContext(width, DenseOps(1), kernel_size=3))
            self.net = nn.Sequential(nn.Conv1d(1, width, 1), MetaBlock(width, mixer), nn.Conv1d(width, 1, 1))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            loss = (self(batch) - batch.flip(-1)).square().mean()
            self.log("train/loss", loss)
            return loss

        def test_step(self, batch, batch_idx):
            self.log("test/mse", (self(batch) - batch.flip(-1)).square().mean())

        def predict_step(self, batch, batch_idx):
            return self(batch)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)


    class ToyData(L.LightningDataModule):
        """Args:
            length: positions per signal.
            predict_path: the user's signals (unused by the toy: it predicts its own).
        """

        def __init__(self, length: int = 16, predict_path: str | None = None) -> None:
            super().__init__()
            self.length = length
            self.signals = torch.randn(8, 1, length, generator=torch.Generator().manual_seed(0))

        def train_dataloader(self):
            return torch.utils.data.DataLoader(self.signals, batch_size=4)

        test_dataloader = predict_dataloader = train_dataloader


    register_task(
        "toy", model=ToyModel, data=ToyData, links=[("data.length", "model.length")],
        writer="toy_writer:SumWriter", subclass_mode_data=False, modality="toy",
    )
''')
WRITER = textwrap.dedent("""
    from metamixer.lab.writers import PredictionFiles


    class SumWriter(PredictionFiles):
        def write(self, trainer, prediction, batch, indices):
            with open(self.folder / "sums.txt", "a") as f:
                f.write(f"{float(prediction.sum()):.4f}\\n")
""")


def metamixer(*args: str, cwd: Path, path: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(path or ""),
                                                                       os.environ.get("PYTHONPATH")]))}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "metamixer.lab", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env=env)  # fmt: skip


def test_a_toy_modality_from_outside_the_repository_runs_through_the_one_command(tmp_path):
    """Its own folder, one ``register_task`` call, ``--import``: fit with a record, test and
    predict-files through the common verbs, the run naming its task and the imported module."""
    (tmp_path / "toy_task.py").write_text(TOY)
    (tmp_path / "toy_writer.py").write_text(WRITER)
    limits = [
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        "--test_after_fit=true",
    ]
    fit = metamixer("--import", "toy_task", "toy", "fit", "--name=first", *limits, cwd=tmp_path,
                    path=tmp_path)  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    (run,) = (tmp_path / "runs/toy/first").glob("fit-*")
    record = json.loads((run / "record.json").read_text())
    assert record["task"] == "toy" and record["imports"] == ["toy_task"]
    assert record["metrics"]["test/mse"] >= 0
    assert "imports:\n- toy_task" in (run / "config.yaml").read_text()
    # predict-files: the run's saved config (with its imports) and the checkpoint
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt = ckpt if ckpt.is_file() else next((run / "checkpoints").glob("*.ckpt"))
    files = metamixer("toy", "predict-files", str(ckpt), "unused", "--import=toy_task",
                      cwd=tmp_path, path=tmp_path)  # fmt: skip
    assert files.returncode == 0, files.stderr[-3000:]
    (sums,) = (tmp_path / "runs/toy/first").glob("predict-*/predictions/sums.txt")
    assert len(sums.read_text().split()) == 2  # two batches of four signals
    listed = metamixer("--import", "toy_task", "--help", cwd=tmp_path, path=tmp_path)
    assert "toy" in listed.stdout and "predict-files" in listed.stdout


@pytest.mark.parametrize(
    "args,expected",
    [(["nosuch", "fit"], "error: unknown task 'nosuch'; tasks: detection, pointcloud, segmentation, "
                         "superres, timeseries, vision"),
     (["vision", "train"], "error: unknown verb 'train' of task 'vision'; verbs: fit, validate, test, "
                           "predict, predict-files, export, analyze")],
)  # fmt: skip
def test_an_unknown_task_or_verb_is_one_line_naming_the_valid_ones(args, expected, tmp_path):
    out = metamixer(*args, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (line,) = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(expected)
    assert list(tmp_path.iterdir()) == []


def test_every_task_lists_its_verbs_in_the_overview(tmp_path):
    out = metamixer("--help", cwd=tmp_path)
    assert out.returncode == 0
    for name in ("vision", "segmentation", "detection", "timeseries", "superres", "pointcloud"):
        assert f"  {name} " in out.stdout


def test_a_task_registered_twice_or_a_writer_importing_the_cli_is_refused(tmp_path, monkeypatch):
    discover()
    with pytest.raises(ValueError, match="task 'vision' is registered twice"):
        register_task("vision", model="x:Y", data="x:Z")
    (tmp_path / "leaky_writer.py").write_text("from metamixer.lab.cli import MetaMixerCLI\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        ValueError, match=r"leaky_writer imports metamixer\.lab\.cli; a writer must not"
    ):
        register_task("leaky", model="x:Y", data="x:Z", writer="leaky_writer:Writer")
    assert "leaky" not in TASKS
