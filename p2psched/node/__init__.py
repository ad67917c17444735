"""The node: one process composing the DHT, the scheduler, and optionally the worker role."""

from __future__ import annotations

from p2psched.node.node import JoinError as JoinError
from p2psched.node.node import Node as Node
from p2psched.node.node import open_node as open_node

__all__ = ["JoinError", "Node", "open_node"]
