"""``python -m metamixer.vision.predict CHECKPOINT INPUT``: ``metamixer vision predict-files`` under its
older name."""

from metamixer.lab.main import files_alias, run_alias

main = files_alias("vision")

if __name__ == "__main__":
    run_alias("vision", "predict-files")
