"""p2psched: a peer-to-peer compute scheduler.

Workers advertise signed resource profiles in a Kademlia DHT; schedulers find them there and
dispatch to them directly. See DESIGN.md for the architecture.
"""

from __future__ import annotations

from p2psched.identity import Identity as Identity
from p2psched.identity import IdentityError as IdentityError

__all__ = ["Identity", "IdentityError"]
__version__ = "0.1.0"
