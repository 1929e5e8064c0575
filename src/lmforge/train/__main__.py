"""`torchrun ... -m lmforge.train --data D --out R ...` is `lmforge train --data D --out R ...`.

The form for several machines, where torchrun's rendezvous options are the user's to choose.
"""

import sys

from lmforge.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
