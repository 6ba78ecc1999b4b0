"""Lightning forecasting: the CLI end to end, metrics, plot, early-stopping recipe."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from metamixer.timeseries.__main__ import main
from metamixer.timeseries.lit import Forecaster, held_then_decayed


def args(root, out, *extra):
    return [
        "fit",
        f"--data.root={root}",
        "--data.data_path=weather.csv",
        "--data.dataset=custom",
        "--data.pred_len=24",
        "--data.batch_size=64",
        "--model.arch_args.dim=16",
        "--model.arch_args.token_kernels=13",
        "--model.arch_args.channel_kernels=13",
        "--model.arch_args.channel_small_kernels=3",
        "--trainer.max_epochs=2",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={out}",
        *extra,
    ]


def test_cli_fit_and_test_on_a_custom_csv(custom_root, tmp_path):
    cli = main(args(custom_root, tmp_path / "runs", "--test_after_fit=true"))
    metrics = cli.trainer.callback_metrics
    assert {"test/mse", "test/mae", "test/original_mse", "test/original_mae"} <= set(metrics)
    assert cli.trainer.checkpoint_callback.best_model_score is not None  # val/mse was tracked
    assert cli.trainer.ckpt_path == cli.trainer.checkpoint_callback.best_model_path  # tested
    log_dir = Path(cli.trainer.log_dir)
    assert yaml.safe_load((log_dir / "config.yaml").read_text())["data"]["pred_len"] == 24
    hparams = yaml.safe_load((log_dir / "hparams.yaml").read_text())
    assert hparams["num_vars"] == 3 and hparams["horizon"] == 24  # linked from the data
    assert (log_dir / "forecasts.png").stat().st_size > 1000
    assert cli.trainer.checkpoint_callback.monitor == "val/mse"


def test_original_scale_metrics_undo_the_scaling(custom_root, tmp_path):
    cli = main(args(custom_root, tmp_path, "--test_after_fit=true"))
    scaler = cli.datamodule.scaler
    m = cli.trainer.callback_metrics
    # MSE scales with the variance: original-scale MSE lies between min and max variance × scaled MSE
    var = torch.tensor(scaler.std**2, dtype=torch.float32)
    assert (
        var.min() * m["test/mse"] * 0.99
        <= m["test/original_mse"]
        <= var.max() * m["test/mse"] * 1.01
    )


def test_num_vars_comes_from_the_file_not_the_config(custom_root, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(args(custom_root, tmp_path, "--model.num_vars=5"))
    assert "num_vars" in capsys.readouterr().err


def test_model_whose_variables_disagree_with_the_data_is_refused_before_training(custom_root):
    import lightning as L

    from metamixer.timeseries.data import TSLibDataModule

    model = Forecaster(arch="ffnet_ts_test", num_vars=5, horizon=24)
    dm = TSLibDataModule(str(custom_root), "weather.csv", "custom", pred_len=24)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False)
    with pytest.raises(ValueError, match=r"3 variables.*num_vars=5"):
        trainer.fit(model, dm)
    assert trainer.global_step == 0


def test_learning_rate_is_held_then_decays():
    assert [held_then_decayed(e, hold=2, gamma=0.9) for e in range(4)] == pytest.approx(
        [1, 1, 0.9, 0.81]
    )


def test_nan_inputs_are_refused():
    model = Forecaster(arch="ffnet_ts_test", num_vars=2, horizon=8)
    history = torch.zeros(2, 96, 2)
    history[0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model.training_step((history, torch.zeros(2, 8, 2)), 0)


@pytest.mark.parametrize("loss, reference", [("mse", F.mse_loss), ("mae", F.l1_loss)])
def test_training_objective_follows_the_loss_option(loss, reference):
    torch.manual_seed(0)
    model = Forecaster(arch="ffnet_ts_test", num_vars=2, horizon=8, loss=loss)
    history, future = torch.randn(4, 96, 2), 3 * torch.randn(4, 8, 2)
    model.eval()  # no dropout: the step and the reference see the same forecast
    with torch.no_grad():
        expected = reference(model(history), future)
        assert float(model.training_step((history, future), 0)) == pytest.approx(float(expected))


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match=r"loss must be one of \['mae', 'mse'\]"):
        Forecaster(num_vars=2, horizon=8, loss="rmse")
