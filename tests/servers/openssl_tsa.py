"""A local RFC 3161 time-stamping authority for tests: OpenSSL's reference responder over HTTP.

No public TSA is reachable from the test environment, so the tests run a real one here:
``openssl ts -reply`` (OpenSSL 3) signs each query, behind a tiny HTTP server on 127.0.0.1 that
speaks the RFC 3161 §3.4 HTTP transport (POST ``application/timestamp-query``, answer
``application/timestamp-reply``). ``make_tsa_pki`` writes a throw-away CA and a TSA certificate
(extendedKeyUsage critical timeStamping, as RFC 3161 §2.3 requires) with ``cryptography``, plus an
OpenSSL configuration whose ``[tsa]`` section points at them.

Deliberately ignores: TSA policies beyond one default, accuracy/ordering options and any
persistence besides OpenSSL's serial file.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TSA_POLICY = "1.3.6.1.4.1.4146.2.3"
"""The policy OID the test TSA issues tokens under (any OID works; this one is a public TSA's)."""


@dataclass(frozen=True, slots=True)
class TsaPki:
    """The files of one test TSA: its root CA, its signing certificate and key, its OpenSSL config."""

    directory: Path
    root_cert: Path
    tsa_cert: Path
    tsa_key: Path
    config: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bastion tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_tsa_pki(directory: Path, name: str = "Test TSA") -> TsaPki:
    """Write a CA, a TSA certificate it issued (EKU timeStamping, critical) and an ``openssl ts`` config."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC) - timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"{name} Root CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    tsa_key = ec.generate_private_key(ec.SECP256R1())
    tsa = (
        x509.CertificateBuilder()
        .subject_name(_name(name)).issuer_name(ca_name).public_key(tsa_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pki = TsaPki(directory, directory / "root.pem", directory / "tsa.pem", directory / "tsa.key", directory / "tsa.cnf")
    pki.root_cert.write_bytes(_pem(ca))
    pki.tsa_cert.write_bytes(_pem(tsa))
    pki.tsa_key.write_bytes(
        tsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (directory / "serial").write_text("01\n")
    # No "certs =" chain: OpenSSL would embed it as an unsorted SET, which rfc3161-client's strict
    # DER parser refuses; with certReq the token still carries the signer's certificate.
    pki.config.write_text(
        "[tsa]\n"
        "default_tsa = tsa_config\n"
        "[tsa_config]\n"
        f"dir = {directory}\n"
        "serial = $dir/serial\n"
        "signer_cert = $dir/tsa.pem\n"
        "signer_key = $dir/tsa.key\n"
        "signer_digest = sha256\n"
        f"default_policy = {TSA_POLICY}\n"
        "digests = sha256, sha384, sha512\n"
        "accuracy = secs:1\n"
        "ordering = no\n"
        "tsa_name = yes\n"
        "ess_cert_id_chain = no\n"
        "ess_cert_id_alg = sha256\n"
    )
    return pki


class OpenSslTsa:
    """Serves ``POST /`` by running ``openssl ts -reply``; use as a context manager (a thread serves it)."""

    def __init__(self, pki: TsaPki, port: int = 0) -> None:
        self.pki = pki
        self.queries: list[bytes] = []
        """Every query received, in order (DER TimeStampReq)."""
        self._lock = threading.Lock()  # openssl increments one serial file per reply
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="openssl-tsa", daemon=True)

    @property
    def url(self) -> str:
        """Where to POST queries."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def reply(self, query: bytes) -> bytes:
        """Return OpenSSL's DER TimeStampResp to a DER TimeStampReq."""
        with self._lock, tempfile.TemporaryDirectory() as tmp:
            query_file, reply_file = Path(tmp) / "query.tsq", Path(tmp) / "reply.tsr"
            query_file.write_bytes(query)
            subprocess.run(
                ["openssl", "ts", "-reply", "-config", str(self.pki.config), "-queryfile", str(query_file),
                 "-out", str(reply_file)],
                check=True, capture_output=True, timeout=30,
            )
            return reply_file.read_bytes()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        tsa = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                query = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Type") != "application/timestamp-query":
                    self._send(415, "text/plain", b"expected application/timestamp-query")
                    return
                tsa.queries.append(query)
                try:
                    answer = tsa.reply(query)
                except subprocess.CalledProcessError as exc:
                    self._send(400, "text/plain", exc.stderr)
                    return
                self._send(200, "application/timestamp-reply", answer)

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def __enter__(self) -> OpenSslTsa:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@contextmanager
def running_tsa(directory: Path, name: str = "Test TSA", port: int = 0) -> Iterator[OpenSslTsa]:
    """A fresh PKI in ``directory`` and its TSA serving on 127.0.0.1."""
    with OpenSslTsa(make_tsa_pki(directory, name), port) as tsa:
        yield tsa
