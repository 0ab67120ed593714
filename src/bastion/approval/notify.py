"""Telling approvers: a signed generic webhook and a Slack-compatible incoming-webhook message.

Owns message bodies, the HMAC-SHA256 signature header and bounded retries with exponential
backoff. Running the sends as tasks (and recording whether they arrived) is service.py's job.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx
import orjson

from bastion.approval.model import Approval
from bastion.errors import BastionError

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Bastion-Signature"
"""``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``; receivers should reject old ``t``."""


class NotifyError(BastionError):
    """Raised when a notice could not be delivered after every retry."""


class Notifier(Protocol):
    """One channel approvers listen on."""

    name: str

    async def send_notice(self, approval: Approval) -> None:
        """Deliver a notice of a new pending approval.

        Raises:
            NotifyError: every attempt failed.
        """


@dataclass(frozen=True, slots=True)
class Retry:
    """Bounded retries: ``attempts`` tries, waiting ``first_delay_s`` doubling up to ``max_delay_s``."""

    attempts: int = 5
    first_delay_s: float = 0.5
    max_delay_s: float = 8.0
    timeout_s: float = 10.0


def compute_signature(secret: bytes, body: bytes, timestamp: int) -> str:
    """Return the signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: bytes, body: bytes, header: str, now: float, tolerance_s: float = 300.0) -> None:
    """Check a signature header as a receiver would.

    Raises:
        NotifyError: malformed header, stale timestamp or wrong MAC.
    """
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
        given = fields["v1"]
    except (KeyError, ValueError) as exc:
        raise NotifyError("malformed signature header") from exc
    if abs(now - timestamp) > tolerance_s:
        raise NotifyError("signature timestamp outside tolerance")
    expected = compute_signature(secret, body, timestamp).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, given):
        raise NotifyError("signature does not match")


def render_webhook_body(approval: Approval, link: str | None) -> bytes:
    """Return the generic webhook JSON: the approval's public fields (masked arguments only)."""
    return orjson.dumps({
        "type": "approval.requested",
        "approval_id": approval.id,
        "caller": {"subject": approval.subject, "issuer": approval.issuer},
        "server": approval.server,
        "tool": approval.tool,
        "arguments": approval.arguments,
        "arguments_sha256": approval.arguments_sha256,
        "rule_id": approval.rule_id,
        "policy_hash": approval.policy_hash,
        "reason": approval.caller_reason,
        "approvers": list(approval.approver_groups),
        "min_approvals": approval.min_approvals,
        "created_at": approval.created_at,
        "expires_at": approval.expires_at,
        "link": link,
    })


def render_slack_body(approval: Approval, link: str | None) -> bytes:
    """Return a Slack incoming-webhook message (``text`` plus one section block) with a review link."""
    groups = ", ".join(approval.approver_groups) or "approvers"
    lines = [
        f"*Approval needed* `{approval.id}` ({groups})",
        f"`{approval.subject}` wants to call `{approval.server}/{approval.tool}` (rule `{approval.rule_id}`)",
    ]
    if approval.caller_reason:
        lines.append(f"Reason: {approval.caller_reason}")
    lines.append(f"<{link}|Review it>" if link else f"Review with: bastion approvals show {approval.id}")
    text = "\n".join(lines)
    return orjson.dumps({"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]})


class _Poster:
    """POSTs one body with bounded retries; 2xx is success, 4xx other than 408/429 is final."""

    def __init__(self, client: httpx.AsyncClient, retry: Retry, sleep: Callable[[float], Awaitable[None]]) -> None:
        self._client = client
        self._retry = retry
        self._sleep = sleep

    async def post(self, url: str, body: bytes, headers: Callable[[], Mapping[str, str]]) -> None:
        delay = self._retry.first_delay_s
        for attempt in range(1, self._retry.attempts + 1):
            try:
                response = await self._client.post(url, content=body, headers=dict(headers()),
                                                   timeout=self._retry.timeout_s)
                if response.is_success:
                    return
                final = 400 <= response.status_code < 500 and response.status_code not in (408, 429)
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                final, problem = False, type(exc).__name__
            log.warning("notification attempt %d/%d failed: %s", attempt, self._retry.attempts, problem)
            if final or attempt == self._retry.attempts:
                raise NotifyError(f"notification failed after {attempt} attempt(s): {problem}")
            await self._sleep(delay)
            delay = min(delay * 2, self._retry.max_delay_s)


class WebhookNotifier:
    """Generic webhook: JSON body signed with HMAC-SHA256 in ``X-Bastion-Signature``."""

    name = "webhook"

    def __init__(self, url: str, secret: bytes, client: httpx.AsyncClient, *, link_base: str | None = None,
                 retry: Retry = Retry(), sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        self._url = url
        self._secret = secret
        self._link_base = link_base
        self._poster = _Poster(client, retry, sleep)
        self._clock = clock

    async def send_notice(self, approval: Approval) -> None:
        """POST the signed notice (re-signed per attempt). Raises: NotifyError."""
        body = render_webhook_body(approval, review_link(self._link_base, approval.id))

        def headers() -> dict[str, str]:
            return {"content-type": "application/json",
                    SIGNATURE_HEADER: compute_signature(self._secret, body, int(self._clock()))}

        await self._poster.post(self._url, body, headers)


class SlackNotifier:
    """Slack-compatible incoming webhook (also Mattermost, Rocket.Chat) with a link to the review page."""

    name = "slack"

    def __init__(self, url: str, client: httpx.AsyncClient, *, link_base: str | None = None,
                 retry: Retry = Retry(), sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._url = url
        self._link_base = link_base
        self._poster = _Poster(client, retry, sleep)

    async def send_notice(self, approval: Approval) -> None:
        """POST the message. Raises: NotifyError."""
        body = render_slack_body(approval, review_link(self._link_base, approval.id))
        await self._poster.post(self._url, body, lambda: {"content-type": "application/json"})


def review_link(base: str | None, approval_id: str) -> str | None:
    """Return ``<base>/approvals/<id>`` (the console's review page), or None without a base URL."""
    return f"{base.rstrip('/')}/approvals/{approval_id}" if base else None

