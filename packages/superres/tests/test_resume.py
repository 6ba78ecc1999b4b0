"""An SR run killed mid-epoch and resumed from its mid-epoch checkpoint ends like an uninterrupted
one."""

import cv2
from metamixer_testing import assert_same_weights, kill_and_resume, step_checkpoint
from sr_test_images import smooth_image


def test_kill_and_resume_matches_the_uninterrupted_run(hr_folder, tmp_path):
    train = tmp_path / "train"
    (train / "HR").mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(train / "HR" / f"{i}.png"), smooth_image(64, 64, seed=20 + i))
    args = [
        f"--data.train_root={train}", f"--data.val_roots=[{hr_folder}]", "--data.gt_size=32",
        "--data.batch_size=2", "--data.repeat=4", "--model.arch=ffnet_sr_test", "--model.arch_args.depth=1",
        "--model.ema_decay=0.9", "--trainer.max_epochs=3", "--trainer.accelerator=cpu",
        *step_checkpoint(3),
    ]  # fmt: skip
    ckpts = kill_and_resume(  # checkpoint at step 6, the 2nd of 4 in the second epoch
        "metamixer.superres", args, tmp_path / "runs", crash_step=7, steps_per_epoch=4
    )
    assert_same_weights(ckpts["uninterrupted"], ckpts["resumed"])
