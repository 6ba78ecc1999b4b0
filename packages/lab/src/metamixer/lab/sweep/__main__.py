"""``python -m metamixer.lab.sweep``: ``metamixer sweep``."""

from metamixer.lab.sweep.command import main

if __name__ == "__main__":
    main()
