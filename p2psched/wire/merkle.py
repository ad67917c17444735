"""The SHA-256 Merkle tree that commits to many items at once, for every use of one: the
commitments of a commit round and the receipts of a batch, each batch signed once (`wire.deal`),
and the capacity challenge's rows (`resources.challenge`).

Owns: the hashing, under the tags of its use (`Domain`): leaves, inner nodes, padding and the
root a signature signs each under their own tag, so that no hash of one use or one level passes
for another's, nor a signed root for any signed document (no tag is a prefix of another); the
tree, a leaf's proof and the root a proof leads to.
Promises: the tree is full: a level of odd length is padded with the domain's `pad` of that
level (a subtree of only empty places), so a leaf's index says its side at every level, and
`root_from` leads to the tree's root only from a leaf at the index it was proven at, by that
leaf's own proof.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

MAX_LEVELS = 32  # levels of any tree here (2^32 leaves): the pads are made up to it


class Domain:
    """The tags one use of the tree hashes under: `name` + `-leaf/1`, `-node/1`, `-pad/1`,
    `-root/1` (the message a root's signature signs)."""

    def __init__(self, name: bytes) -> None:
        self.name = name
        self._leaf = name + b"-leaf/1"
        self._node = name + b"-node/1"
        self.root_tag = name + b"-root/1"
        self.pads = [hashlib.sha256(name + b"-pad/1").digest()]
        for _ in range(MAX_LEVELS):
            self.pads.append(self.node(self.pads[-1], self.pads[-1]))

    def leaf(self, item: bytes) -> bytes:
        return hashlib.sha256(self._leaf + item).digest()

    def node(self, left: bytes, right: bytes) -> bytes:
        return hashlib.sha256(self._node + left + right).digest()

    def signed_root(self, root: bytes) -> bytes:
        """What a signature over the root `root` signs."""
        return self.root_tag + root

    def tree(self, leaves: Sequence[bytes]) -> MerkleTree:
        """The tree over leaves given by their hashes (`leaf`)."""
        return MerkleTree(self, leaves)

    def tree_of(self, items: Sequence[bytes]) -> MerkleTree:
        return MerkleTree(self, [self.leaf(item) for item in items])

    def root_from(self, leaf: bytes, index: int, path: Sequence[bytes]) -> bytes | None:
        """The root that `path` (sibling hashes, leaf upwards) leads to from the leaf hash
        `leaf` at `index`; None if the index is past a tree of that many levels."""
        if index >> len(path):
            return None
        node = leaf
        for sibling in path:
            node = self.node(sibling, node) if index & 1 else self.node(node, sibling)
            index >>= 1
        return node

    def holds(self, root: bytes, size: int, index: int, item: bytes, path: Sequence[bytes]) -> bool:
        """Whether `path` leads from `item` at `index` of a tree of `size` leaves to `root`."""
        return (
            0 <= index < size
            and len(path) == levels(size)
            and self.root_from(self.leaf(item), index, path) == root
        )


def levels(size: int) -> int:
    """The levels above the leaves of a tree of `size` leaves: the length of every proof."""
    return (size - 1).bit_length()


class MerkleTree:
    """The tree over leaves given by their hashes. It keeps the hashes, not the items."""

    def __init__(self, domain: Domain, leaves: Sequence[bytes]) -> None:
        if not leaves:
            raise ValueError("a Merkle tree needs at least one leaf")
        level = list(leaves)
        self.levels = [level]
        while len(level) > 1:
            if len(level) % 2:
                level.append(domain.pads[len(self.levels) - 1])
            level = [domain.node(level[i], level[i + 1]) for i in range(0, len(level), 2)]
            self.levels.append(level)

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    def proof(self, index: int) -> list[bytes]:
        """The sibling hashes from leaf `index` up to the root."""
        return [level[(index >> k) ^ 1] for k, level in enumerate(self.levels[:-1])]
