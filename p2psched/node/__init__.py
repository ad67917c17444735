"""The node: one process composing the DHT, the scheduler, and optionally the worker role; and
its façade, through which its readers see it (snapshots) and drive it (commands)."""

from __future__ import annotations

from p2psched.node.node import JoinError as JoinError
from p2psched.node.node import Node as Node
from p2psched.node.node import open_node as open_node
from p2psched.node.status import NodeFacade as NodeFacade

__all__ = ["JoinError", "Node", "NodeFacade", "open_node"]
