"""Known answers for RFC 6962 hashing and the test tree (transparency-dev/merkle 417fb0c, CT)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.audit.compact import root_from_leaf_hashes
from bastion.audit.hashing import EMPTY_ROOT, hash_children, hash_leaf

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "hashing"

# rfc6962/rfc6962_test.go TestRFC6962Hasher; testonly/constants.go RootHashes.
KNOWN = {
    "empty-root": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "empty-leaf": "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "leaf-L123456": "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56",
    "node-N123-N456": "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb",
    "root-size3": "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "root-size5": "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "root-size6": "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "root-size7": "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "root-size8": "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}


def _compute(vector: dict[str, object]) -> bytes:
    op = vector["op"]
    if op == "empty_root":
        return EMPTY_ROOT
    if op == "leaf":
        return hash_leaf(bytes.fromhex(str(vector["data"])))
    if op == "children":
        return hash_children(bytes.fromhex(str(vector["left"])), bytes.fromhex(str(vector["right"])))
    assert op == "root"
    leaves = vector["leaves"]
    assert isinstance(leaves, list)
    return root_from_leaf_hashes(hash_leaf(bytes.fromhex(leaf)) for leaf in leaves)


@pytest.mark.parametrize("path", sorted(VECTORS.glob("*.json")), ids=lambda p: p.stem)
def test_hash_matches_vector_when_computed(path: Path) -> None:
    vector = json.loads(path.read_text())
    assert _compute(vector).hex() == vector["want"]


@pytest.mark.parametrize(("stem", "want"), sorted(KNOWN.items()))
def test_vector_file_matches_published_known_answer_when_checked_in(stem: str, want: str) -> None:
    assert json.loads((VECTORS / f"{stem}.json").read_text())["want"] == want


def test_leaf_and_node_hashes_differ_when_inputs_concatenate() -> None:
    left, right = hash_leaf(b"Hello"), hash_leaf(b"World")
    assert hash_children(left, right) != hash_leaf(left + right)
    assert hash_children(left, right) != hash_children(right, left)
    assert hash_leaf(b"") != EMPTY_ROOT
