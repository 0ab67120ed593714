"""Test support for identity: a JWKS/OIDC server on loopback, signing keys and token minting."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

JWKS_PATH = "/jwks"
DISCOVERY_PATH = "/.well-known/openid-configuration"


class KeyServer:
    """Serves an OIDC discovery document and a JWKS; counts the requests per path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jwks: list[dict[str, Any]] = []
        self.hits: Counter[str] = Counter()
        self.status = 200
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.hits[self.path] += 1
                    status = server.status
                    if self.path == JWKS_PATH:
                        body: dict[str, Any] | None = {"keys": list(server._jwks)}
                    elif self.path == DISCOVERY_PATH:
                        body = {"issuer": server.issuer, "jwks_uri": server.issuer + JWKS_PATH}
                    else:
                        body = None
                if body is None:
                    status = 404
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.01,), daemon=True)

    def set_keys(self, *jwks: dict[str, Any]) -> None:
        with self._lock:
            self._jwks = list(jwks)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@dataclass(frozen=True)
class SigningKey:
    """A private key, the JWS algorithm it signs with, and its public JWK."""

    kid: str
    alg: str
    private: Any

    @property
    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig"}


_RSA_PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # slow: generate once


def rsa_key(kid: str = "rsa-1") -> SigningKey:
    return SigningKey(kid, "RS256", _RSA_PRIVATE)


def ec_key(kid: str = "ec-1") -> SigningKey:
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def ed_key(kid: str = "ed-1") -> SigningKey:
    return SigningKey(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())


AUDIENCE = "https://bastion.example.com"


def claims(issuer: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": issuer,
        "sub": "alice",
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "groups": ["eng", "oncall"],
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def mint(key: SigningKey, payload: dict[str, Any], *, alg: str | None = None) -> str:
    return pyjwt.encode(payload, key.private, algorithm=alg or key.alg, headers={"kid": key.kid})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value).encode())
