"""Register decoding: raw Modbus values into `CarState` fields, driven by profile data.

A profile (agent/profiles/*.toml) says which register, bit, coil or discrete input holds
which signal; `agent.decode.profile` loads and validates it and decodes with it. There is
no hand-written decoder per controller: a new controller is a new TOML file.
"""
