"""Register decoding: raw Modbus register blocks into `CarState` and identity strings."""
