"""RFC 6962 §2.1 / RFC 9162 §2.1.1 Merkle tree hashing with SHA-256 and domain-separated prefixes.

Owns the leaf and interior-node hash functions and the empty-tree root; tree shapes, proofs
and the append frontier live in proof.py and compact.py.
"""

from __future__ import annotations

import hashlib

HASH_SIZE_BYTES = 32
"""Every hash in the tree is one SHA-256 digest."""

LEAF_PREFIX = b"\x00"
"""RFC 6962 §2.1: MTH({d(0)}) = SHA-256(0x00 || d(0))."""

NODE_PREFIX = b"\x01"
"""RFC 6962 §2.1: MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""RFC 6962 §2.1: the hash of an empty list is the hash of an empty string."""


def hash_leaf(data: bytes) -> bytes:
    """Return the leaf hash SHA-256(0x00 || data) (RFC 6962 §2.1)."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """Return the interior-node hash SHA-256(0x01 || left || right) (RFC 6962 §2.1)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()
