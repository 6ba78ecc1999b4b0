"""A forecasting run killed mid-epoch and resumed ends like an uninterrupted one."""

from metamixer_testing import assert_same_weights, kill_and_resume


def test_kill_and_resume_matches_the_uninterrupted_run(custom_root, tmp_path):
    args = [
        f"--data.root={custom_root}", "--data.data_path=weather.csv", "--data.dataset=custom",
        "--data.pred_len=24", "--data.batch_size=64", "--model.arch=ffnet_ts_test",
        "--model.arch_args.dim=16", "--model.arch_args.token_kernels=13",
        "--model.arch_args.channel_kernels=13", "--model.arch_args.mlp_drop=0.3", "--model.plot_series=0",
        "--trainer.max_epochs=3", "--trainer.accelerator=cpu",
    ]  # fmt: skip
    ckpts = kill_and_resume("metamixer.timeseries", args, tmp_path, crash_step=15)  # 10 steps/epoch
    assert_same_weights(ckpts["uninterrupted"], ckpts["resumed"])
