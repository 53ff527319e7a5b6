"""``python -m fastreid_ewth.reproduce``: the command line of ``tools/reproduce.py`` without a checkout
(pass ``--configs``, or ``--projects DIR`` for the paper's configs and the presets)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m fastreid_ewth.reproduce"))
