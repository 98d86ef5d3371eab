"""The read side: unit selection, rows as shown (views), FleetQuery gRPC, lifecycle views."""
