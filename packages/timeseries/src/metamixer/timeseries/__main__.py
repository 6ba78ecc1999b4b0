"""``python -m metamixer.timeseries``: ``metamixer timeseries`` (forecasting) under its older name."""

from metamixer.lab.main import alias, run_alias

main = alias("timeseries")


def entry() -> None:
    """Console script ``metamixer-timeseries`` (also a script path for ``fabric run``)."""
    run_alias("timeseries")


if __name__ == "__main__":
    entry()
