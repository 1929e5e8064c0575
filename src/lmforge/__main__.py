"""`python -m lmforge ...` is the same as the `lmforge` console script."""

from lmforge.cli import entry

entry()
