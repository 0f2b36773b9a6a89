"""``python -m microcall``: the same as the ``microcall`` command."""

import sys

from microcall.cli import main

sys.exit(main())
