"""``python -m netsurgeon``: the same command line as the ``netsurgeon`` script."""

from netsurgeon.cli import run

if __name__ == "__main__":
    run()
