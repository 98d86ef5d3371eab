"""`python -m hil_tests.emulator`: the emulator alone; options as `liftwatch-rig emulate`."""

import argparse
import sys

from hil_tests.emulator import command

parser = argparse.ArgumentParser(
    prog="python -m hil_tests.emulator",
    description=command.__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
)
command.add_arguments(parser)
sys.exit(command.run(parser.parse_args()))
