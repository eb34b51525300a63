"""``python -m convergent`` is ``convergent``."""

import sys

from convergent.cli import main

sys.exit(main())
