"""Allow `python -m fleet`, which the rig uses to start real processes."""

import sys

from fleet.cli.main import main

sys.exit(main())
