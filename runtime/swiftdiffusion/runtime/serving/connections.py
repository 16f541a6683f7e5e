"""How long a server keeps a client's connection and how soon a client resolves its target
again: together, how soon a base pod's channel finds a ControlNet pod added to its pool.
Plain numbers, so that the planner follows the same rule without gRPC."""
from __future__ import annotations

# Servers end each connection after this long (gRPC spreads each connection's age by +-10%,
# gRFC A9); the client resolves the pool's name again when one ends, and finds pods added since.
CONNECTION_AGE_SECONDS = 15.0
CONNECTION_AGE_JITTER = 0.1
# gRPC spaces a channel's resolutions 30 s apart by default; 5 s lets a new pod take sessions
# within about 20 s of turning Ready (one connection age, then one resolution).
RESOLUTION_INTERVAL_SECONDS = 5.0
