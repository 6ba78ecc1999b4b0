"""A run killed with SIGKILL mid-epoch and resumed with --ckpt_path last ends like an uninterrupted one."""

from metamixer_testing import assert_same_weights, kill_and_resume


def test_kill_and_resume_matches_the_uninterrupted_run(fashion_root, tmp_path):
    args = [
        "--model.arch=ffnet_test", "--model.arch_args.drop_path_rate=0.1", "--model.warmup_epochs=0.5",
        "--data=metamixer.vision.data.FashionMNISTDataModule", f"--data.root={fashion_root}",
        "--data.batch_size=16", "--data.val_size=16", "--trainer.max_epochs=3",
        "--trainer.accelerator=cpu", "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.save_last=true",
    ]  # fmt: skip
    ckpts = kill_and_resume("metamixer.vision", args, tmp_path, crash_step=7)  # 5 steps per epoch
    assert_same_weights(ckpts["uninterrupted"], ckpts["resumed"])
