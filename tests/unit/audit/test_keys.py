"""Key generation, the private-key and vkey encodings, loading, and the key ring format."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bastion.audit.keys import (
    KeyFormatError,
    KeyRing,
    SigningKey,
    compute_key_id,
    generate_signing_key,
    load_signing_key,
    parse_key_ring,
    parse_signing_key,
    parse_vkey,
    render_key_ring,
    render_signing_key,
    render_vkey,
)
from bastion.errors import BadSignatureError

KEY = SigningKey("gw.example/log", bytes(range(32)))


def test_key_id_is_truncated_sha256_of_name_newline_type_key_when_computed() -> None:
    import hashlib

    public = KEY.public().public_key
    assert compute_key_id(KEY.name, public) == hashlib.sha256(b"gw.example/log\n\x01" + public).digest()[:4]


def test_private_key_round_trips_when_rendered() -> None:
    text = render_signing_key(KEY)
    assert text.startswith("PRIVATE+KEY+gw.example/log+" + KEY.public().key_id.hex() + "+")
    assert parse_signing_key(text) == KEY


def test_vkey_round_trips_when_rendered() -> None:
    vkey = render_vkey(KEY.public())
    assert vkey.split("+")[:2] == ["gw.example/log", KEY.public().key_id.hex()]
    assert parse_vkey(vkey) == KEY.public()


def test_generated_key_signs_and_verifies_when_fresh() -> None:
    key = generate_signing_key("gw")
    key.public().verify_signature(b"m", key.sign(b"m"))
    with pytest.raises(BadSignatureError):
        key.public().verify_signature(b"n", key.sign(b"m"))


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\u2003b"])
def test_generate_raises_key_format_when_name_is_invalid(name: str) -> None:
    with pytest.raises(KeyFormatError):
        generate_signing_key(name)


@pytest.mark.parametrize(
    "text",
    [
        "gw+00000000+" + render_vkey(KEY.public()).split("+")[2],
        "gw+abcd",
        f"{KEY.name}+{KEY.public().key_id.hex()}+" + base64.b64encode(b"\x02" + KEY.public().public_key).decode(),
        render_vkey(KEY.public())[:-4] + "!!!!",
    ],
    ids=["wrong-id", "too-few-fields", "wrong-type-byte", "not-base64"],
)
def test_parse_vkey_raises_key_format_when_malformed(text: str) -> None:
    with pytest.raises(KeyFormatError):
        parse_vkey(text)


def test_load_reads_key_when_given_file_or_env(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(render_signing_key(KEY) + "\n")
    assert load_signing_key(path=path) == KEY
    assert load_signing_key(env_var="BASTION_AUDIT_KEY", environ={"BASTION_AUDIT_KEY": render_signing_key(KEY)}) == KEY


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"env_var": "UNSET_VAR", "environ": {}}, {"path": "/nonexistent/key"}, {"path": "x", "env_var": "Y"}],
    ids=["no-source", "unset-env", "missing-file", "both-sources"],
)
def test_load_raises_key_format_when_source_unusable(kwargs: dict[str, object]) -> None:
    with pytest.raises(KeyFormatError):
        load_signing_key(**kwargs)  # type: ignore[arg-type]


def test_key_ring_round_trips_when_keys_have_windows() -> None:
    text = f"# rotated 2026-02-01\n{render_vkey(KEY.public())} from=2026-01-01T00:00:00+00:00 until=2026-02-01T00:00:00+00:00\n"
    ring = parse_key_ring(text)
    key = ring.lookup(KEY.name, KEY.public().key_id)
    assert key is not None and key.valid_until == datetime(2026, 2, 1, tzinfo=UTC)
    assert render_key_ring(parse_key_ring(render_key_ring(ring))) == render_key_ring(ring)
    assert ring.lookup(KEY.name, b"\x00\x00\x00\x00") is None
    assert len(KeyRing([KEY.public(), KEY.public()])) == 1


@pytest.mark.parametrize("option", ["since=2026-01-01T00:00:00+00:00", "from=soon", "from=2026-01-01T00:00:00"])
def test_key_ring_raises_key_format_when_option_is_bad(option: str) -> None:
    with pytest.raises(KeyFormatError):
        parse_key_ring(f"{render_vkey(KEY.public())} {option}\n")
