"""Proof planning/building against the reference tree, published known answers and the vectors."""

from __future__ import annotations

import base64
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import reference

from bastion.audit.compact import root_from_leaf_hashes
from bastion.audit.hashing import hash_leaf
from bastion.audit.proof import (
    MalformedProofError,
    compute_consistency_proof,
    compute_inclusion_proof,
    plan_consistency,
    plan_inclusion,
    verify_consistency,
    verify_inclusion,
)
from bastion.errors import RootMismatchError, VerificationError

REPO = Path(__file__).resolve().parents[3]
VECTORS = REPO / "tests" / "vectors"
ERRORS: dict[str, type[VerificationError]] = {
    "MalformedProofError": MalformedProofError,
    "RootMismatchError": RootMismatchError,
}
TEST_LEAVES = [
    bytes.fromhex(h)
    for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")
]
LEAF_HASHES = [hash_leaf(leaf) for leaf in TEST_LEAVES]


def _subtree(start: int, end: int) -> bytes:
    return root_from_leaf_hashes(LEAF_HASHES[start:end])


def _b64(items: list[str]) -> list[bytes]:
    return [base64.b64decode(item) for item in items]


# Happy paths of transparency-dev/merkle 417fb0c testdata/inclusion/{0..4} and consistency/{0..4}.
PUBLISHED_INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
            "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
            "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ=",
        ],
    ),
    (
        5,
        8,
        [
            "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
            "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
            "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=",
        ],
    ),
    (2, 3, ["+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU="]),
    (
        1,
        5,
        [
            "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
            "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
            "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
        ],
    ),
]
PUBLISHED_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
            "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
            "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ=",
        ],
    ),
    (
        6,
        8,
        [
            "DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
            "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
            "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=",
        ],
    ),
    (2, 5, ["Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=", "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    (
        6,
        7,
        [
            "DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
            "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
            "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=",
        ],
    ),
]


@pytest.mark.parametrize(("leaf_index", "tree_size", "want"), PUBLISHED_INCLUSION)
def test_inclusion_proof_matches_published_vector_when_built(leaf_index: int, tree_size: int, want: list[str]) -> None:
    proof = compute_inclusion_proof(leaf_index, tree_size, _subtree)
    assert proof == _b64(want)
    verify_inclusion(LEAF_HASHES[leaf_index], leaf_index, tree_size, proof, _subtree(0, tree_size))


@pytest.mark.parametrize(("size1", "size2", "want"), PUBLISHED_CONSISTENCY)
def test_consistency_proof_matches_published_vector_when_built(size1: int, size2: int, want: list[str]) -> None:
    proof = compute_consistency_proof(size1, size2, _subtree)
    assert proof == _b64(want)
    verify_consistency(size1, size2, proof, _subtree(0, size1), _subtree(0, size2))


def test_plans_match_reference_when_sizes_range_up_to_33() -> None:
    for n in range(1, 34):
        leaves = [bytes([i]) for i in range(n)]
        hashes = [hash_leaf(leaf) for leaf in leaves]

        def subtree(a: int, b: int, hashes: list[bytes] = hashes) -> bytes:
            return root_from_leaf_hashes(hashes[a:b])

        for m in range(n + 1):
            if m < n:
                assert compute_inclusion_proof(m, n, subtree) == reference.path(m, leaves)
            assert compute_consistency_proof(m, n, subtree) == reference.proof(m, leaves)


def test_plan_ranges_are_disjoint_when_a_store_batches_reads() -> None:
    for start, end in plan_inclusion(5, 8) + plan_consistency(3, 7):
        assert 0 <= start < end
    ranges = sorted(plan_inclusion(13, 21))
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(ranges))


@pytest.mark.parametrize(("leaf_index", "tree_size"), [(-1, 4), (4, 4), (0, 0)])
def test_plan_inclusion_raises_malformed_when_index_outside_tree(leaf_index: int, tree_size: int) -> None:
    with pytest.raises(MalformedProofError):
        plan_inclusion(leaf_index, tree_size)


def test_plan_consistency_raises_malformed_when_sizes_out_of_order() -> None:
    with pytest.raises(MalformedProofError):
        plan_consistency(5, 4)


def test_verify_inclusion_raises_malformed_when_leaf_hash_is_short() -> None:
    with pytest.raises(MalformedProofError):
        verify_inclusion(b"\x00" * 31, 0, 1, [], LEAF_HASHES[0])


def _load(directory: str) -> list[tuple[str, dict[str, Any]]]:
    return [(p.stem, json.loads(p.read_text())) for p in sorted((VECTORS / directory).glob("*.json"))]


def _expect(want_error: str | None) -> Any:
    if want_error is None:
        return _NoError()
    return pytest.raises(ERRORS[want_error])


class _NoError:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


@pytest.mark.parametrize(("stem", "vector"), _load("inclusion"), ids=lambda v: v if isinstance(v, str) else "")
def test_inclusion_vector_gives_recorded_outcome_when_verified(stem: str, vector: dict[str, Any]) -> None:
    proof = [bytes.fromhex(p) for p in vector["proof"]]
    with _expect(vector["want_error"]) as caught:
        verify_inclusion(
            bytes.fromhex(vector["leaf_hash"]),
            vector["leaf_index"],
            vector["tree_size"],
            proof,
            bytes.fromhex(vector["root"]),
        )
    if caught is not None:
        assert type(caught.value).__name__ == vector["want_error"], stem


@pytest.mark.parametrize(("stem", "vector"), _load("consistency"), ids=lambda v: v if isinstance(v, str) else "")
def test_consistency_vector_gives_recorded_outcome_when_verified(stem: str, vector: dict[str, Any]) -> None:
    proof = [bytes.fromhex(p) for p in vector["proof"]]
    with _expect(vector["want_error"]) as caught:
        verify_consistency(
            vector["size1"], vector["size2"], proof, bytes.fromhex(vector["root1"]), bytes.fromhex(vector["root2"])
        )
    if caught is not None:
        assert type(caught.value).__name__ == vector["want_error"], stem


def test_checked_in_vectors_match_generator_when_regenerated() -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import gen_vectors
    finally:
        sys.path.remove(str(REPO / "scripts"))
    for directory, files in gen_vectors.all_vectors().items():
        on_disk = {stem: vector for stem, vector in _load(directory)}
        assert on_disk == files, f"tests/vectors/{directory} is stale: run scripts/gen_vectors.py"
