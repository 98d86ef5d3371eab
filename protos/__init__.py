"""The LiftWatch wire contract: .proto sources and their generated Python modules."""
