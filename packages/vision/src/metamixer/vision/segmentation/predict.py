"""``python -m metamixer.vision.segmentation.predict CHECKPOINT INPUT``: ``metamixer segmentation predict-files`` under its
older name."""

from metamixer.lab.main import files_alias, run_alias

main = files_alias("segmentation")

if __name__ == "__main__":
    run_alias("segmentation", "predict-files")
