"""HIL rig: emulated elevator controllers and the scenarios that drive the real agent and fleet."""
