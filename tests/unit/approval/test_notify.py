"""Notifiers: HMAC signature, bounded retries with backoff, Slack body, and the service's notified record."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from bastion.approval.model import Step
from bastion.approval.notify import (
    SIGNATURE_HEADER,
    NotifyError,
    Retry,
    SlackNotifier,
    WebhookNotifier,
    compute_signature,
    verify_signature,
)

from .support import Clock, Recorder, call, make_service

pytestmark = pytest.mark.anyio
SECRET = b"s3cret"


class Hook:
    """An httpx handler answering with the given statuses in turn; keeps every request."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.statuses.pop(0))


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def test_signature_verifies_and_rejects_tampering() -> None:
    header = compute_signature(SECRET, b'{"a":1}', 1000)
    verify_signature(SECRET, b'{"a":1}', header, now=1000)
    with pytest.raises(NotifyError, match="does not match"):
        verify_signature(SECRET, b'{"a":2}', header, now=1000)
    with pytest.raises(NotifyError, match="tolerance"):
        verify_signature(SECRET, b'{"a":1}', header, now=2000)
    with pytest.raises(NotifyError, match="malformed"):
        verify_signature(SECRET, b'{"a":1}', "v1=abc", now=1000)


async def test_webhook_retries_with_backoff_then_delivers_signed_body() -> None:
    hook, sleeps = Hook(500, 503, 200), Sleeps()
    approval = await make_service().request(call({"table": "users"}))
    async with httpx.AsyncClient(transport=httpx.MockTransport(hook)) as client:
        notifier = WebhookNotifier("https://hooks.example/x", SECRET, client, link_base="https://bastion.example",
                                   retry=Retry(attempts=3, first_delay_s=1, max_delay_s=1.5), sleep=sleeps,
                                   clock=Clock(1000))
        await notifier.send_notice(approval)
    assert len(hook.requests) == 3 and sleeps.delays == [1, 1.5]
    last = hook.requests[-1]
    verify_signature(SECRET, last.content, last.headers[SIGNATURE_HEADER], now=1000)
    body = orjson.loads(last.content)
    assert body["approval_id"] == approval.id and body["link"] == f"https://bastion.example/approvals/{approval.id}"


async def test_webhook_gives_up_after_bounded_attempts_and_on_client_error() -> None:
    approval = await make_service().request(call({"table": "users"}))
    failing, sleeps = Hook(500, 500), Sleeps()
    async with httpx.AsyncClient(transport=httpx.MockTransport(failing)) as client:
        with pytest.raises(NotifyError, match="after 2"):
            await WebhookNotifier("https://h/x", SECRET, client, retry=Retry(attempts=2), sleep=sleeps).send_notice(approval)
    gone = Hook(404)
    async with httpx.AsyncClient(transport=httpx.MockTransport(gone)) as client:
        with pytest.raises(NotifyError, match="after 1"):
            await WebhookNotifier("https://h/x", SECRET, client, sleep=sleeps).send_notice(approval)


async def test_slack_message_links_to_review_page() -> None:
    hook = Hook(200)
    approval = await make_service().request(call({"table": "users"}))
    async with httpx.AsyncClient(transport=httpx.MockTransport(hook)) as client:
        await SlackNotifier("https://hooks.slack.test/T", client, link_base="https://b.example/").send_notice(approval)
    text = orjson.loads(hook.requests[0].content)["text"]
    assert f"<https://b.example/approvals/{approval.id}|Review it>" in text and "drop_table" in text


async def test_service_records_notified_when_running() -> None:
    hook, recorder = Hook(500, 200), Recorder()
    async with httpx.AsyncClient(transport=httpx.MockTransport(hook)) as client:
        notifier = WebhookNotifier("https://h/x", SECRET, client, sleep=Sleeps())
        service = make_service(recorder=recorder, notifiers=[notifier])
        async with asyncio.timeout(5), service.running():
            approval = await service.request(call({"table": "users"}))
            notified = await recorder.wait_for(Step.NOTIFIED)
    assert notified.detail is not None
    assert (notified.detail["approval_id"], notified.detail["delivered"], notified.detail["channel"]) == (
        approval.id, True, "webhook")


async def test_request_refused_when_notifiers_configured_but_not_running() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(Hook())) as client:
        service = make_service(notifiers=[WebhookNotifier("https://h/x", SECRET, client)])
        with pytest.raises(Exception, match="not running"):
            await service.request(call({"table": "users"}))
