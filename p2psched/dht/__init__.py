"""The Kademlia DHT: signed multi-value records over authenticated UDP.

Run a node with `open_dht_node(identity)` (or `nursery.start(serve, identity, ...)`), then
`put`, `get` and `find_node` on it. The protocol core (`DhtProtocol`) and this node's
publishing (`Publisher`, in `publish.py`) are sans-I/O; the routing table, the lookup and the
record store are pure and usable on their own.
"""

from __future__ import annotations

from p2psched.dht.node import DhtNode as DhtNode
from p2psched.dht.node import open_dht_node as open_dht_node
from p2psched.dht.node import serve as serve
from p2psched.dht.protocol import DhtConfig as DhtConfig
from p2psched.dht.protocol import DhtProtocol as DhtProtocol
from p2psched.dht.records import Record as Record
from p2psched.dht.records import StoreLimits as StoreLimits
from p2psched.dht.routing import Contact as Contact

__all__ = [
    "Contact",
    "DhtConfig",
    "DhtNode",
    "DhtProtocol",
    "Record",
    "StoreLimits",
    "open_dht_node",
    "serve",
]
