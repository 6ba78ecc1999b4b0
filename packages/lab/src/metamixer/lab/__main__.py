"""``python -m metamixer.lab``: the ``metamixer`` command."""

from metamixer.lab.main import entry

if __name__ == "__main__":
    entry()
