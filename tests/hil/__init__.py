"""Tests of the HIL rig: the controller emulator."""
