"""``python -m metamixer.superres``: ``metamixer superres`` (super-resolution) under its older name."""

from metamixer.lab.main import alias, run_alias

main = alias("superres")


def entry() -> None:
    """Console script ``metamixer-superres`` (also a script path for ``fabric run``)."""
    run_alias("superres")


if __name__ == "__main__":
    entry()
