"""Policy: who may call which tool, prompt or resource, with what arguments, and on what terms.

Public names only; the rule language and evaluation order are documented in docs/policy.md.
"""

from bastion.policy.check import check_policy_file, check_policy_text
from bastion.policy.engine import PolicyEngine, compute_policy_hash, denial_error
from bastion.policy.explain import Explanation, Outcome, RuleTrace, build_test_request, explain, render_explanation
from bastion.policy.model import (
    Action,
    ApprovalMode,
    ApprovalRequirement,
    Confirm,
    Decision,
    Kind,
    PolicyRequest,
    RateLimit,
    RateLimitKey,
    ToolChangeMode,
)
from bastion.policy.pins import (
    PendingChange,
    PinState,
    PinStore,
    ToolPin,
    ToolReview,
    compare_pin,
    compute_tool_hash,
    diff_tool_definitions,
    make_pin,
    review_tools,
    store_review,
    tool_changed_error,
)
from bastion.policy.ratelimit import RateLimiter
from bastion.policy.reload import PolicyWatcher
from bastion.policy.settings import PolicySettings, Problem, validate_policy

__all__ = [
    "Action",
    "ApprovalMode",
    "ApprovalRequirement",
    "Confirm",
    "Decision",
    "Explanation",
    "Kind",
    "Outcome",
    "PendingChange",
    "PinState",
    "PinStore",
    "PolicyEngine",
    "PolicyRequest",
    "PolicySettings",
    "PolicyWatcher",
    "Problem",
    "RateLimit",
    "RateLimitKey",
    "RateLimiter",
    "RuleTrace",
    "ToolChangeMode",
    "ToolPin",
    "ToolReview",
    "build_test_request",
    "check_policy_file",
    "check_policy_text",
    "compare_pin",
    "compute_policy_hash",
    "compute_tool_hash",
    "denial_error",
    "diff_tool_definitions",
    "explain",
    "make_pin",
    "render_explanation",
    "review_tools",
    "store_review",
    "tool_changed_error",
    "validate_policy",
]
