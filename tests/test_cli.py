"""Every entry point has --help; misspelled config keys and bad values fail before any work."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metamixer.lab.results import load_records

MODALITIES = ("vision", "timeseries", "superres", "pointcloud")
#: every LightningCLI entry point: one per modality and the two dense-prediction tasks of vision
CLIS = (*MODALITIES, "vision.segmentation", "vision.detection")
TOOLS = [
    "metamixer.vision.export", "metamixer.vision.analyze", "metamixer.timeseries.prepare",
    "metamixer.superres.prepare", "metamixer.superres.tools", "metamixer.pointcloud.scannet",
    "metamixer.timeseries.analyze",
    "metamixer.lab.sweep", "metamixer.lab.results", "metamixer.pointcloud.s3dis",
    "metamixer.vision.scenes",
]  # fmt: skip


@pytest.mark.parametrize("module", [f"metamixer.{m}" for m in CLIS] + TOOLS)
def test_help(module):
    args = [sys.executable, "-m", module]
    args += ["fit", "--help"] if module.removeprefix("metamixer.") in CLIS else ["--help"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage" in out.stdout.lower()


BAD = {
    "misspelled model key": ("--model.lerning_rate=0.1", "lerning_rate"),
    "misspelled data key": ("--data.batchsize=4", "batchsize"),
    "value of the wrong type": ("--trainer.max_epochs=many", "max_epochs"),
    "missing config file": ("--config=/nonexistent/x.yaml", "x.yaml"),
    # argparse would read a prefix of an option as the option (max_epoch -> max_epochs)
    "prefix of an option": ("--trainer.max_epoch=1", "did you mean --trainer.max_epochs?"),
}


@pytest.mark.parametrize("modality", CLIS)
@pytest.mark.parametrize("case", list(BAD))
def test_bad_cli_arguments_fail_early(modality, case, capsys):
    main = importlib.import_module(f"metamixer.{modality}.__main__").main
    arg, needle = BAD[case]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", arg])
    assert exit_info.value.code not in (0, None)
    assert needle in capsys.readouterr().err


def test_config_with_an_unknown_section(tmp_path, capsys):
    from metamixer.timeseries.__main__ import main

    config = tmp_path / "c.yaml"
    config.write_text("modle:\n  dim: 8\n")
    with pytest.raises(SystemExit):
        main(["fit", f"--config={config}"])
    assert "modle" in capsys.readouterr().err


EXP = Path(__file__).resolve().parents[1] / "experiments"
DEFAULT_CONFIGS = {
    "vision": ["vision/fashion_mnist.yaml"],
    "timeseries": ["timeseries/base.yaml", "timeseries/elecdemand.yaml"],
    "superres": ["superres/skimage_x2.yaml"],
    "pointcloud": ["pointcloud/laspy_aerial.yaml"],
}


def default_config(modality: str) -> list[str]:
    return [arg for c in DEFAULT_CONFIGS[modality] for arg in ("--config", str(EXP / c))]


@pytest.mark.parametrize("modality", MODALITIES)
def test_a_precision_the_cpu_cannot_run_is_refused(modality):
    main = importlib.import_module(f"metamixer.{modality}.__main__").main
    with pytest.raises(
        ValueError, match="16-mixed needs a GPU; on CPU use one of 32-true, 32, bf16"
    ):
        main(
            [
                *default_config(modality),
                "--trainer.accelerator=cpu",
                "--trainer.precision=16-mixed",
            ],
            run=False,
        )


@pytest.mark.parametrize("modality", MODALITIES)
def test_an_unknown_architecture_argument_lists_the_valid_ones(modality, capsys):
    """Typed knobs in every task: a misspelled one is refused while parsing, as one line."""
    main = importlib.import_module(f"metamixer.{modality}.__main__").main
    with pytest.raises(SystemExit):
        main([*default_config(modality), "--model.arch_args.mlp_ratoi=2"], run=False)
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line.startswith("error: model.arch_args: unknown key 'mlp_ratoi'; valid: ")
    assert "mlp_ratio" in line


@pytest.mark.parametrize("cli", ["vision", "vision.segmentation"])
def test_an_unknown_architecture_is_one_line_listing_the_registered_ones(cli, tmp_path):
    config = {
        "vision": "fashion_mnist.yaml",
        "vision.segmentation": "segmentation/scenes_upernet.yaml",
    }
    args = [sys.executable, "-m", f"metamixer.{cli}", "fit", "--config",
            str(EXP / "vision" / config[cli]), "--model.arch=ffnet_9"]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    (line,) = error_lines(out.stderr)
    assert line.startswith("error: unknown architecture 'ffnet_9'") and "ffnet_1, " in line
    assert not (tmp_path / "runs").exists()


def error_lines(text: str) -> list[str]:
    return [x for x in text.splitlines() if x.startswith("error:")]


def test_vision_architecture_knobs_are_typed_with_choices_in_help(tmp_path):
    """``fit --help`` points at the knobs; ``--model.arch_args.help`` lists them typed, with the
    registered mixer and activation names as choices; a misspelled knob is one error line."""
    cmd = [sys.executable, "-m", "metamixer.vision", "fit"]
    top = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)  # fmt: skip
    assert "--model.arch_args.help" in top.stdout and "FFNetArgs" in top.stdout
    knobs = subprocess.run([*cmd, "--model.arch_args.help", "FFNetArgs"], capture_output=True,
                           text=True, timeout=120, cwd=tmp_path).stdout  # fmt: skip
    for knob in ("depths", "dims", "token_mixers", "token_acts", "token_kernels",
                 "channel_mixers", "drop_path_rate", "mlp_ratio"):  # fmt: skip
        assert f"--model.arch_args.{knob} " in knobs, knob
    flat = " ".join(knobs.split())
    assert "Literal['attention', 'ffnified', 'identity', 'pooling']" in flat
    assert "Literal['convnext', 'ffn', 'identity']" in flat and "'softmax'" in flat
    assert "blocks per stage" in flat  # documented by FFNet's docstring
    bad = subprocess.run([*cmd, "--config", str(EXP / "vision/fashion_mnist.yaml"),
                          "--model.arch_args.token_kernel=5"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    (line,) = error_lines(bad.stderr)
    assert line.startswith("error: model.arch_args: unknown key 'token_kernel'; valid: depths, ")
    assert "token_kernels" in line and "drop_path_rate" in line
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    "modality,knobs,own",
    [("timeseries", "FFNetForecasterArgs", "patch_stride"), ("superres", "FFNetSRArgs", "depth"),
     ("pointcloud", "SparseFFNetArgs", "enc_depths")],
)  # fmt: skip
def test_every_task_lists_its_typed_knobs(modality, knobs, own, tmp_path):
    cmd = [sys.executable, "-m", f"metamixer.{modality}", "fit"]
    top = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path).stdout  # fmt: skip
    assert knobs in top
    listed = subprocess.run([*cmd, "--model.arch_args.help", knobs], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path).stdout  # fmt: skip
    assert f"--model.arch_args.{own} " in listed and "--model.arch_args.token_mixers " in listed
    assert "Literal['attention', 'ffnified', 'identity', 'pooling']" in " ".join(listed.split())


def test_detector_settings_are_typed_and_a_moved_one_points_to_its_new_place(tmp_path):
    cmd = [sys.executable, "-m", "metamixer.vision.detection", "fit"]
    listed = subprocess.run([*cmd, "--model.detector_args.help", "DetectorArgs"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path).stdout  # fmt: skip
    for knob in ("box_head_dim", "mask_head_dim", "anchor_scale", "center_sampling_radius"):
        assert f"--model.detector_args.{knob} " in listed, knob  # every detector's settings
    old = subprocess.run([*cmd, "--config", str(EXP / "vision/detection/scenes_mask_rcnn.yaml"),
                          "--model.box_head_dim=64"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)  # fmt: skip
    (line,) = error_lines(old.stderr)
    assert "did you mean --model.detector_args.box_head_dim?" in line


def test_a_nested_override_updates_one_key_and_keeps_the_rest_of_the_config():
    """``--model.arch_args.encoder_args.token_mixers X`` changes that key only: the config's
    depths, dims and stem width below ``encoder_args`` stay (the small network, not FFNet-1)."""
    from metamixer.vision.segmentation.__main__ import main

    config = ["--config", str(EXP / "vision/segmentation/scenes_upernet.yaml")]
    plain = main(config, run=False)
    mixed = main([*config, "--model.arch_args.encoder_args.token_mixers=pooling",
                  "--model.arch_args.encoder_args.token_kernels=[5, 5, 5, 5]"], run=False)  # fmt: skip
    encoder = mixed.config.model.arch_args["encoder_args"]
    assert encoder == {**plain.config.model.arch_args["encoder_args"],
                       "token_mixers": "pooling", "token_kernels": [5, 5, 5, 5]}  # fmt: skip
    assert mixed.config.model.arch_args["decoder_channels"] == 64
    size = sum(p.numel() for p in plain.model.parameters())
    assert size < 3e6  # the config's small encoder (FFNet-1's own would be ~14M)
    assert 0.5 * size < sum(p.numel() for p in mixed.model.parameters()) < size


def test_typed_knobs_still_take_a_mixer_registered_with_import(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent / "user_mixers")}
    out = subprocess.run(
        [sys.executable, "-m", "metamixer.vision", "--import", "gated_conv_mixer", "fit",
         *default_config("vision"), "--model.arch_args.token_mixers=gated_conv", "--print_config"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "token_mixers: gated_conv" in out.stdout


@pytest.mark.parametrize(
    "modality,args,expected",
    [("pointcloud", [*default_config("pointcloud"), "--data.class_names=[ground, trees]"],
      "error: LASDataModule: 2 class names for 3 labels (METAMIXER_DEBUG=1 shows the traceback)"),
     ("vision", ["--data=ImageFolderDataModule", "--data.root=photos", "--data.crop_pct=1.5"],
      "error: ImageFolderDataModule: crop_pct must be in (0, 1] (a share of the image), got 1.5 "
      "(METAMIXER_DEBUG=1 shows the traceback)"),
     ("vision", ["--data=ImageFolderDataModule", "--data.root=photos", "--data.img_size=big"],
      "error: data.img_size: got 'big'; expected int (metamixer vision fit --help "
      "lists the options)")],
)  # fmt: skip
def test_a_data_modules_own_error_is_one_line(modality, args, expected, tmp_path):
    """Not inside jsonargparse's "Does not validate against any of the Union subtypes" dump, and
    the run folder made for the invocation is gone again."""
    out = subprocess.run([sys.executable, "-m", f"metamixer.{modality}", "fit", *args],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert error_lines(out.stderr) == [expected]
    assert "Union" not in out.stderr and "Given value" not in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_experiment_config_runs_from_outside_the_checkout(tmp_path, monkeypatch, capsys):
    """``data.root: data/timeseries`` in the config: not in the current folder, so it is found from
    the config file's folder up to the project root (and said so); a folder of that name in the
    current folder wins; a path found nowhere is left for the data module to name."""
    from metamixer.timeseries.__main__ import main

    monkeypatch.chdir(tmp_path)
    cli = main(default_config("timeseries"), run=False)
    assert cli.datamodule.path == EXP.parent / "data/timeseries/elecdemand.csv"
    note = "data.root: data/timeseries is not in the current folder; using "
    assert note in capsys.readouterr().out
    own = tmp_path / "data/timeseries"
    own.mkdir(parents=True)
    (own / "elecdemand.csv").write_text((EXP.parent / "data/timeseries/elecdemand.csv").read_text())
    assert main(default_config("timeseries"), run=False).datamodule.path == Path(
        "data/timeseries/elecdemand.csv"
    )
    with pytest.raises(FileNotFoundError, match=r"no CSV at data/elsewhere/elecdemand\.csv"):
        main([*default_config("timeseries"), "--data.root=data/elsewhere"], run=False)


def test_runs_never_overwrite_each_other_and_a_saved_config_reruns(tmp_path, monkeypatch):
    """fit, then test from the fit's saved config: a new folder per invocation, the fit's files
    byte for byte intact, and the saved experiment name kept."""
    from metamixer.timeseries.__main__ import main

    monkeypatch.chdir(tmp_path)  # relative run folders land here, outside the checkout
    limits = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
              "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
              "--trainer.enable_progress_bar=false", "--model.arch_args.dim=8",
              f"--data.root={EXP.parent / 'data/timeseries'}"]  # fmt: skip
    fit = main(["fit", *default_config("timeseries"), *limits])
    run = Path(fit.trainer.log_dir)
    assert run.parent == Path("runs/timeseries/elecdemand") and run.name.startswith("fit-")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert {"config.yaml", "hparams.yaml", "metrics.csv", "metrics.json"} <= {
        p.name for p in before
    }
    test = main(["test", "--config", str(run / "config.yaml"),
                 f"--ckpt_path={run / 'checkpoints/last.ckpt'}"])  # fmt: skip
    rerun = Path(test.trainer.log_dir)
    assert rerun.parent == run.parent and rerun.name.startswith("test-")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    again = main(
        ["fit", *default_config("timeseries"), *limits, "--trainer.default_root_dir=elsewhere"]
    )
    assert Path(again.trainer.log_dir).parent == Path("elsewhere/timeseries/elecdemand")


def test_a_resumed_fit_keeps_every_logged_row_and_every_earlier_file(tmp_path, monkeypatch):
    """``fit --ckpt_path last`` continues the run's folder: ``metrics.csv`` keeps the rows logged
    before the checkpoint, and the files as they were (config, record, metrics, the full CSV)
    stay byte for byte in ``before-resume-1/``."""
    from metamixer.timeseries.__main__ import main

    monkeypatch.chdir(tmp_path)
    limits = ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
              "--trainer.limit_test_batches=1", "--trainer.enable_progress_bar=false",
              "--trainer.log_every_n_steps=1", "--model.arch_args.dim=8", "--test_after_fit=true",
              f"--data.root={EXP.parent / 'data/timeseries'}"]  # fmt: skip
    fit = main(["fit", *default_config("timeseries"), *limits, "--trainer.max_epochs=2"])
    run = Path(fit.trainer.log_dir)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert {"config.yaml", "metrics.csv", "record.json", "metrics.json"} <= set(before)
    rows = (run / "metrics.csv").read_text().splitlines()
    resumed = main(["fit", *default_config("timeseries"), *limits, "--trainer.max_epochs=3",
                    "--ckpt_path=last"])  # fmt: skip
    assert Path(resumed.trainer.log_dir) == run
    kept = run / "before-resume-1"
    events = {k: v for k, v in before.items() if k.startswith("events.out.tfevents")}
    assert events and all((run / k).read_bytes() == v for k, v in events.items())  # appended to
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == {
        k: v for k, v in before.items() if k not in events
    }
    after = (run / "metrics.csv").read_text().splitlines()
    header, old_header = after[0].split(","), rows[0].split(",")
    old_rows = [dict(zip(old_header, r.split(","), strict=True)) for r in rows[1:]]
    new_rows = [dict(zip(header, r.split(","), strict=True)) for r in after[1:]]
    last = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, 6)  # the third epoch was trained
    trained = [r for r in old_rows if r.get("epoch") in ("0", "1") and r.get("test/mse", "") == ""]
    assert len(trained) >= 4
    for row in trained:  # every row of the two first epochs, in order, then the third epoch's
        assert {k: v for k, v in new_rows.pop(0).items() if v} == {
            k: v for k, v in row.items() if v
        }
    *third, tested = new_rows  # the third epoch's training and validation, then the test
    assert len(third) == 3 and {r["epoch"] for r in third} == {"2"} and tested["test/mse"]
    assert (run / "record.json").read_bytes() != before["record.json"]
    (record,) = load_records([run])  # the earlier record is history, not a second result
    assert record["path"] == str(run / "record.json") and record["metrics"]["test/mse"] > 0


def test_evaluating_without_a_checkpoint_uses_the_runs_best_or_refuses(tmp_path, monkeypatch):
    """``test --config RUN/config.yaml`` takes the run's best checkpoint (and says so); any other
    config without ``--ckpt_path`` is refused: it would test untrained weights."""
    from metamixer.timeseries.__main__ import main

    monkeypatch.chdir(tmp_path)
    limits = ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
              "--trainer.limit_test_batches=2", "--trainer.enable_progress_bar=false",
              "--model.arch_args.dim=8", "--trainer.max_epochs=3",
              f"--data.root={EXP.parent / 'data/timeseries'}"]  # fmt: skip
    fit = main(["fit", *default_config("timeseries"), *limits])
    run = Path(fit.trainer.log_dir)
    best = Path(fit.trainer.checkpoint_callback.best_model_path)
    assert best.name.startswith("best-")
    explicit = main(["test", "--config", str(run / "config.yaml"), f"--ckpt_path={best}"])
    implicit = main(["test", "--config", str(run / "config.yaml")])
    assert Path(implicit.config.test.ckpt_path).resolve() == best.resolve()
    assert (
        implicit.trainer.callback_metrics["test/mse"]
        == explicit.trainer.callback_metrics["test/mse"]
    )
    for subcommand in ("test", "validate", "predict"):
        with pytest.raises(ValueError, match=f"{subcommand} without --ckpt_path would evaluate "
                           "untrained weights"):  # fmt: skip
            main([subcommand, *default_config("timeseries"), *limits])


def test_a_configuration_error_is_one_line_naming_the_value(tmp_path):
    args = [sys.executable, "-m", "metamixer.timeseries", "fit", *default_config("timeseries"),
            "--model.arch_args.token_mixers=conv", f"--trainer.default_root_dir={tmp_path}"]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    assert lines == [
        "error: unknown token mixer 'conv' at block 1; registered: attention, ffnified, identity, "
        "pooling (register your own with metamixer.core.register_token_mixer and load its module "
        "with --import) (METAMIXER_DEBUG=1 shows the traceback)"
    ]


def test_missing_target_column_and_a_checkpoint_of_another_task_are_named(tmp_path, monkeypatch):
    from metamixer.timeseries.__main__ import main

    monkeypatch.chdir(tmp_path)
    data = [*default_config("timeseries"), f"--data.root={EXP.parent / 'data/timeseries'}"]
    with pytest.raises(ValueError, match=r"target column 'Load' is not in .*elecdemand.csv"):
        main([*data, "--data.target=Load"], run=False)
    fit = main(["fit", *data, "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
                "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
                "--model.arch_args.dim=8", "--trainer.enable_progress_bar=false"])  # fmt: skip
    ckpt = Path(fit.trainer.log_dir) / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match="trained with num_vars=3 but this data gives num_vars=1"):
        main(["test", *data, "--data.features=S", f"--ckpt_path={ckpt}", "--model.arch_args.dim=8"])
    from metamixer.vision.__main__ import main as vision

    with pytest.raises(ValueError) as err:
        vision(["test", *default_config("vision"), f"--ckpt_path={ckpt}"])
    assert str(err.value) == (
        f"{ckpt} is a timeseries checkpoint (ffnet_ts); `metamixer vision test` needs a vision "
        f"checkpoint: run `metamixer timeseries test --ckpt_path {ckpt}`"
    )


@pytest.mark.parametrize(
    "modality,names",
    [("vision", ["ImageFolderDataModule", "FashionMNISTDataModule"]),
     ("pointcloud", ["ScanNetDataModule", "S3DISDataModule", "LASDataModule"])],
)  # fmt: skip
def test_data_modules_are_listed_in_help_and_selectable_by_short_name(modality, names):
    out = subprocess.run([sys.executable, "-m", f"metamixer.{modality}", "fit", "--help"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    flat = " ".join(out.stdout.split())
    assert f"data modules: {', '.join(sorted(names))} (--data NAME;" in flat  # unbroken names
    assert "IndoorScenes" not in flat and "data.ClassificationData" not in flat  # usable ones only
    short = subprocess.run(
        [sys.executable, "-m", f"metamixer.{modality}", "fit", "--data", names[0], "--data.help",
         names[0]], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert short.returncode == 0 and "--data." in short.stdout


def test_timeseries_analysis_reads_its_data_from_the_checkpoint(tmp_path, monkeypatch):
    from metamixer.timeseries.__main__ import main
    from metamixer.timeseries.analyze import main as analyze

    monkeypatch.chdir(tmp_path)
    fit = main(["fit", *default_config("timeseries"), f"--data.root={EXP.parent / 'data/timeseries'}",
                "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
                "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
                "--model.arch_args.dim=8", "--trainer.enable_progress_bar=false"])  # fmt: skip
    ckpt = Path(fit.trainer.log_dir) / "checkpoints" / "last.ckpt"
    analyze(["--checkpoint", str(ckpt), "--windows", "8", "--out", str(tmp_path / "erf")])
    assert (tmp_path / "erf" / "erf_1d.png").stat().st_size > 1000


def test_an_integer_batch_limit_is_a_batch_count_not_the_whole_epoch(tmp_path, monkeypatch):
    """Lightning types ``limit_*_batches`` as ``float | int``: read as given, "1" is one batch."""
    monkeypatch.chdir(tmp_path)
    main = importlib.import_module("metamixer.timeseries.__main__").main
    args = [*default_config("timeseries"), "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1.0", "--trainer.limit_test_batches=0.5"]  # fmt: skip
    trainer = main(args, run=False).trainer
    assert (trainer.limit_train_batches, trainer.limit_val_batches) == (1, 1.0)
    assert isinstance(trainer.limit_train_batches, int) and trainer.limit_test_batches == 0.5
    assert isinstance(trainer.limit_val_batches, float)
