"""``python -m leibrix`` is the ``leibrix`` command."""

import sys

from leibrix.cli import main

sys.exit(main())
