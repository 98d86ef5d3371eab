"""Allow `python -m agent`, which the rig uses to start real processes."""

import sys

from agent.cli import main

sys.exit(main())
