"""`python -m edgeq` runs the command line."""

import sys

from edgeq.cli import main

sys.exit(main())
