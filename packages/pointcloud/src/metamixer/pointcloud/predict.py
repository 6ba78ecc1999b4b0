"""``python -m metamixer.pointcloud.predict CHECKPOINT INPUT``: ``metamixer pointcloud predict-files`` under its
older name."""

from metamixer.lab.main import files_alias, run_alias

main = files_alias("pointcloud")

if __name__ == "__main__":
    run_alias("pointcloud", "predict-files")
