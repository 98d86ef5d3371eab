"""Allow `python -m hil_tests`, which the rig uses to start real processes."""

import sys

from hil_tests.cli import main

sys.exit(main())
