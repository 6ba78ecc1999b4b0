"""A point-cloud run killed mid-epoch and resumed from a mid-epoch checkpoint ends like an
uninterrupted one."""

from metamixer_testing import assert_same_weights, kill_and_resume, step_checkpoint
from pc_scenes import write_las


def test_kill_and_resume_mid_epoch_matches_the_uninterrupted_run(tmp_path):
    path = write_las(tmp_path / "tile.las")
    args = [
        "--data=metamixer.pointcloud.data.LASDataModule", f"--data.path={path}",
        "--data.grid_size=0.8", "--data.crops_per_epoch=6", "--data.batch_size=2",
        "--data.crop_size=12", "--model.arch_args.enc_depths=[1, 1]",
        "--model.arch_args.enc_channels=[8, 16]", "--model.arch_args.dec_depths=[1]",
        "--model.arch_args.dec_channels=[8]", "--model.arch_args.drop_path_rate=0.2",
        "--trainer.max_epochs=3", "--trainer.accelerator=cpu",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.save_last=true", *step_checkpoint(2),
    ]  # fmt: skip
    # 3 steps per epoch: last.ckpt is written at steps 2, 3 (epoch end) and 4, the kill is at 5
    ckpts = kill_and_resume(
        "metamixer.pointcloud", args, tmp_path / "runs", crash_step=5, steps_per_epoch=3
    )
    assert_same_weights(ckpts["uninterrupted"], ckpts["resumed"])
