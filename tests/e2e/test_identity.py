"""Identity through a real gateway: JWTs against a loopback JWKS, API keys, session ownership,
RFC 9728 metadata, and the caller's credential never reaching an upstream.

Every refusal is checked twice: on the wire (HTTP status, ``WWW-Authenticate`` challenge, JSON-RPC
code) and in the audit store (a ``request`` record with outcome ``denied`` and the reason). Each
request carries its own User-Agent so its audit record can be found without relying on order.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from mcp.server.mcpserver import MCPServer
from tests.e2e.gateway import free_port, running_gateway, serve_in_thread
from tests.unit.identity.support import AUDIENCE, KeyServer, b64json, b64url, claims, mint, rsa_key

from bastion.identity.apikey import create_api_key
from bastion.jsonrpc import codes
from bastion.storage import AuditStore, RecordQuery, open_store

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

PROTOCOL_VERSION = "2025-11-25"
ACCEPT = "application/json, text/event-stream"
WAIT_S = 10.0
UPSTREAM_SECRET = "Bearer upstream-credential-of-bastion"


# -- a raw MCP client: every header and status visible ---------------------------------------------


def parse_reply(response: httpx.Response, request_id: int) -> dict[str, Any]:
    """The JSON-RPC reply to ``request_id`` in a JSON or SSE response body."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                message = json.loads(line[5:])
                if message.get("id") == request_id:
                    return dict(message)
        raise AssertionError(f"no reply to {request_id} in the SSE stream: {response.text!r}")
    return dict(response.json())


@dataclass
class RawSession:
    """One MCP session over raw httpx; ``headers`` are sent with every request."""

    http: httpx.AsyncClient
    url: str
    headers: dict[str, str]
    session_id: str | None = None
    next_id: int = 1

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        base = {"accept": ACCEPT, "content-type": "application/json", **self.headers}
        if self.session_id is not None:
            base |= {"mcp-session-id": self.session_id, "mcp-protocol-version": PROTOCOL_VERSION}
        return base | (extra or {})

    async def post(self, message: dict[str, Any], extra: dict[str, str] | None = None) -> httpx.Response:
        return await self.http.post(self.url, content=orjson.dumps(message), headers=self._headers(extra))

    async def initialize(self) -> httpx.Response:
        response = await self.post({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                       "clientInfo": {"name": "e2e-identity", "version": "1"}},
        })
        if response.status_code == 200:
            self.session_id = response.headers["mcp-session-id"]
            ack = await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
            assert ack.status_code == 202
        return response

    async def call_tool(self, name: str, arguments: dict[str, Any],
                        extra: dict[str, str] | None = None) -> tuple[httpx.Response, dict[str, Any] | None]:
        request_id = self.next_id
        self.next_id += 1
        response = await self.post({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                                    "params": {"name": name, "arguments": arguments}}, extra)
        return response, parse_reply(response, request_id) if response.status_code == 200 else None


# -- audit store reads (a second connection to the gateway's SQLite file) --------------------------


@contextlib.asynccontextmanager
async def audit_reader(workdir: str) -> AsyncIterator[AuditStore]:
    store = await open_store(f"sqlite:///{workdir}/audit.db")
    try:
        yield store
    finally:
        await store.aclose()


async def records(workdir: str, **query: Any) -> list[dict[str, Any]]:
    """Bodies of the records matching ``query`` (RecordQuery fields), oldest first."""
    async with audit_reader(workdir) as store:
        entries = await store.search_entries(RecordQuery(limit=1000, **query))
    return sorted((orjson.loads(e.body) for e in entries), key=lambda body: body["seq"])


async def refusal_record(workdir: str, user_agent: str) -> dict[str, Any]:
    """The single denied request record written for the request sent with ``user_agent``."""
    found = [b for b in await records(workdir, kind="request", outcome="denied")
             if b.get("who", {}).get("user_agent") == user_agent]
    assert len(found) == 1, found
    return found[0]


# -- the key server and the gateway ----------------------------------------------------------------


@pytest.fixture(scope="module")
def keys() -> Iterator[KeyServer]:
    with KeyServer() as server:
        server.set_keys(rsa_key().jwk)
        yield server


@dataclass(frozen=True)
class Gateway:
    url: str
    workdir: str
    issuer: str

    def endpoint(self, upstream: str = "echo") -> str:
        return f"{self.url}/servers/{upstream}/mcp"

    def token(self, **overrides: Any) -> str:
        return mint(rsa_key(), claims(self.issuer, **overrides))


def identity_config(issuer: str, **identity: Any) -> dict[str, Any]:
    return {
        "resource_url": AUDIENCE,
        "allow_anonymous": False,
        "jwt": {"issuers": [{"issuer": issuer, "jwks_url": issuer + "/jwks", "clock_skew_s": 0,
                             "jwks_refresh_min_interval_s": 1, "jwks_max_age_s": 60}]},
        "api_keys": {"enabled": True, "last_used_write_interval_s": 0},
        **identity,
    }


@pytest.fixture(scope="module")
def gateway(keys: KeyServer) -> Iterator[Gateway]:
    # An in-process HTTP upstream: a stdio child would cost an interpreter start per session.
    with capturing_upstream() as (upstream_url, _), tempfile.TemporaryDirectory(prefix="bastion-e2e-identity-") as workdir:
        config = {"identity": identity_config(keys.issuer), "upstreams": {"echo": {"url": upstream_url}}}
        with running_gateway(config, workdir=workdir) as url:
            yield Gateway(url, workdir, keys.issuer)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=WAIT_S) as client:
        yield client


def user_agent(case: str) -> str:
    return f"e2e-identity/{case}/{uuid.uuid4().hex[:8]}"


# -- valid token ------------------------------------------------------------------------------------


async def test_call_is_attributed_to_token_subject_when_jwt_is_valid(gateway: Gateway, http: httpx.AsyncClient) -> None:
    agent = user_agent("valid")
    session = RawSession(http, gateway.endpoint(), {"authorization": f"Bearer {gateway.token(sub='alice-valid')}",
                                                     "user-agent": agent})
    assert (await session.initialize()).status_code == 200
    response, reply = await session.call_tool("echo", {"text": "hello"})

    assert response.status_code == 200 and reply is not None
    assert reply["result"]["content"][0]["text"] == "hello"
    bodies = [b for b in await records(gateway.workdir, subject="alice-valid", kind="response")
              if b.get("what", {}).get("method") == "tools/call"]
    assert len(bodies) == 1
    who = bodies[0]["who"]
    assert (who["subject"], who["issuer"], who["auth_method"], who["groups"]) == (
        "alice-valid", gateway.issuer, "jwt", ["eng", "oncall"])
    assert who["user_agent"] == agent and bodies[0]["outcome"] == "ok"


# -- refused tokens ---------------------------------------------------------------------------------


def _alg_none(issuer: str) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": rsa_key().kid}
    return f"{b64json(header)}.{b64json(claims(issuer))}."


def _hs256_with_rsa_public_key(issuer: str) -> str:
    """The RS256/HS256 confusion: an HMAC keyed with the issuer's public key (which anyone has)."""
    public_pem = rsa_key().private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': rsa_key().kid})}.{b64json(claims(issuer))}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def _tampered(issuer: str) -> str:
    header, _, signature = mint(rsa_key(), claims(issuer, sub="alice")).split(".")
    return f"{header}.{b64json(claims(issuer, sub='root', groups=['admin']))}.{signature}"


def _refused_token(case: str, issuer: str) -> str:
    now = int(time.time())
    key = rsa_key()
    return {
        "expired": lambda: mint(key, claims(issuer, iat=now - 900, nbf=now - 900, exp=now - 300)),
        "not_yet_valid": lambda: mint(key, claims(issuer, nbf=now + 600, exp=now + 900)),
        "wrong_audience": lambda: mint(key, claims(issuer, aud="https://elsewhere.example.com")),
        "wrong_issuer": lambda: mint(key, claims("https://login.attacker.example")),
        "alg_none": lambda: _alg_none(issuer),
        "hs256_with_public_key": lambda: _hs256_with_rsa_public_key(issuer),
        "unknown_kid": lambda: mint(rsa_key("kid-nobody-published"), claims(issuer)),
        "tampered_payload": lambda: _tampered(issuer),
    }[case]()


REFUSALS = [
    ("expired", "expired"),
    ("not_yet_valid", "not_yet_valid"),
    ("wrong_audience", "wrong_audience"),
    ("wrong_issuer", "unknown_issuer"),
    ("alg_none", "algorithm_refused"),
    ("hs256_with_public_key", "algorithm_refused"),
    ("unknown_kid", "unknown_key"),
    ("tampered_payload", "bad_signature"),
]


@pytest.mark.parametrize(("case", "reason"), REFUSALS, ids=[case for case, _ in REFUSALS])
async def test_request_is_refused_with_challenge_and_recorded_when_token_is_bad(
    gateway: Gateway, http: httpx.AsyncClient, case: str, reason: str
) -> None:
    agent = user_agent(case)
    session = RawSession(http, gateway.endpoint(), {"authorization": f"Bearer {_refused_token(case, gateway.issuer)}",
                                                     "user-agent": agent})
    response = await session.initialize()

    assert response.status_code == 401
    assert "mcp-session-id" not in response.headers
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge
    assert f'resource_metadata="{AUDIENCE}/.well-known/oauth-protected-resource/servers/echo/mcp"' in challenge
    assert response.json()["error"]["code"] == codes.INVALID_REQUEST
    body = await refusal_record(gateway.workdir, agent)
    assert body["detail"] == {"reason": reason, "http_status": 401}
    assert body["where"]["endpoint"] == "/servers/echo/mcp"
    # Nobody was identified: the record names no subject at all (not "anonymous", and not the claim).
    assert not {"subject", "issuer", "auth_method", "groups"} & set(body["who"])


async def test_challenge_has_no_error_code_when_no_credential_is_sent(gateway: Gateway, http: httpx.AsyncClient) -> None:
    agent = user_agent("missing")
    response = await RawSession(http, gateway.endpoint(), {"user-agent": agent}).initialize()

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{AUDIENCE}/.well-known/oauth-protected-resource/servers/echo/mcp"')
    assert (await refusal_record(gateway.workdir, agent))["detail"] == {"reason": "missing_credentials", "http_status": 401}


async def test_metadata_names_endpoint_and_issuer_when_fetched_unauthenticated(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    agent = user_agent("metadata")
    response = await http.get(f"{gateway.url}/.well-known/oauth-protected-resource/servers/echo/mcp",
                              headers={"user-agent": agent})

    assert response.status_code == 200
    assert response.json() == {
        "resource": f"{AUDIENCE}/servers/echo/mcp",
        "authorization_servers": [gateway.issuer],
        "bearer_methods_supported": ["header"],
    }
    # A public document: reading it is not an MCP exchange and leaves no record.
    async with audit_reader(gateway.workdir) as store:
        entries = await store.search_entries(RecordQuery(limit=10_000))
    assert not [e for e in entries if orjson.loads(e.body).get("who", {}).get("user_agent") == agent]


# -- session ownership ------------------------------------------------------------------------------


async def test_session_is_forbidden_and_recorded_when_another_identity_presents_it(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    owner = RawSession(http, gateway.endpoint(), {"authorization": f"Bearer {gateway.token(sub='alice-owner')}"})
    assert (await owner.initialize()).status_code == 200
    agent = user_agent("hijack")
    thief_headers = {"authorization": f"Bearer {gateway.token(sub='mallory')}", "user-agent": agent}
    response, _ = await owner.call_tool("echo", {"text": "steal"}, extra=thief_headers)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == codes.SESSION_FORBIDDEN
    body = await refusal_record(gateway.workdir, agent)
    assert body["who"]["subject"] == "mallory"
    assert body["detail"]["http_status"] == 403
    assert body["correlation"]["session_id"] == owner.session_id
    # The owner's session is untouched.
    response, reply = await owner.call_tool("echo", {"text": "still mine"})
    assert response.status_code == 200 and reply is not None
    assert reply["result"]["content"][0]["text"] == "still mine"


# -- API keys ---------------------------------------------------------------------------------------


async def test_api_key_works_in_both_headers_and_is_refused_when_revoked(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    async with audit_reader(gateway.workdir) as store:
        plaintext, record = await create_api_key(store.api_keys, "svc-reporter", ["bots"], None)

    for header in ({"authorization": f"Bearer {plaintext}"}, {"x-api-key": plaintext}):
        session = RawSession(http, gateway.endpoint(), header)
        assert (await session.initialize()).status_code == 200
        response, reply = await session.call_tool("echo", {"text": "by key"})
        assert response.status_code == 200 and reply is not None
        assert reply["result"]["content"][0]["text"] == "by key"
    calls = [b for b in await records(gateway.workdir, subject="svc-reporter", kind="response")
             if b.get("what", {}).get("method") == "tools/call"]
    assert len(calls) == 2
    assert {(b["who"]["auth_method"], b["who"]["client_id"], b["who"]["issuer"]) for b in calls} == {
        ("api_key", record.key_id, "urn:bastion:api-key")}
    assert calls[0]["who"]["groups"] == ["bots"]

    async with audit_reader(gateway.workdir) as store:
        assert await store.api_keys.revoke_api_key(record.key_id, time.time())
    agent = user_agent("revoked")
    response = await RawSession(http, gateway.endpoint(), {"x-api-key": plaintext, "user-agent": agent}).initialize()

    assert response.status_code == 401
    assert 'resource_metadata="' in response.headers["www-authenticate"]
    assert (await refusal_record(gateway.workdir, agent))["detail"] == {"reason": "api_key_revoked", "http_status": 401}


# -- the caller's credential stays at the gateway ---------------------------------------------------


class HeaderCapture:
    """ASGI wrapper recording the headers of every request that reaches the wrapped app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[dict[str, str]] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            with self._lock:
                self.seen.append({k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]})
        await self.app(scope, receive, send)


@contextlib.contextmanager
def capturing_upstream() -> Iterator[tuple[str, HeaderCapture]]:
    """An SDK MCP server (Streamable HTTP, JSON replies) on loopback that records request headers."""
    mcp = MCPServer(name="capture", version="1.0.0", log_level="WARNING")

    @mcp.tool(description="Return the given text unchanged.")
    def echo(text: str) -> str:
        return text

    capture = HeaderCapture(mcp.streamable_http_app(host="127.0.0.1", json_response=True))
    port = free_port()
    with serve_in_thread(capture, port, WAIT_S):
        yield f"http://127.0.0.1:{port}/mcp", capture


async def test_upstream_gets_configured_headers_not_callers_token_when_call_is_forwarded(
    keys: KeyServer, http: httpx.AsyncClient
) -> None:
    token = mint(rsa_key(), claims(keys.issuer, sub="alice-forward"))
    with capturing_upstream() as (upstream_url, capture), tempfile.TemporaryDirectory() as workdir:
        upstream = {"url": upstream_url, "headers": {"Authorization": UPSTREAM_SECRET, "X-Bastion-Tenant": "e2e"}}
        config = {"identity": identity_config(keys.issuer), "upstreams": {"cap": upstream}}
        with running_gateway(config, workdir=workdir) as url:
            session = RawSession(http, f"{url}/servers/cap/mcp",
                                 {"authorization": f"Bearer {token}", "x-custom-client": "leak-me"})
            assert (await session.initialize()).status_code == 200
            response, reply = await session.call_tool("echo", {"text": "through"})
        calls = [b for b in await records(workdir, subject="alice-forward", kind="response")
                 if b.get("what", {}).get("method") == "tools/call"]

    assert response.status_code == 200 and reply is not None
    assert reply["result"]["content"][0]["text"] == "through"
    assert capture.seen, "the upstream received nothing"
    for headers in capture.seen:
        assert headers.get("authorization") == UPSTREAM_SECRET
        assert headers.get("x-bastion-tenant") == "e2e"
        assert "x-custom-client" not in headers
        assert not any(token in value or token.split(".")[1] in value for value in headers.values())
    assert len(calls) == 1 and calls[0]["outcome"] == "ok" and calls[0]["where"]["upstream"] == "cap"
    assert calls[0]["who"]["auth_method"] == "jwt"
