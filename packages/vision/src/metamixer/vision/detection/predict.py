"""``python -m metamixer.vision.detection.predict CHECKPOINT INPUT``: ``metamixer detection predict-files`` under its
older name."""

from metamixer.lab.main import files_alias, run_alias

main = files_alias("detection")

if __name__ == "__main__":
    run_alias("detection", "predict-files")
