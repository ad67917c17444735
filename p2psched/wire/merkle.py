"""The SHA-256 Merkle tree that signs or commits to many items at once: the capacity
challenge's rows, and the commitments of one commit round under one signature.

Owns: the hashing (leaves tagged 0, nodes 1, so a node never passes for a leaf; an odd node
at the end of a level goes up unpaired), a leaf's proof, and the root a proof leads to.
Promises: `root_from` gives the tree's root only for a leaf and proof taken from that tree
(at that index, of that size), else another value or None.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class MerkleTree:
    """The tree over leaves given by their hashes (`leaf_hash`). It keeps the hashes, not
    the items."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        level = list(leaves)
        self.levels = [level]
        while len(level) > 1:
            up = [_node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                up.append(level[-1])
            self.levels.append(up)
            level = up

    @classmethod
    def of_rows(cls, rows: Sequence[bytes]) -> MerkleTree:
        return cls([leaf_hash(r) for r in rows])

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    def proof(self, index: int) -> list[bytes]:
        """The sibling hashes from leaf `index` up to the root."""
        out = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                out.append(level[sibling])
            index //= 2
        return out


def root_from(leaf: bytes, size: int, index: int, proof: Sequence[bytes]) -> bytes | None:
    """The root that `proof` leads to from the leaf hash `leaf` at `index` of `size`; None if
    the proof has the wrong length for that place."""
    if not 0 <= index < size:
        return None
    node, used = leaf, 0
    while size > 1:
        if index ^ 1 < size:
            if used >= len(proof):
                return None
            sibling = proof[used]
            used += 1
            node = _node_hash(sibling, node) if index % 2 else _node_hash(node, sibling)
        index //= 2
        size = (size + 1) // 2
    return node if used == len(proof) else None


def proof_holds(root: bytes, size: int, index: int, row: bytes, proof: Sequence[bytes]) -> bool:
    """Whether `proof` leads from item `row` at `index` (of `size`) to `root`."""
    return root_from(leaf_hash(row), size, index, proof) == root
