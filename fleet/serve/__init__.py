"""The serving process: listeners and tasks (server), worker processes, interpreter tuning."""
