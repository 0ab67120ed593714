"""SQL text and row codecs shared by the SQLite and PostgreSQL approval stores.

Owns column lists, the placeholder-agnostic statements and Approval/Grant <-> row conversion
(JSON text for arguments, groups and reviews). Executing them is each store's job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from bastion.approval.model import Approval, ApprovalState, CallKey, Grant, Review, Verdict

Placeholder = Callable[[int], str]

APPROVAL_COLUMNS = (
    "id, subject, issuer, server, tool, arguments, arguments_sha256, rule_id, policy_hash, caller_reason,"
    " approver_groups, min_approvals, deny_min, created_at, expires_at, held, holder, run_id, grant_s, state,"
    " reviews, closed_at, executed_at, version"
)
GRANT_COLUMNS = "id, approval_id, subject, issuer, server, tool, policy_hash, created_at, expires_at"
_BINDING = "subject = {0} AND issuer = {1} AND server = {2} AND tool = {3}"


def _marks(p: Placeholder, count: int, start: int = 1) -> str:
    return ", ".join(p(i) for i in range(start, start + count))


def insert_approval_sql(p: Placeholder) -> str:
    """INSERT of one approval row."""
    return f"INSERT INTO approvals ({APPROVAL_COLUMNS}) VALUES ({_marks(p, 24)})"


def replace_approval_sql(p: Placeholder) -> str:
    """Compare-and-set UPDATE: parameters are the mutable fields, the id, then the expected version."""
    return (
        f"UPDATE approvals SET state = {p(1)}, reviews = {p(2)}, closed_at = {p(3)}, executed_at = {p(4)},"
        f" version = {p(5)} WHERE id = {p(6)} AND version = {p(7)}"
    )


def replace_approval_params(a: Approval) -> tuple[Any, ...]:
    """Parameters for ``replace_approval_sql``; ``a.version`` is the new version."""
    return (a.state.value, _reviews_json(a.reviews), a.closed_at, a.executed_at, a.version, a.id, a.version - 1)


def find_approval_sql(p: Placeholder) -> str:
    """Oldest approval of a state binding one call and expiring after a time."""
    return (
        f"SELECT {APPROVAL_COLUMNS} FROM approvals WHERE {_BINDING.format(p(1), p(2), p(3), p(4))}"
        f" AND arguments_sha256 = {p(5)} AND policy_hash = {p(6)} AND state = {p(7)} AND expires_at > {p(8)}"
        " ORDER BY created_at, id LIMIT 1"
    )


def find_approval_params(key: CallKey, state: ApprovalState, now: float) -> tuple[Any, ...]:
    """Parameters for ``find_approval_sql``."""
    return (key.subject, key.issuer, key.server, key.tool, key.arguments_sha256, key.policy_hash, state.value, now)


def find_grant_sql(p: Placeholder) -> str:
    """The longest-lived grant covering a caller, tool and policy hash."""
    return (
        f"SELECT {GRANT_COLUMNS} FROM approval_grants WHERE {_BINDING.format(p(1), p(2), p(3), p(4))}"
        f" AND policy_hash = {p(5)} AND expires_at > {p(6)} ORDER BY expires_at DESC, id LIMIT 1"
    )


def find_grant_params(key: CallKey, now: float) -> tuple[Any, ...]:
    """Parameters for ``find_grant_sql``."""
    return (key.subject, key.issuer, key.server, key.tool, key.policy_hash, now)


def insert_grant_sql(p: Placeholder) -> str:
    """INSERT of one grant row."""
    return f"INSERT INTO approval_grants ({GRANT_COLUMNS}) VALUES ({_marks(p, 9)})"


def grant_row(g: Grant) -> tuple[Any, ...]:
    """Row values in ``GRANT_COLUMNS`` order."""
    return (g.id, g.approval_id, g.subject, g.issuer, g.server, g.tool, g.policy_hash, g.created_at, g.expires_at)


def grant_from_row(row: Sequence[Any]) -> Grant:
    """Grant from a ``GRANT_COLUMNS`` row."""
    return Grant(*row)


def approval_row(a: Approval) -> tuple[Any, ...]:
    """Row values in ``APPROVAL_COLUMNS`` order (``held`` as bool; SQLite stores it as 0/1)."""
    return (
        a.id, a.subject, a.issuer, a.server, a.tool, orjson.dumps(a.arguments).decode(), a.arguments_sha256,
        a.rule_id, a.policy_hash, a.caller_reason, orjson.dumps(list(a.approver_groups)).decode(), a.min_approvals,
        a.deny_min, a.created_at, a.expires_at, a.held, a.holder, a.run_id, a.grant_s, a.state.value,
        _reviews_json(a.reviews), a.closed_at, a.executed_at, a.version,
    )


def approval_from_row(row: Sequence[Any]) -> Approval:
    """Approval from an ``APPROVAL_COLUMNS`` row."""
    (id_, subject, issuer, server, tool, arguments, sha, rule_id, policy_hash, reason, groups, min_approvals,
     deny_min, created_at, expires_at, held, holder, run_id, grant_s, state, reviews, closed_at, executed_at,
     version) = row
    return Approval(
        id=id_, subject=subject, issuer=issuer, server=server, tool=tool, arguments=orjson.loads(arguments),
        arguments_sha256=sha, rule_id=rule_id, policy_hash=policy_hash, caller_reason=reason,
        approver_groups=tuple(orjson.loads(groups)), min_approvals=min_approvals, deny_min=deny_min,
        created_at=created_at, expires_at=expires_at, held=bool(held), holder=holder, run_id=run_id,
        grant_s=grant_s, state=ApprovalState(state), reviews=_reviews_from_json(reviews), closed_at=closed_at,
        executed_at=executed_at, version=version,
    )


def _reviews_json(reviews: Sequence[Review]) -> str:
    return orjson.dumps([
        {"subject": r.subject, "issuer": r.issuer, "verdict": r.verdict.value, "reason": r.reason,
         "decided_at": r.decided_at, "via": r.via}
        for r in reviews
    ]).decode()


def _reviews_from_json(text: str) -> tuple[Review, ...]:
    return tuple(
        Review(r["subject"], r["issuer"], Verdict(r["verdict"]), r["reason"], r["decided_at"], r["via"])
        for r in orjson.loads(text)
    )
