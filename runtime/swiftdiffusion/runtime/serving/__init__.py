"""The serving shell: the gRPC servers of both roles, process settings, health, metrics,
model store resolution and the generated API modules."""
