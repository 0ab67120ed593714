"""The approval state machine: thresholds, who may review, closing and executing once."""

from __future__ import annotations

import dataclasses

import pytest

from bastion.approval.model import (
    Approval,
    ApprovalState,
    Review,
    ReviewRefusedError,
    TransitionError,
    Verdict,
    apply_review,
    close,
    execute,
    may_review,
)
from bastion.identity.principal import Principal

from .support import ALICE, BOB, CAROL, DAVE, MALLORY, POLICY_HASH, person

NOW = 1_000.0


def pending(**changes: object) -> Approval:
    base = Approval(
        id="apr_1", subject=ALICE.subject, issuer=ALICE.issuer, server="db", tool="drop_table",
        arguments={"table": "users"}, arguments_sha256="a" * 64, rule_id="r", policy_hash=POLICY_HASH,
        caller_reason=None, approver_groups=("dba",), min_approvals=1, deny_min=1, created_at=NOW,
        expires_at=NOW + 3600, held=True, holder="gw", run_id="run-1",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def vote(approval: Approval, who: Principal, verdict: Verdict, at: float = NOW + 1) -> Approval:
    may_review(approval, who, frozenset())
    return apply_review(approval, Review(who.subject, who.issuer, verdict, "ok", at, "api"), at)


def test_one_approval_approves_when_min_is_one() -> None:
    assert vote(pending(), BOB, Verdict.APPROVE).state is ApprovalState.APPROVED


def test_stays_pending_until_min_approvals_when_min_is_two() -> None:
    once = vote(pending(min_approvals=2), BOB, Verdict.APPROVE)
    assert once.state is ApprovalState.PENDING
    twice = vote(once, CAROL, Verdict.APPROVE)
    assert twice.state is ApprovalState.APPROVED
    assert [r.subject for r in twice.reviews] == ["bob", "carol"]


def test_any_deny_rejects_when_deny_min_is_one() -> None:
    approved_once = vote(pending(min_approvals=2), BOB, Verdict.APPROVE)
    assert vote(approved_once, CAROL, Verdict.DENY).state is ApprovalState.DENIED


def test_one_deny_does_not_reject_when_deny_min_is_two() -> None:
    one_deny = vote(pending(min_approvals=3, deny_min=2), BOB, Verdict.DENY)
    assert one_deny.state is ApprovalState.PENDING
    assert vote(one_deny, CAROL, Verdict.DENY).state is ApprovalState.DENIED


def test_votes_counted_separately_when_both_thresholds_are_two() -> None:
    after_approve = vote(pending(min_approvals=2, deny_min=2), BOB, Verdict.APPROVE)
    after_deny = vote(after_approve, CAROL, Verdict.DENY)
    assert after_deny.state is ApprovalState.PENDING
    assert vote(after_deny, DAVE, Verdict.DENY).state is ApprovalState.DENIED


def test_review_refused_when_reviewer_is_the_caller() -> None:
    caller_in_group = person("alice", "dba")
    with pytest.raises(ReviewRefusedError, match="own call"):
        may_review(pending(), caller_in_group, frozenset())


def test_review_refused_when_reviewer_is_not_in_an_approver_group() -> None:
    with pytest.raises(ReviewRefusedError, match="not in an approver group"):
        may_review(pending(), MALLORY, frozenset())


def test_same_subject_of_another_issuer_is_not_the_caller() -> None:
    other = Principal(subject="alice", issuer="https://other", groups=frozenset({"dba"}), method=ALICE.method)
    may_review(pending(), other, frozenset())


def test_default_groups_apply_when_rule_names_none() -> None:
    approval = pending(approver_groups=())
    with pytest.raises(ReviewRefusedError):
        may_review(approval, BOB, frozenset())
    may_review(approval, BOB, frozenset({"dba"}))


def test_review_refused_when_reviewer_already_voted() -> None:
    once = vote(pending(min_approvals=2), BOB, Verdict.APPROVE)
    with pytest.raises(ReviewRefusedError, match="already reviewed"):
        may_review(once, BOB, frozenset())


def test_review_refused_when_deadline_passed() -> None:
    with pytest.raises(ReviewRefusedError, match="expired"):
        vote(pending(), BOB, Verdict.APPROVE, at=NOW + 3600)


def test_review_refused_when_not_pending() -> None:
    approved = vote(pending(), BOB, Verdict.APPROVE)
    with pytest.raises(ReviewRefusedError, match="not pending"):
        apply_review(approved, Review("carol", CAROL.issuer, Verdict.DENY, None, NOW + 2, "api"), NOW + 2)


@pytest.mark.parametrize("state", [ApprovalState.EXPIRED, ApprovalState.WITHDRAWN, ApprovalState.ABANDONED])
def test_close_moves_pending_to_closing_state(state: ApprovalState) -> None:
    closed = close(pending(), state, NOW + 5)
    assert (closed.state, closed.closed_at) == (state, NOW + 5)


def test_close_refused_when_already_decided_or_not_a_closing_state() -> None:
    with pytest.raises(TransitionError):
        close(vote(pending(), BOB, Verdict.APPROVE), ApprovalState.EXPIRED, NOW + 2)
    with pytest.raises(TransitionError):
        close(pending(), ApprovalState.APPROVED, NOW + 2)


def test_execute_succeeds_once_when_approved() -> None:
    executed = execute(vote(pending(), BOB, Verdict.APPROVE), NOW + 2)
    assert executed.state is ApprovalState.EXECUTED
    with pytest.raises(TransitionError):
        execute(executed, NOW + 3)


def test_execute_refused_when_pending_denied_or_expired() -> None:
    with pytest.raises(TransitionError):
        execute(pending(), NOW + 2)
    with pytest.raises(TransitionError):
        execute(vote(pending(), BOB, Verdict.DENY), NOW + 2)
    with pytest.raises(TransitionError, match="expired"):
        execute(vote(pending(), BOB, Verdict.APPROVE), NOW + 3600)
