"""``python -m edgert`` is the same as the ``edgert`` command."""

import sys

from edgert.cli import main

sys.exit(main())
