"""Hypothesis: proofs verify for any i < n, any single-bit flip fails, frontier == reference."""

from __future__ import annotations

import pytest
import reference
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.audit.canonical import CanonicalEncodingError, canonical_bytes
from bastion.audit.compact import Frontier, root_from_leaf_hashes
from bastion.audit.hashing import hash_leaf
from bastion.audit.proof import (
    MalformedProofError,
    compute_consistency_proof,
    compute_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from bastion.errors import RootMismatchError

MAX_LEAVES = 70


def _tree(n: int) -> list[bytes]:
    return [hash_leaf(i.to_bytes(2, "big")) for i in range(n)]


def _subtree(hashes: list[bytes]):  # type: ignore[no-untyped-def]
    return lambda a, b: root_from_leaf_hashes(hashes[a:b])


def _flip(items: list[bytes], bit: int) -> list[bytes]:
    position, bit_in = divmod(bit, 256)
    out = list(items)
    mutated = bytearray(out[position])
    mutated[bit_in // 8] ^= 1 << (bit_in % 8)
    out[position] = bytes(mutated)
    return out


@settings(max_examples=150, deadline=None)
@given(st.integers(1, MAX_LEAVES).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))))
def test_inclusion_proof_verifies_when_index_below_size(case: tuple[int, int]) -> None:
    n, i = case
    hashes = _tree(n)
    proof = compute_inclusion_proof(i, n, _subtree(hashes))
    verify_inclusion(hashes[i], i, n, proof, root_from_leaf_hashes(hashes))


@settings(max_examples=150, deadline=None)
@given(st.integers(2, MAX_LEAVES).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))), st.data())
def test_inclusion_fails_with_root_mismatch_when_any_single_bit_flips(
    case: tuple[int, int], data: st.DataObject
) -> None:
    n, i = case
    hashes = _tree(n)
    proof = compute_inclusion_proof(i, n, _subtree(hashes))
    root = root_from_leaf_hashes(hashes)
    items = [hashes[i], *proof, root]
    bit = data.draw(st.integers(0, 256 * len(items) - 1))
    leaf, *mutated_proof, mutated_root = _flip(items, bit)
    with pytest.raises(RootMismatchError):
        verify_inclusion(leaf, i, n, mutated_proof, mutated_root)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, MAX_LEAVES).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_consistency_proof_verifies_when_old_size_at_most_new(case: tuple[int, int]) -> None:
    m, n = case
    hashes = _tree(n)
    proof = compute_consistency_proof(m, n, _subtree(hashes))
    verify_consistency(m, n, proof, root_from_leaf_hashes(hashes[:m]), root_from_leaf_hashes(hashes))


@settings(max_examples=150, deadline=None)
@given(st.integers(2, MAX_LEAVES).flatmap(lambda n: st.tuples(st.integers(1, n - 1), st.just(n))), st.data())
def test_consistency_fails_with_root_mismatch_when_any_single_bit_flips(
    case: tuple[int, int], data: st.DataObject
) -> None:
    m, n = case
    hashes = _tree(n)
    proof = compute_consistency_proof(m, n, _subtree(hashes))
    items = [root_from_leaf_hashes(hashes[:m]), *proof, root_from_leaf_hashes(hashes)]
    bit = data.draw(st.integers(0, 256 * len(items) - 1))
    root1, *mutated_proof, root2 = _flip(items, bit)
    with pytest.raises(RootMismatchError):
        verify_consistency(m, n, mutated_proof, root1, root2)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, MAX_LEAVES).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))), st.integers(1, 3))
def test_inclusion_fails_malformed_when_proof_length_changes(case: tuple[int, int], extra: int) -> None:
    n, i = case
    hashes = _tree(n)
    proof = compute_inclusion_proof(i, n, _subtree(hashes))
    with pytest.raises(MalformedProofError):
        verify_inclusion(hashes[i], i, n, proof + [bytes(32)] * extra, root_from_leaf_hashes(hashes))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=8), max_size=MAX_LEAVES), st.integers(0, MAX_LEAVES))
def test_frontier_root_equals_reference_when_restored_at_any_point(leaves: list[bytes], cut: int) -> None:
    cut = min(cut, len(leaves))
    frontier = Frontier()
    for leaf in leaves[:cut]:
        frontier.append(hash_leaf(leaf))
    assert frontier.root() == reference.mth(leaves[:cut])
    restored = Frontier(frontier.size, frontier.hashes)
    for leaf in leaves[cut:]:
        restored.append(hash_leaf(leaf))
    assert restored.root() == reference.mth(leaves)


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=500, deadline=None)
@given(_JSON_VALUES)
def test_canonical_bytes_equal_reference_rfc8785_when_fast_path_applies(value: object) -> None:
    try:
        expected: bytes | None = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        expected = None
    try:
        got: bytes | None = canonical_bytes(value)
    except CanonicalEncodingError:
        got = None
    assert got == expected


@pytest.mark.parametrize("value", [1e-4, -1e-4, 9.99e-5, 1e15 - 0.5, 1e15, 2.0, 0.5, 123.456, 1e-7, 1e21, -0.0])
def test_canonical_bytes_equal_reference_rfc8785_when_floats_sit_on_a_boundary(value: float) -> None:
    assert canonical_bytes({"x": value}) == rfc8785.dumps({"x": value})
