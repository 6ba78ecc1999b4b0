"""``python -m metamixer.vision.detection``: ``metamixer detection`` (detection) under its older name."""

from metamixer.lab.main import alias, run_alias

main = alias("detection")


def entry() -> None:
    """Console script ``metamixer-detection`` (also a script path for ``fabric run``)."""
    run_alias("detection")


if __name__ == "__main__":
    entry()
