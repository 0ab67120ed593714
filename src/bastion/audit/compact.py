"""The append frontier (compact range [0, size)) of an RFC 6962 Merkle tree.

Owns O(log n) appends and the root of the tree so far, in a shape a writer can persist and
restore after a restart (``size`` plus the perfect-subtree roots). Proof planning lives in
proof.py; storage of the leaves is the store's business.
"""

from __future__ import annotations

from collections.abc import Iterable

from bastion.audit.hashing import EMPTY_ROOT, HASH_SIZE_BYTES, hash_children
from bastion.errors import VerificationError


class MalformedFrontierError(VerificationError):
    """Raised when a persisted frontier's hashes do not fit its size."""


class Frontier:
    """Roots of the perfect subtrees that cover leaves [0, size), largest (leftmost) first.

    For size = 2**a + 2**b + ... (a > b > ...) there is one hash per set bit of ``size``: the
    root of the perfect subtree over the next 2**a, 2**b, ... leaves (RFC 6962 §2.1 splits every
    tree at the largest power of two below its size, so these subtrees are exactly its left
    spine's full children).
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: tuple[bytes, ...] = ()) -> None:
        """Restore a frontier; preconditions: ``len(hashes) == popcount(size)``, 32-byte hashes.

        Raises:
            MalformedFrontierError: the size is negative or the hashes do not fit it.
        """
        if size < 0:
            raise MalformedFrontierError(f"negative frontier size {size}")
        if len(hashes) != size.bit_count():
            raise MalformedFrontierError(f"size {size} needs {size.bit_count()} hashes, got {len(hashes)}")
        if any(len(h) != HASH_SIZE_BYTES for h in hashes):
            raise MalformedFrontierError(f"frontier hashes must be {HASH_SIZE_BYTES} bytes")
        self._size = size
        self._hashes = list(hashes)

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """Perfect-subtree roots, largest first; persist these with ``size``."""
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> None:
        """Append one leaf hash (already ``hash_leaf``-ed).

        Each trailing 1 bit of the old size is a perfect subtree of the same height as the one
        being carried up, so they merge, exactly like binary increment.

        Raises:
            MalformedFrontierError: ``leaf_hash`` is not 32 bytes.
        """
        if len(leaf_hash) != HASH_SIZE_BYTES:
            raise MalformedFrontierError(f"leaf hash must be {HASH_SIZE_BYTES} bytes, got {len(leaf_hash)}")
        carry = leaf_hash
        size = self._size
        while size & 1:
            carry = hash_children(self._hashes.pop(), carry)
            size >>= 1
        self._hashes.append(carry)
        self._size += 1

    def root(self) -> bytes:
        """Return MTH of leaves [0, size): fold the subtree roots right to left (RFC 6962 §2.1)."""
        if not self._hashes:
            return EMPTY_ROOT
        node = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            node = hash_children(left, node)
        return node

    def copy(self) -> Frontier:
        """Return an independent frontier with the same state."""
        return Frontier(self._size, tuple(self._hashes))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Frontier) and other._size == self._size and other._hashes == self._hashes

    def __repr__(self) -> str:
        return f"Frontier(size={self._size}, root={self.root().hex()[:16]}…)"


def root_from_leaf_hashes(leaf_hashes: Iterable[bytes]) -> bytes:
    """Return MTH of a list of leaf hashes treated as its own tree (RFC 6962 §2.1 MTH(D[a:b])).

    Raises:
        MalformedFrontierError: a leaf hash is not 32 bytes.
    """
    frontier = Frontier()
    for leaf_hash in leaf_hashes:
        frontier.append(leaf_hash)
    return frontier.root()
