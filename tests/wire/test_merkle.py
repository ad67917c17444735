"""The one Merkle tree (`wire.merkle`): every leaf proves its way to the root at its own index
only, whatever the tree's size; a proof of another length or place fails; and each use hashes
and signs under its own tags, none of them a prefix of another's or of a signed document's."""

from __future__ import annotations

import itertools

import pytest

from p2psched.resources.challenge import ROWS
from p2psched.wire.deal import Commitment, Quote, Receipt
from p2psched.wire.merkle import Domain, levels

TREE = Domain(b"p2psched/test")


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 9])
def test_each_leaf_proves_at_its_index_alone(size: int) -> None:
    items = [bytes([i]) * 3 for i in range(size)]
    tree = TREE.tree_of(items)
    for i, item in enumerate(items):
        path = tree.proof(i)
        assert len(path) == levels(size)
        assert TREE.holds(tree.root, size, i, item, path)
        others = [j for j in range(1 << levels(size)) if j != i]
        assert not any(TREE.holds(tree.root, size, j, item, path) for j in others)
        assert not TREE.holds(tree.root, size, i, item, [*path, tree.root])
        if path:
            assert not TREE.holds(tree.root, size, i, item, path[:-1])
    # A place past the tree the proof's length allows leads nowhere.
    assert TREE.root_from(TREE.leaf(items[0]), 1 << levels(size), tree.proof(0)) is None


def test_each_use_hashes_and_signs_under_its_own_tags() -> None:
    domains = [ROWS, Commitment.BATCH, Receipt.BATCH]
    assert all(d is not None for d in domains)
    roots = {d.tree_of([b"a", b"b", b"c"]).root for d in domains if d is not None}
    assert len(roots) == len(domains)
    signed_tags = [Quote.TAG, Quote.TAG_BEFORE_GPUS, Commitment.TAG, Commitment.TAG_BEFORE_GPUS]
    signed_tags += [Receipt.TAG] + [d.root_tag for d in domains if d is not None]
    for a, b in itertools.permutations(signed_tags, 2):
        assert not b.startswith(a), (a, b)
