"""``python -m metamixer.vision.segmentation``: ``metamixer segmentation`` (semantic segmentation) under its older name."""

from metamixer.lab.main import alias, run_alias

main = alias("segmentation")


def entry() -> None:
    """Console script ``metamixer-segmentation`` (also a script path for ``fabric run``)."""
    run_alias("segmentation")


if __name__ == "__main__":
    entry()
