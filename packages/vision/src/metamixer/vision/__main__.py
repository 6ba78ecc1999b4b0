"""``python -m metamixer.vision``: ``metamixer vision`` (image classification) under its older name."""

from metamixer.lab.main import alias, run_alias

main = alias("vision")


def entry() -> None:
    """Console script ``metamixer-vision`` (also a script path for ``fabric run``)."""
    run_alias("vision")


if __name__ == "__main__":
    entry()
