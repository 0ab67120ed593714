"""Write the audit test vectors under tests/vectors/ from the naive reference tree.

Each file is one case: a happy path or a named mutation with the error kind a correct verifier
must raise. Expected values come from tests/unit/audit/reference.py (RFC 6962 §2.1 transcribed),
never from the code under test. Run: ``.venv/bin/python scripts/gen_vectors.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "unit" / "audit"))

import reference

from bastion.audit.checkpoint import (
    Checkpoint,
    render_retention_extension,
    render_time_extension,
    sign_checkpoint,
    sign_note,
)
from bastion.audit.compact import Frontier
from bastion.audit.hashing import EMPTY_ROOT, hash_children, hash_leaf
from bastion.audit.keys import SigningKey, render_vkey

VECTORS = ROOT / "tests" / "vectors"

LEAF_INPUTS = [
    bytes.fromhex(h)
    for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")
]
"""The 8 leaf inputs of transparency-dev/merkle testonly.LeafInputs (and CT's C++ test tree)."""

INCLUSION_CASES = [(0, 1), (0, 8), (5, 8), (2, 3), (1, 5), (6, 7), (3, 4)]
CONSISTENCY_CASES = [(1, 1), (1, 8), (6, 8), (2, 5), (6, 7), (3, 7), (4, 8), (0, 8)]

MALFORMED = "MalformedProofError"
MISMATCH = "RootMismatchError"

Vectors = dict[str, dict[str, dict[str, Any]]]


def flip(data: bytes, bit: int) -> bytes:
    """Flip one bit (0 = least significant bit of the first byte)."""
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def hexes(items: list[bytes]) -> list[str]:
    """Hex-encode a list of hashes."""
    return [item.hex() for item in items]


def root(size: int) -> bytes:
    """Reference root of the first ``size`` test leaves."""
    return reference.mth(LEAF_INPUTS[:size])


def hashing_vectors() -> dict[str, dict[str, Any]]:
    """Known answers from transparency-dev/merkle rfc6962_test.go and testonly/constants.go."""
    out: dict[str, dict[str, Any]] = {
        "empty-root": {"desc": "RFC 6962 §2.1 empty tree", "op": "empty_root", "want": EMPTY_ROOT.hex()},
        "empty-leaf": {"desc": "leaf hash of the empty string", "op": "leaf", "data": "", "want": hash_leaf(b"").hex()},
        "leaf-L123456": {
            "desc": "leaf hash",
            "op": "leaf",
            "data": b"L123456".hex(),
            "want": hash_leaf(b"L123456").hex(),
        },
        "node-N123-N456": {
            "desc": "interior node over two raw strings",
            "op": "children",
            "left": b"N123".hex(),
            "right": b"N456".hex(),
            "want": hash_children(b"N123", b"N456").hex(),
        },
    }
    for size in range(len(LEAF_INPUTS) + 1):
        out[f"root-size{size}"] = {
            "desc": f"root of the first {size} test leaves",
            "op": "root",
            "leaves": hexes(LEAF_INPUTS[:size]),
            "want": root(size).hex(),
        }
    return out


def _inclusion_kind(leaf_index: int, tree_size: int, proof: list[bytes]) -> str:
    if not 0 <= leaf_index < tree_size or any(len(p) != 32 for p in proof):
        return MALFORMED
    if len(proof) != len(reference.path(leaf_index, [b""] * tree_size)):
        return MALFORMED
    return MISMATCH


def inclusion_vectors(shape_check: Callable[[int, int, list[bytes], bytes, bytes], bool]) -> dict[str, dict[str, Any]]:
    """Happy paths plus mutations modelled on transparency-dev/merkle testdata/inclusion."""
    out: dict[str, dict[str, Any]] = {}
    for leaf_index, tree_size in INCLUSION_CASES:
        leaves = LEAF_INPUTS[:tree_size]
        good = reference.path(leaf_index, leaves)
        leaf = hash_leaf(leaves[leaf_index])
        base = {
            "leaf_index": leaf_index,
            "tree_size": tree_size,
            "leaf_hash": leaf,
            "proof": good,
            "root": root(tree_size),
        }
        cases: dict[str, tuple[dict[str, Any], str | None]] = {"happy-path": ({}, None)}
        for j in range(len(good)):
            cases[f"flip-proof{j}-bit3"] = ({"proof": good[:j] + [flip(good[j], 3)] + good[j + 1 :]}, MISMATCH)
        cases["flip-leaf-bit0"] = ({"leaf_hash": flip(leaf, 0)}, MISMATCH)
        cases["flip-root-bit255"] = ({"root": flip(root(tree_size), 255)}, MISMATCH)
        cases["empty-root"] = ({"root": EMPTY_ROOT}, MISMATCH)
        cases["inserted-component"] = ({"proof": [leaf] + good}, MALFORMED)
        cases["trailing-garbage"] = ({"proof": good + [bytes(32)]}, MALFORMED)
        cases["short-component"] = ({"proof": good[:-1] + [good[-1][:31]]} if good else {"proof": [b"\x00"]}, MALFORMED)
        if good:
            cases["removed-component"] = ({"proof": good[:-1]}, MALFORMED)
        for name, index, size in (
            ("leaf-index-plus-1", leaf_index + 1, tree_size),
            ("leaf-index-minus-1", leaf_index - 1, tree_size),
            ("leaf-index-xor-2", leaf_index ^ 2, tree_size),
            ("tree-size-times-2", leaf_index, tree_size * 2),
            ("tree-size-div-2", leaf_index, tree_size // 2),
        ):
            cases[name] = ({"leaf_index": index, "tree_size": size}, _inclusion_kind(index, size, good))
        for name, (change, kind) in cases.items():
            vector = base | change
            if kind is not None and not shape_check(
                vector["leaf_index"], vector["tree_size"], vector["proof"], vector["leaf_hash"], vector["root"]
            ):
                continue  # the mutation still describes a true statement (e.g. leaf 5 of 7 vs of 8)
            out[f"i{leaf_index}-n{tree_size}-{name}"] = {
                "desc": f"{name} (leaf {leaf_index} of {tree_size})",
                "leaf_index": vector["leaf_index"],
                "tree_size": vector["tree_size"],
                "leaf_hash": vector["leaf_hash"].hex(),
                "proof": hexes(vector["proof"]),
                "root": vector["root"].hex(),
                "want_error": kind,
            }
    return out


def _consistency_kind(size1: int, size2: int, proof: list[bytes]) -> str:
    if not 0 <= size1 <= size2 or any(len(p) != 32 for p in proof):
        return MALFORMED
    # Proof length depends only on the sizes, so placeholder leaves give the reference length.
    want = len(reference.proof(size1, [b""] * size2))
    return MALFORMED if len(proof) != want else MISMATCH


def consistency_vectors() -> dict[str, dict[str, Any]]:
    """Happy paths plus mutations modelled on transparency-dev/merkle testdata/consistency."""
    out: dict[str, dict[str, Any]] = {}
    for size1, size2 in CONSISTENCY_CASES:
        good = reference.proof(size1, LEAF_INPUTS[:size2])
        base = {"size1": size1, "size2": size2, "proof": good, "root1": root(size1), "root2": root(size2)}
        cases: dict[str, tuple[dict[str, Any], str | None]] = {"happy-path": ({}, None)}
        for j in range(len(good)):
            cases[f"flip-proof{j}-bit4"] = ({"proof": good[:j] + [flip(good[j], 4)] + good[j + 1 :]}, MISMATCH)
        cases["flip-root1-bit0"] = ({"root1": flip(root(size1), 0)}, MISMATCH)
        cases["flip-root2-bit0"] = ({"root2": flip(root(size2), 0)}, MISMATCH)
        cases["trailing-garbage"] = ({"proof": good + [bytes(32)]}, MALFORMED)
        cases["preceding-root2"] = ({"proof": [root(size2)] + good}, MALFORMED)
        cases["short-component"] = ({"proof": good[:-1] + [good[-1][:31]]} if good else {"proof": [b"\x00"]}, MALFORMED)
        if good:
            cases["truncated-proof"] = ({"proof": good[:-1]}, MALFORMED)
            cases["empty-proof"] = ({"proof": []}, MALFORMED)
        if size1 != size2:
            cases["swapped-roots"] = ({"root1": root(size2), "root2": root(size1)}, MISMATCH)
        for name, s1, s2 in (
            ("size1-plus-1", size1 + 1, size2),
            ("size1-minus-1", size1 - 1, size2),
            ("size2-times-2", size1, size2 * 2),
            ("size2-div-2", size1, size2 // 2),
        ):
            cases[name] = ({"size1": s1, "size2": s2}, _consistency_kind(s1, s2, good))
        for name, (change, kind) in cases.items():
            if size1 == 0 and kind == MISMATCH and ("root2" in change or "size2" in change):
                continue  # every tree extends the empty tree: root2 and size2 are unconstrained
            vector = base | change
            out[f"m{size1}-n{size2}-{name}"] = {
                "desc": f"{name} (size {size1} to {size2})",
                "size1": vector["size1"],
                "size2": vector["size2"],
                "proof": hexes(vector["proof"]),
                "root1": vector["root1"].hex(),
                "root2": vector["root2"].hex(),
                "want_error": kind,
            }
    return out


def _inclusion_differs(leaf_index: int, tree_size: int, proof: list[bytes], leaf_hash: bytes, want_root: bytes) -> bool:
    """True unless the (mutated) claim is still a true statement about the reference tree."""
    if not 0 <= leaf_index < tree_size or tree_size > len(LEAF_INPUTS):
        return True
    leaves = LEAF_INPUTS[:tree_size]
    return not (
        hash_leaf(leaves[leaf_index]) == leaf_hash
        and reference.path(leaf_index, leaves) == proof
        and reference.mth(leaves) == want_root
    )


def _test_key(label: str, name: str) -> SigningKey:
    """A deterministic key so the checked-in signatures never change (Ed25519 is deterministic)."""
    return SigningKey(name, hashlib.sha256(label.encode()).digest())


def checkpoint_vectors() -> dict[str, dict[str, Any]]:
    """Signed checkpoints: happy paths and hostile notes, each with the error a verifier must raise."""
    origin = "gw.example/log"
    key = _test_key("bastion vector key", origin)
    other = _test_key("bastion other key", origin)
    ring = render_vkey(key.public())
    windowed = f"{ring} from=2026-01-01T00:00:00+00:00 until=2026-06-01T00:00:00+00:00"
    stamp = render_time_extension(datetime(2026, 7, 1, 12, 0, tzinfo=UTC))
    head = Checkpoint(origin, 8, root(8), (stamp,))
    frontier = Frontier()
    for leaf in LEAF_INPUTS[:6]:
        frontier.append(hash_leaf(leaf))
    retention = Checkpoint(origin, 6, frontier.root(), (stamp, render_retention_extension(frontier)))
    good = sign_checkpoint(head, key)
    text, sig_block = good.split("\n\n")
    sig_b64 = sig_block.split(" ")[-1].strip()
    flipped = base64.b64encode(flip(base64.b64decode(sig_b64), 40)).decode()
    forged_text = text.replace("\n8\n", "\n9\n", 1) + "\n"
    hostile: dict[str, tuple[bytes, str, str | None]] = {
        "happy-path": (good.encode(), ring, None),
        "happy-path-retention": (sign_checkpoint(retention, key).encode(), ring, None),
        "happy-path-unknown-extra-signature": (
            (good + sign_note(text + "\n", other).split("\n\n")[1]).encode(),
            ring,
            None,
        ),
        "flip-signature-bit40": (good.replace(sig_b64, flipped).encode(), ring, "BadSignatureError"),
        "modified-tree-size": ((forged_text + "\n" + sig_block).encode(), ring, "BadSignatureError"),
        "signed-by-unknown-key": (sign_checkpoint(head, other).encode(), ring, "UnknownKeyError"),
        "key-outside-window": (good.encode(), windowed, "KeyOutsideWindowError"),
        "retention-frontier-mismatch": (
            sign_checkpoint(
                Checkpoint(origin, 6, root(6), (stamp, render_retention_extension(Frontier(6, (root(4), root(5)))))),
                key,
            ).encode(),
            ring,
            "RootMismatchError",
        ),
        "retention-seq-differs-from-size": (
            sign_checkpoint(
                Checkpoint(origin, 6, root(6), (stamp, "bastion-retention 5 " + base64.b64encode(root(5)).decode())),
                key,
            ).encode(),
            ring,
            "MalformedNoteError",
        ),
        "hyphen-instead-of-em-dash": (good.replace("\u2014", "--").encode(), ring, "MalformedNoteError"),
        "no-blank-line": (good.replace("\n\n", "\n").encode(), ring, "MalformedNoteError"),
        "crlf-line-endings": (good.replace("\n", "\r\n").encode(), ring, "MalformedNoteError"),
        "missing-final-newline": (good.rstrip("\n").encode(), ring, "MalformedNoteError"),
        "not-utf8": (good.encode().replace(b"gw.example", b"gw\xff"), ring, "MalformedNoteError"),
        "tree-size-leading-zero": (good.replace("\n8\n", "\n08\n").encode(), ring, "MalformedNoteError"),
        "tree-size-negative": (good.replace("\n8\n", "\n-8\n").encode(), ring, "MalformedNoteError"),
        "root-31-bytes": (
            good.replace(base64.b64encode(root(8)).decode(), base64.b64encode(root(8)[:31]).decode()).encode(),
            ring,
            "MalformedNoteError",
        ),
        "root-not-base64": (
            good.replace(base64.b64encode(root(8)).decode()[:4], "!!!!", 1).encode(),
            ring,
            "MalformedNoteError",
        ),
        "empty-origin": (good.replace(origin + "\n8", "\n8", 1).encode(), ring, "MalformedNoteError"),
        "signature-too-short": (good.replace(sig_b64, "AAAAAA==").encode(), ring, "MalformedNoteError"),
        "key-name-with-plus": (
            good.replace(f"\u2014 {origin}", f"\u2014 {origin}+x").encode(),
            ring,
            "MalformedNoteError",
        ),
        "too-many-signatures": ((good + (sig_block.strip() + "\n") * 100).encode(), ring, "MalformedNoteError"),
        "body-only": (text.encode() + b"\n", ring, "MalformedNoteError"),
    }
    out: dict[str, dict[str, Any]] = {}
    for name, (note, key_ring, kind) in hostile.items():
        out[name] = {
            "desc": name.replace("-", " "),
            "note_hex": note.hex(),
            "key_ring": key_ring + "\n",
            "want_error": kind,
        }
    out["happy-path"]["want"] = {"origin": origin, "tree_size": 8, "root_hash": root(8).hex(), "extensions": [stamp]}
    return out


def all_vectors() -> Vectors:
    """Every vector file, by directory then stem."""
    return {
        "hashing": hashing_vectors(),
        "inclusion": inclusion_vectors(_inclusion_differs),
        "consistency": consistency_vectors(),
        "checkpoint": checkpoint_vectors(),
    }


def main() -> None:
    """Rewrite tests/vectors/*/ from scratch."""
    for directory, files in all_vectors().items():
        folder = VECTORS / directory
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.json"):
            old.unlink()
        for stem, vector in files.items():
            (folder / f"{stem}.json").write_text(
                json.dumps(vector, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
    print(f"wrote {sum(len(f) for f in all_vectors().values())} vectors under {VECTORS}")


if __name__ == "__main__":
    main()
