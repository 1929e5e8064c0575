"""`python -m lmforge ...` is the same as the `lmforge` console script."""

import sys

from lmforge.cli import main

sys.exit(main())
