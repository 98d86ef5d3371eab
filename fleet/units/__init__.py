"""What the fleet knows of units: coverage (live status), firmware policy, the register."""
