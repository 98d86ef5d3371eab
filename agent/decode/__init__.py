"""Register decoding: raw Modbus values into `CarState` fields, driven by profile data.

A profile (agent/profiles/*.toml) says which register, bit, coil or discrete input holds
which signal. `agent.decode.model` holds a profile as typed data, `agent.decode.parser`
loads and validates the TOML into it, and `agent.decode.decoder` decodes samples with
it. There is no hand-written decoder per controller: a new controller is a new TOML file.
"""
