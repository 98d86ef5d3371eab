"""Emulated elevator controllers serving the reference register map over Modbus.

Layers, each importable on its own: `car` (pure physics and controller logic, driven by an
explicit simulated time; split by concern into `carbase`, `car_faults`, `boarding` and
`stops`), `registers` (pure encoding of a car snapshot to the register map), `group` (the
cars of one emulator and the clock that drives them), `server` (Modbus TCP on pymodbus's
simulator API), `control` (JSON-lines fault injection), and `command` (the CLI).
"""
