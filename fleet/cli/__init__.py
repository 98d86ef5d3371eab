"""``liftwatch-fleet``: one module per command group; `fleet.cli.main` builds the parser.

``main`` is re-exported here because the console script names ``fleet.cli:main``.
"""

from fleet.cli.main import main

__all__ = ["main"]
