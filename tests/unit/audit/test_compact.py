"""The append frontier against the naive reference tree and its restore checks."""

from __future__ import annotations

import pytest
from reference import mth

from bastion.audit.compact import Frontier, MalformedFrontierError, root_from_leaf_hashes
from bastion.audit.hashing import EMPTY_ROOT, hash_leaf

LEAVES = [bytes([i]) * i for i in range(40)]


def test_root_matches_reference_when_appending_one_leaf_at_a_time() -> None:
    frontier = Frontier()
    assert frontier.root() == EMPTY_ROOT
    for n, leaf in enumerate(LEAVES, start=1):
        frontier.append(hash_leaf(leaf))
        assert frontier.size == n
        assert len(frontier.hashes) == n.bit_count()
        assert frontier.root() == mth(LEAVES[:n])


def test_restored_frontier_continues_identically_when_persisted_midway() -> None:
    first = Frontier()
    for leaf in LEAVES[:13]:
        first.append(hash_leaf(leaf))
    restored = Frontier(first.size, first.hashes)
    for leaf in LEAVES[13:]:
        first.append(hash_leaf(leaf))
        restored.append(hash_leaf(leaf))
    assert restored == first
    assert restored.root() == mth(LEAVES)


def test_copy_is_independent_when_the_original_grows() -> None:
    frontier = Frontier()
    frontier.append(hash_leaf(b"a"))
    snapshot = frontier.copy()
    frontier.append(hash_leaf(b"b"))
    assert snapshot.size == 1 and frontier.size == 2


@pytest.mark.parametrize(
    ("size", "hashes"),
    [(-1, ()), (3, (bytes(32),)), (1, ()), (2, (bytes(31),)), (0, (bytes(32),))],
    ids=["negative", "too-few", "missing", "short-hash", "extra"],
)
def test_restore_raises_malformed_frontier_when_hashes_do_not_fit(size: int, hashes: tuple[bytes, ...]) -> None:
    with pytest.raises(MalformedFrontierError):
        Frontier(size, hashes)


def test_append_raises_malformed_frontier_when_leaf_hash_is_not_32_bytes() -> None:
    with pytest.raises(MalformedFrontierError):
        Frontier().append(b"short")


def test_root_from_leaf_hashes_matches_reference_when_given_a_slice() -> None:
    assert root_from_leaf_hashes(hash_leaf(x) for x in LEAVES[8:16]) == mth(LEAVES[8:16])
    assert root_from_leaf_hashes([]) == EMPTY_ROOT
