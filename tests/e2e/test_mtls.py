"""mTLS through a real ``python -m bastion serve``: uvicorn terminates TLS, verifies the client
certificate against ``tls.client_ca_file``, and the certificate's subject becomes the caller.

A throwaway PKI is made with ``cryptography`` per module: a trusted CA with a server certificate
and a client certificate (subject DN plus a SPIFFE URI SAN), and a rogue CA with a client
certificate of the same name. Two gateways run: ``client_cert: required`` with the DN as subject,
and ``client_cert: optional`` with the SPIFFE ID as subject and API keys as another credential.
Every accepted call is checked on the wire and in the audit store; every refused handshake is
checked as a TLS alert and as nothing recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tests.e2e.gateway import PYTHON, ROOT, complete_config, echo_upstream, free_port
from tests.e2e.test_identity import RawSession, records, refusal_record

from bastion.app import preflight
from bastion.config import parse_settings
from bastion.errors import ConfigError
from bastion.identity.apikey import create_api_key
from bastion.storage import RecordQuery, open_store
from bastion.transport.tls import TlsH11Protocol, tls_protocol_class

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

WAIT_S = 20.0
CLIENT_DN = "CN=planner,OU=agents,O=Acme Corp\\, Inc."  # RFC 4514: the comma in O is escaped
SPIFFE_ID = "spiffe://acme.test/ns/agents/sa/planner"


# -- a throwaway PKI --------------------------------------------------------------------------------


def _name(common_name: str, *more: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([*(x509.NameAttribute(oid, value) for oid, value in more),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def write(self, directory: Path, stem: str) -> tuple[str, str]:
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
        return str(cert_path), str(key_path)


def issue(subject: x509.Name, issuer: Issued | None, *, ca: bool = False,
          sans: list[x509.GeneralName] | None = None, usage: x509.ObjectIdentifier | None = None) -> Issued:
    """A certificate for a fresh P-256 key, signed by ``issuer`` (self-signed when None)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer.cert.subject if issuer else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        assert issuer is not None
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                                        critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return Issued(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)


@dataclass(frozen=True)
class Pki:
    ca_file: str
    server: tuple[str, str]
    client: tuple[str, str]
    rogue_client: tuple[str, str]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = issue(_name("Bastion Test CA"), None, ca=True)
    rogue_ca = issue(_name("Bastion Test CA"), None, ca=True)  # same name, other key: only the key counts
    client_name = _name("planner", (NameOID.ORGANIZATION_NAME, "Acme Corp, Inc."), (NameOID.ORGANIZATIONAL_UNIT_NAME, "agents"))
    client_sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(SPIFFE_ID)]
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    server = issue(_name("bastion"), ca, usage=ExtendedKeyUsageOID.SERVER_AUTH,
                   sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    return Pki(
        ca_file=str(ca_file),
        server=server.write(directory, "server"),
        client=issue(client_name, ca, sans=client_sans, usage=ExtendedKeyUsageOID.CLIENT_AUTH).write(directory, "client"),
        rogue_client=issue(client_name, rogue_ca, sans=client_sans,
                           usage=ExtendedKeyUsageOID.CLIENT_AUTH).write(directory, "rogue-client"),
    )


def client_context(pki: Pki, cert: tuple[str, str] | None, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """Trusts the test CA; presents ``cert`` (certificate file, key file) when given; only ``version`` if given."""
    context = ssl.create_default_context(cafile=pki.ca_file)
    if version is not None:
        context.minimum_version = context.maximum_version = version
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


# -- the gateway as a child process -----------------------------------------------------------------


@dataclass
class TlsGateway:
    """``python -m bastion serve`` with ``tls:`` configured; ``url`` is https."""

    url: str
    workdir: str
    proc: subprocess.Popen[bytes]

    def endpoint(self) -> str:
        return f"{self.url}/servers/echo/mcp"


def _tls_config(pki: Pki, port: int, workdir: Path, client_cert: str, client_subject: str) -> dict[str, Any]:
    config = complete_config({"upstreams": {"echo": echo_upstream("echo")}}, port, str(workdir))
    config["identity"] = {
        "resource_url": f"https://127.0.0.1:{port}",
        "allow_anonymous": False,
        "api_keys": {"enabled": True, "last_used_write_interval_s": 0},
        "mtls": {"enabled": True},
    }
    config["tls"] = {"certfile": pki.server[0], "keyfile": pki.server[1], "client_ca_file": pki.ca_file,
                     "client_cert": client_cert, "client_subject": client_subject}
    return config


@contextlib.contextmanager
def serving(pki: Pki, workdir: Path, client_cert: str, client_subject: str) -> Iterator[TlsGateway]:
    port = free_port()
    config_path = workdir / "bastion.yaml"
    config_path.write_text(yaml.safe_dump(_tls_config(pki, port, workdir, client_cert, client_subject)), encoding="utf-8")
    log_path = workdir / "gateway.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen([PYTHON, "-m", "bastion", "serve", "--config", str(config_path)],
                                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    gateway = TlsGateway(f"https://127.0.0.1:{port}", str(workdir), proc)
    try:
        deadline = time.monotonic() + WAIT_S
        with httpx.Client(verify=client_context(pki, pki.client), timeout=1.0) as http:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"gateway exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if http.get(f"{gateway.url}/healthz").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gateway not up in {WAIT_S}s: {log_path.read_text()[-2000:]}")
                time.sleep(0.05)  # polling another process's readiness; bounded by the deadline
        yield gateway
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(WAIT_S)


@pytest.fixture(scope="module")
def required(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsGateway]:
    """``client_cert: required``; the subject is the certificate's RFC 4514 DN."""
    with serving(pki, tmp_path_factory.mktemp("mtls-required"), "required", "dn") as gateway:
        yield gateway


@pytest.fixture(scope="module")
def optional(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsGateway]:
    """``client_cert: optional``; the subject is the certificate's SPIFFE ID; API keys also work."""
    with serving(pki, tmp_path_factory.mktemp("mtls-optional"), "optional", "spiffe_id") as gateway:
        yield gateway


def user_agent(case: str) -> str:
    return f"e2e-mtls/{case}/{uuid.uuid4().hex[:8]}"


async def echo_call_record(gateway: TlsGateway, agent: str) -> dict[str, Any]:
    found = [b for b in await records(gateway.workdir, kind="response")
             if b.get("what", {}).get("method") == "tools/call" and b["who"].get("user_agent") == agent]
    assert len(found) == 1, found
    return found[0]


async def entry_count(gateway: TlsGateway) -> int:
    store = await open_store(f"sqlite:///{gateway.workdir}/audit.db")
    try:
        return len(await store.search_entries(RecordQuery(limit=10_000)))
    finally:
        await store.aclose()


async def call_echo(gateway: TlsGateway, http: httpx.AsyncClient, agent: str,
                    headers: dict[str, str] | None = None) -> dict[str, Any]:
    """initialize + tools/call echo; returns the audit record of the call."""
    session = RawSession(http, gateway.endpoint(), {"user-agent": agent, **(headers or {})})
    assert (await session.initialize()).status_code == 200
    response, reply = await session.call_tool("echo", {"text": agent})
    assert response.status_code == 200 and reply is not None
    assert reply["result"]["content"][0]["text"] == agent
    return await echo_call_record(gateway, agent)


def first_bytes(url: str, context: ssl.SSLContext) -> bytes:
    """Handshake, send one request, return the first bytes of the answer (b"" if the server closed).

    Raises:
        ssl.SSLError: the handshake itself failed.
    """
    host, port = url.removeprefix("https://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=WAIT_S) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(f"GET /healthz HTTP/1.1\r\nhost: {host}\r\n\r\n".encode())
        try:
            return tls.recv(1024)
        except (ssl.SSLEOFError, ConnectionResetError):
            return b""


async def assert_handshake_refused(gateway: TlsGateway, pki: Pki, cert: tuple[str, str] | None) -> None:
    """A client presenting ``cert`` never gets an HTTP answer, and nothing reaches the audit log.

    TLS 1.2: the server checks the client certificate before its Finished, so the handshake
    itself fails. TLS 1.3 (RFC 8446 §4.4.2.4): the client's side of the handshake completes before
    the server has checked its certificate; the server then closes without answering.
    """
    before = await entry_count(gateway)
    async with httpx.AsyncClient(verify=client_context(pki, cert), timeout=WAIT_S) as http:
        with pytest.raises(httpx.TransportError):
            await RawSession(http, gateway.endpoint(), {"user-agent": user_agent("refused")}).initialize()
    with pytest.raises(ssl.SSLError):
        await asyncio.to_thread(first_bytes, gateway.url, client_context(pki, cert, ssl.TLSVersion.TLSv1_2))
    assert await asyncio.to_thread(first_bytes, gateway.url, client_context(pki, cert, ssl.TLSVersion.TLSv1_3)) == b""
    assert await entry_count(gateway) == before


# -- client_cert: required ------------------------------------------------------------------------


async def test_call_is_attributed_to_certificate_dn_when_client_cert_is_verified(required: TlsGateway, pki: Pki) -> None:
    agent = user_agent("dn")
    async with httpx.AsyncClient(verify=client_context(pki, pki.client), timeout=WAIT_S) as http:
        body = await call_echo(required, http, agent)

    who = body["who"]
    assert (who["subject"], who["issuer"], who["auth_method"]) == (CLIENT_DN, "urn:bastion:mtls", "mtls")
    assert body["outcome"] == "ok"


async def test_handshake_is_refused_when_no_client_cert_and_cert_is_required(required: TlsGateway, pki: Pki) -> None:
    await assert_handshake_refused(required, pki, None)


async def test_handshake_is_refused_when_client_cert_is_from_unknown_ca(required: TlsGateway, pki: Pki) -> None:
    await assert_handshake_refused(required, pki, pki.rogue_client)


async def test_credential_wins_and_is_still_checked_when_cert_is_also_presented(required: TlsGateway, pki: Pki) -> None:
    agent = user_agent("bad-key-with-cert")
    async with httpx.AsyncClient(verify=client_context(pki, pki.client), timeout=WAIT_S) as http:
        response = await RawSession(http, required.endpoint(), {"user-agent": agent,
                                                                "x-api-key": "bst_0000000000000000_nope"}).initialize()

    assert response.status_code == 401  # a bad explicit credential is refused, never downgraded to the cert
    assert (await refusal_record(required.workdir, agent))["detail"]["http_status"] == 401


# -- client_cert: optional ------------------------------------------------------------------------


async def test_call_is_attributed_to_spiffe_id_when_client_subject_is_spiffe_id(optional: TlsGateway, pki: Pki) -> None:
    agent = user_agent("spiffe")
    async with httpx.AsyncClient(verify=client_context(pki, pki.client), timeout=WAIT_S) as http:
        body = await call_echo(optional, http, agent)

    assert (body["who"]["subject"], body["who"]["auth_method"]) == (SPIFFE_ID, "mtls")


async def test_request_is_refused_with_401_when_cert_is_optional_and_absent(optional: TlsGateway, pki: Pki) -> None:
    agent = user_agent("no-cert")
    async with httpx.AsyncClient(verify=client_context(pki, None), timeout=WAIT_S) as http:
        response = await RawSession(http, optional.endpoint(), {"user-agent": agent}).initialize()

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer resource_metadata=")
    assert (await refusal_record(optional.workdir, agent))["detail"] == {"reason": "missing_credentials",
                                                                        "http_status": 401}


async def test_api_key_is_accepted_when_cert_is_optional_and_absent(optional: TlsGateway, pki: Pki) -> None:
    store = await open_store(f"sqlite:///{optional.workdir}/audit.db")
    try:
        plaintext, record = await create_api_key(store.api_keys, "svc-reporter", ["bots"], None)
    finally:
        await store.aclose()
    agent = user_agent("api-key")
    async with httpx.AsyncClient(verify=client_context(pki, None), timeout=WAIT_S) as http:
        body = await call_echo(optional, http, agent, {"x-api-key": plaintext})

    assert (body["who"]["subject"], body["who"]["auth_method"], body["who"]["client_id"]) == (
        "svc-reporter", "api_key", record.key_id)


async def test_handshake_is_refused_when_optional_cert_is_from_unknown_ca(optional: TlsGateway, pki: Pki) -> None:
    # "optional" means a certificate may be absent, never that a bad one is accepted.
    await assert_handshake_refused(optional, pki, pki.rogue_client)


# -- the protocol hook itself, under both uvicorn HTTP implementations --------------------------------


class ScopeCapture:
    """ASGI app answering 204 and keeping the TLS extension of every request."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any] | None] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.seen.append(scope.get("extensions", {}).get("tls"))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@contextlib.contextmanager
def hook_server(pki: Pki, protocol: type[Any]) -> Iterator[tuple[str, ScopeCapture]]:
    app = ScopeCapture()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", http=protocol,
        ssl_certfile=pki.server[0], ssl_keyfile=pki.server[1], ssl_ca_certs=pki.ca_file, ssl_cert_reqs=ssl.CERT_OPTIONAL,
    ))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"https://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(WAIT_S)


@pytest.mark.parametrize("protocol", [TlsH11Protocol, tls_protocol_class()], ids=["h11", "auto"])
def test_every_request_on_a_connection_carries_tls_extension_when_hook_is_installed(pki: Pki, protocol: type[Any]) -> None:
    with hook_server(pki, protocol) as (url, app):
        with httpx.Client(verify=client_context(pki, pki.client), timeout=WAIT_S) as http:
            assert [http.get(url).status_code for _ in range(2)] == [204, 204]  # one keep-alive connection
        with httpx.Client(verify=client_context(pki, None), timeout=WAIT_S) as http:
            assert http.get(url).status_code == 204

    with_cert, again, without = app.seen
    assert with_cert is not None and without is not None
    assert (with_cert["client_cert_name"], with_cert["client_cert_uris"]) == (CLIENT_DN, (SPIFFE_ID,))
    assert len(with_cert["client_cert_chain"]) == 1 and with_cert["client_cert_chain"][0].startswith("-----BEGIN")
    assert with_cert["tls_version"] in {0x0303, 0x0304} and with_cert["client_cert_error"] is None
    assert again == with_cert and again is not with_cert  # a copy per request
    assert (without["client_cert_name"], without["client_cert_chain"]) == (None, ())


# -- configuration -----------------------------------------------------------------------------------


def test_config_is_refused_when_client_cert_is_asked_without_ca(pki: Pki, tmp_path: Path) -> None:
    config = _tls_config(pki, free_port(), tmp_path, "required", "dn")
    del config["tls"]["client_ca_file"]
    with pytest.raises(ConfigError, match=r"tls: .*needs client_ca_file"):
        parse_settings(config)


def test_preflight_is_refused_when_key_does_not_match_certificate(pki: Pki, tmp_path: Path) -> None:
    config = _tls_config(pki, free_port(), tmp_path, "required", "dn")
    config["tls"]["keyfile"] = pki.client[1]
    with pytest.raises(ConfigError, match=r"tls: cannot load certfile"):
        preflight(parse_settings(config))


def test_preflight_is_refused_when_client_ca_file_is_missing(pki: Pki, tmp_path: Path) -> None:
    config = _tls_config(pki, free_port(), tmp_path, "optional", "dn")
    config["tls"]["client_ca_file"] = str(tmp_path / "absent.pem")
    with pytest.raises(ConfigError, match=r"tls: cannot load client_ca_file"):
        preflight(parse_settings(config))
