"""Inclusion and consistency proofs for RFC 6962 / RFC 9162 Merkle trees: plan, build, verify.

Owns which subtree hashes a proof needs (as leaf ranges, so a store can batch its reads),
assembling a proof from a caller-supplied ``subtree_hash(start, end)``, and verifying proofs.
Pure: no storage, no I/O. Hashing is audit/hashing.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bastion.audit.hashing import EMPTY_ROOT, HASH_SIZE_BYTES, hash_children
from bastion.errors import RootMismatchError, VerificationError

LeafRange = tuple[int, int]
"""Half-open leaf interval [start, end); its hash is MTH(D[start:end]) (RFC 6962 §2.1)."""

SubtreeHash = Callable[[int, int], bytes]
"""Return MTH(D[start:end]) for the current log, e.g. ``root_from_leaf_hashes(store.read(start, end))``."""


class MalformedProofError(VerificationError):
    """Raised when a proof's shape (length, element size, sizes, index) cannot fit the claim."""


def _split(size: int) -> int:
    """Largest power of two strictly below ``size`` (RFC 6962 §2.1 "k"); ``size >= 2``."""
    return 1 << ((size - 1).bit_length() - 1)


def plan_inclusion(leaf_index: int, tree_size: int) -> list[LeafRange]:
    """Return the leaf ranges whose hashes form PATH(leaf_index, D[tree_size]), leaf side first.

    RFC 6962 §2.1.1 / RFC 9162 §2.1.3.1. Preconditions: ``0 <= leaf_index < tree_size``.

    Raises:
        MalformedProofError: the preconditions do not hold.
    """
    if not 0 <= leaf_index < tree_size:
        raise MalformedProofError(f"leaf index {leaf_index} outside tree of size {tree_size}")
    ranges: list[LeafRange] = []
    start, end, index = 0, tree_size, leaf_index
    while end - start > 1:
        k = _split(end - start)
        if index < k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start, index = start + k, index - k
    ranges.reverse()
    return ranges


def plan_consistency(size1: int, size2: int) -> list[LeafRange]:
    """Return the leaf ranges whose hashes form PROOF(size1, D[size2]), deepest first.

    RFC 6962 §2.1.2 SUBPROOF / RFC 9162 §2.1.4.1. Preconditions: ``0 <= size1 <= size2``; the
    proof is empty when ``size1`` is 0 or equals ``size2``.

    Raises:
        MalformedProofError: the preconditions do not hold.
    """
    if not 0 <= size1 <= size2:
        raise MalformedProofError(f"no consistency proof from size {size1} to size {size2}")
    if size1 in (0, size2):
        return []
    ranges: list[LeafRange] = []
    start, end, m, whole = 0, size2, size1, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        # SUBPROOF(m, D[m], false): the old tree's own subtree root is not known to the verifier.
        ranges.append((start, end))
    ranges.reverse()
    return ranges


def compute_inclusion_proof(leaf_index: int, tree_size: int, subtree_hash: SubtreeHash) -> list[bytes]:
    """Return the inclusion proof for ``leaf_index`` in the tree of ``tree_size`` leaves.

    Raises:
        MalformedProofError: ``leaf_index`` is outside the tree.
    """
    return [subtree_hash(start, end) for start, end in plan_inclusion(leaf_index, tree_size)]


def compute_consistency_proof(size1: int, size2: int, subtree_hash: SubtreeHash) -> list[bytes]:
    """Return the consistency proof from the tree of ``size1`` leaves to that of ``size2``.

    Raises:
        MalformedProofError: ``size1 > size2`` or a size is negative.
    """
    return [subtree_hash(start, end) for start, end in plan_consistency(size1, size2)]


def _check_elements(proof: Sequence[bytes]) -> None:
    for position, element in enumerate(proof):
        if len(element) != HASH_SIZE_BYTES:
            raise MalformedProofError(f"proof element {position} is {len(element)} bytes, not {HASH_SIZE_BYTES}")


def _inclusion_length(leaf_index: int, tree_size: int) -> int:
    # Levels where the paths to leaf_index and to the last leaf differ need a sibling each;
    # above them, each set bit of the shifted index is a left sibling on the right border.
    inner = (leaf_index ^ (tree_size - 1)).bit_length()
    return inner + (leaf_index >> inner).bit_count()


def root_from_inclusion_proof(leaf_hash: bytes, leaf_index: int, tree_size: int, proof: Sequence[bytes]) -> bytes:
    """Return the root implied by ``proof`` for ``leaf_hash`` at ``leaf_index`` (RFC 9162 §2.1.3.2).

    Preconditions: ``0 <= leaf_index < tree_size``; ``proof`` has exactly the RFC's length.

    Raises:
        MalformedProofError: index out of range, wrong proof length or a non-32-byte element.
    """
    if not 0 <= leaf_index < tree_size:
        raise MalformedProofError(f"leaf index {leaf_index} outside tree of size {tree_size}")
    if len(leaf_hash) != HASH_SIZE_BYTES:
        raise MalformedProofError(f"leaf hash is {len(leaf_hash)} bytes, not {HASH_SIZE_BYTES}")
    _check_elements(proof)
    want = _inclusion_length(leaf_index, tree_size)
    if len(proof) != want:
        raise MalformedProofError(f"inclusion proof has {len(proof)} elements, want {want}")
    # RFC 9162 §2.1.3.2 steps 2-5; the length check above guarantees sn reaches 0 exactly at the end.
    fn, sn, node = leaf_index, tree_size - 1, leaf_hash
    for element in proof:
        if fn & 1 or fn == sn:
            node = hash_children(element, node)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            node = hash_children(node, element)
        fn, sn = fn >> 1, sn >> 1
    return node


def verify_inclusion(leaf_hash: bytes, leaf_index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Verify that ``leaf_hash`` is leaf ``leaf_index`` of the tree of ``tree_size`` with ``root``.

    Raises:
        MalformedProofError: the proof cannot fit the claim (see ``root_from_inclusion_proof``).
        RootMismatchError: the proof is well-formed but leads to another root.
    """
    computed = root_from_inclusion_proof(leaf_hash, leaf_index, tree_size, proof)
    if computed != root:
        raise RootMismatchError(root, computed)


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Verify that the tree of ``size2`` with ``root2`` extends the tree of ``size1`` with ``root1``.

    RFC 9162 §2.1.4.2. Preconditions: ``0 <= size1 <= size2``; an empty proof when ``size1`` is 0
    (then ``root1`` must be the empty root) or equals ``size2`` (then the roots must be equal).

    Raises:
        MalformedProofError: sizes out of order, wrong proof length or a non-32-byte element.
        RootMismatchError: the proof is well-formed but does not lead to ``root1`` or ``root2``.
    """
    if not 0 <= size1 <= size2:
        raise MalformedProofError(f"no consistency proof from size {size1} to size {size2}")
    _check_elements(proof)
    if size1 in (0, size2):
        if proof:
            raise MalformedProofError(f"consistency proof from {size1} to {size2} must be empty")
        expected1 = EMPTY_ROOT if size1 == 0 else root2
        if root1 != expected1:
            raise RootMismatchError(expected1, root1)
        return
    # RFC 9162 §2.1.4.2 step 1: a power-of-two old tree is itself a node of the new one.
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    trailing = (size1 & -size1).bit_length() - 1
    want = _inclusion_length(size1 - 1, size2) - trailing + 1
    if len(path) != want:
        raise MalformedProofError(f"consistency proof has {len(proof)} elements, want {want - len(path) + len(proof)}")
    # Steps 2-7.
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for element in path[1:]:
        if fn & 1 or fn == sn:
            fr = hash_children(element, fr)
            sr = hash_children(element, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = hash_children(sr, element)
        fn, sn = fn >> 1, sn >> 1
    # Step 8.
    if fr != root1:
        raise RootMismatchError(root1, fr)
    if sr != root2:
        raise RootMismatchError(root2, sr)
