"""``python -m privguard.cli``: the same as the ``privguard`` console script."""

from privguard.cli import run

if __name__ == "__main__":
    run()
