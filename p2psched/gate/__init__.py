"""The gate role: a reachable node that relays connections to workers behind NAT (`service`,
its bookkeeping in `relay`), and the side of it other nodes run (`client`): the reachability
check, a worker's relay reservation, and dialing a worker through a circuit."""

from __future__ import annotations
