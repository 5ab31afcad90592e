"""``python -m hean`` is the ``hean`` command."""

import sys

from hean.cli import main

sys.exit(main())
