"""Naive recursive RFC 6962 §2.1 Merkle tree, used only to cross-check bastion.audit.*.

Transcribes MTH, PATH and PROOF/SUBPROOF literally over a list of leaf inputs; quadratic and
slow on purpose, so it shares nothing with the fast code it checks except hashing.py.
"""

from __future__ import annotations

from bastion.audit.hashing import EMPTY_ROOT, hash_children, hash_leaf


def split_point(n: int) -> int:
    """Largest power of two strictly less than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH(D[n]) over raw leaf inputs."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return hash_leaf(leaves[0])
    k = split_point(len(leaves))
    return hash_children(mth(leaves[:k]), mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[n])."""
    if len(leaves) == 1:
        return []
    k = split_point(len(leaves))
    if m < k:
        return path(m, leaves[:k]) + [mth(leaves[k:])]
    return path(m - k, leaves[k:]) + [mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    """RFC 6962 §2.1.2 SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if whole else [mth(leaves)]
    k = split_point(n)
    if m <= k:
        return subproof(m, leaves[:k], whole) + [mth(leaves[k:])]
    return subproof(m - k, leaves[k:], False) + [mth(leaves[:k])]


def proof(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.2 PROOF(m, D[n]); empty for m == 0 or m == n."""
    if m == 0 or m == len(leaves):
        return []
    return subproof(m, leaves, True)
