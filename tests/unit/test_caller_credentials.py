"""Which per-caller upstream credential a caller gets: subject glob (policy's syntax), issuer, groups."""

from __future__ import annotations

import pytest

from bastion.config import CallerCredential
from bastion.identity.principal import AuthMethod, Principal


def caller(subject: str, issuer: str = "https://idp-a.example", groups: frozenset[str] = frozenset()) -> Principal:
    return Principal(subject=subject, issuer=issuer, groups=groups, method=next(iter(AuthMethod)))


@pytest.mark.parametrize(
    ("entry", "who", "expected"),
    [
        (CallerCredential(subject="alice"), caller("alice"), True),
        (CallerCredential(subject="svc-*"), caller("svc-build"), True),
        (CallerCredential(subject="svc-?"), caller("svc-ab"), False),
        # Brackets are literal, as in policy subjects (fnmatch would read a character class).
        (CallerCredential(subject="admin[12]"), caller("admin1"), False),
        (CallerCredential(subject="CN=x[1]"), caller("CN=x[1]"), True),
        # A subject is unique only with its issuer: the same name from another issuer is someone else.
        (CallerCredential(subject="alice", issuer="https://idp-a.example"), caller("alice", "https://idp-b.example"), False),
        (CallerCredential(subject="alice", issuer="https://idp-a.example"), caller("alice"), True),
        (CallerCredential(groups=["ops"]), caller("bob", groups=frozenset({"dev"})), False),
        (CallerCredential(groups=["ops"]), caller("bob", groups=frozenset({"ops"})), True),
    ],
)
def test_credential_matches_only_the_callers_it_names(entry: CallerCredential, who: Principal, expected: bool) -> None:
    assert entry.matches(who) is expected
