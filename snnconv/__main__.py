"""``python -m snnconv``: the command line, also as ``torchrun ... -m snnconv verify ...``."""

from .cli import entry

if __name__ == "__main__":
    entry()
