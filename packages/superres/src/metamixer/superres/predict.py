"""``python -m metamixer.superres.predict CHECKPOINT INPUT``: ``metamixer superres predict-files`` under its
older name."""

from metamixer.lab.main import files_alias, run_alias

main = files_alias("superres")

if __name__ == "__main__":
    run_alias("superres", "predict-files")
