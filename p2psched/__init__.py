"""p2psched: a peer-to-peer compute scheduler.

Workers advertise signed resource profiles in a Kademlia DHT; schedulers find them there and
dispatch to them directly. See DESIGN.md for the architecture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from p2psched.identity import Identity as Identity
    from p2psched.identity import IdentityError as IdentityError

__all__ = ["Identity", "IdentityError"]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """The re-exports, imported on first use: importing the package (as every command does)
    need not load `cryptography`."""
    if name in __all__:
        from p2psched import identity

        return getattr(identity, name)
    raise AttributeError(f"module 'p2psched' has no attribute {name!r}")
