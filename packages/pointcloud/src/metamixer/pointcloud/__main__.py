"""``python -m metamixer.pointcloud``: ``metamixer pointcloud`` (point-cloud segmentation) under its older name."""

from metamixer.lab.main import alias, run_alias

main = alias("pointcloud")


def entry() -> None:
    """Console script ``metamixer-pointcloud`` (also a script path for ``fabric run``)."""
    run_alias("pointcloud")


if __name__ == "__main__":
    entry()
