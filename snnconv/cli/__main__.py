"""``python -m snnconv.cli``: the command line (as ``python -m snnconv``)."""

from . import entry

entry()
