"""TLS on Bastion's own listener: uvicorn's TLS options, and the verified client certificate in the scope.

uvicorn verifies client certificates during the handshake but does not put them in the ASGI scope,
so ``bastion serve`` runs uvicorn with the protocol classes below: they read the peer certificate
once per connection and add the ASGI TLS extension (``scope["extensions"]["tls"]``) to each request.
Turning a certificate into a `Principal` belongs to `bastion.identity`; policy on it to policy.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Any, Literal

from cryptography import x509
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from bastion.config import TlsSettings
from bastion.errors import ConfigError

CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
"""``tls.client_cert`` → the OpenSSL verify mode uvicorn is given."""
_TLS_VERSIONS = {"TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
SPIFFE_SCHEME = "spiffe://"


def uvicorn_tls_options(settings: TlsSettings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` that serve HTTPS as `settings` say."""
    return {
        "ssl_certfile": settings.certfile,
        "ssl_keyfile": settings.keyfile,
        "ssl_ca_certs": settings.client_ca_file,
        "ssl_cert_reqs": CERT_REQS[settings.client_cert],
    }


def check_tls_files(settings: TlsSettings) -> None:
    """Load the certificate, key and client CA bundle the way uvicorn will, before serving.

    Raises:
        ConfigError: a file is missing or unreadable, the key does not match the certificate,
            or the CA bundle holds no certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(settings.certfile, settings.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"tls: cannot load certfile {settings.certfile!r} / keyfile {settings.keyfile!r}: {_reason(exc)}"
        ) from exc
    if settings.client_ca_file is None:
        return
    try:
        context.load_verify_locations(cafile=settings.client_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls: cannot load client_ca_file {settings.client_ca_file!r}: {_reason(exc)}") from exc
    if not context.get_ca_certs():
        raise ConfigError(f"tls: client_ca_file {settings.client_ca_file!r} holds no CA certificate")


def _reason(exc: OSError | ssl.SSLError) -> str:
    return str(getattr(exc, "reason", None) or exc.strerror or exc)


# -- the certificate in the scope -------------------------------------------------------------------


def compute_tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    """The ASGI TLS extension for one connection, or None if the connection is not TLS.

    Keys are those of the ASGI TLS extension (``client_cert_chain``: the leaf as PEM, Python's
    ``ssl`` exposes no more; ``client_cert_name``: RFC 4514 subject; ``tls_version``;
    ``cipher_suite`` and ``server_cert`` are None, ``ssl`` does not expose them) plus Bastion's
    ``client_cert_uris`` (the leaf's URI SANs). A certificate is reported only when the listener
    asked for one, so OpenSSL has verified it against ``tls.client_ca_file`` during the handshake.
    """
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    extension: dict[str, Any] = {
        "server_cert": None,
        "client_cert_chain": (),
        "client_cert_name": None,
        "client_cert_error": None,
        "client_cert_uris": (),
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
    }
    # With CERT_NONE the server never requests a certificate: anything here would be unverified.
    der = ssl_object.getpeercert(binary_form=True) if ssl_object.context.verify_mode != ssl.CERT_NONE else None
    if not der:
        return extension
    try:
        certificate = x509.load_der_x509_certificate(der)
        name = certificate.subject.rfc4514_string()
        uris = _uri_sans(certificate)
    except ValueError:  # verified by OpenSSL yet unparseable here: report it, identify no one
        extension["client_cert_error"] = "unparseable client certificate"
        return extension
    extension |= {"client_cert_chain": (ssl.DER_cert_to_PEM_cert(der),), "client_cert_name": name,
                  "client_cert_uris": uris}
    return extension


def _uri_sans(certificate: x509.Certificate) -> tuple[str, ...]:
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(sans.get_values_for_type(x509.UniformResourceIdentifier))


def client_cert_subject(scope: Scope, source: Literal["dn", "spiffe_id"]) -> str | None:
    """The caller's subject from the request's verified client certificate, if any.

    ``dn``: the RFC 4514 subject (e.g. ``CN=planner,O=Acme``). ``spiffe_id``: the certificate's
    one ``spiffe://`` URI SAN (SPIFFE X509-SVID §2); a certificate with none, or several, counts
    as no certificate. An empty subject DN also counts as no certificate.
    """
    tls: Mapping[str, Any] | None = scope.get("extensions", {}).get("tls")
    if tls is None:
        return None
    if source == "dn":
        return tls.get("client_cert_name") or None
    spiffe_ids = [uri for uri in tls.get("client_cert_uris", ()) if uri.startswith(SPIFFE_SCHEME)]
    return spiffe_ids[0] if len(spiffe_ids) == 1 and len(spiffe_ids[0]) > len(SPIFFE_SCHEME) else None


class _WithTlsExtension:
    """ASGI wrapper for one connection: every request's scope gets a copy of its TLS extension."""

    __slots__ = ("_app", "_extension")

    def __init__(self, app: ASGIApp, extension: dict[str, Any]) -> None:
        self._app = app
        self._extension = extension

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("extensions", {})["tls"] = dict(self._extension)
        await self._app(scope, receive, send)


def _wrap_app(app: Any, transport: asyncio.BaseTransport) -> Any:
    extension = compute_tls_extension(transport)
    return app if extension is None else _WithTlsExtension(app, extension)


class TlsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus the TLS extension in the scope.

    uvicorn calls ``connection_made`` after the handshake and reads ``self.app`` for each
    request, so wrapping it here covers every request on the connection.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.app = _wrap_app(self.app, transport)


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # uvicorn without httptools (e.g. no [standard] extra): h11 only
    _HTTPTOOLS: type[asyncio.Protocol] | None = None
else:

    class TlsHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol, plus the TLS extension in the scope (as `TlsH11Protocol`)."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.app = _wrap_app(self.app, transport)

    _HTTPTOOLS = TlsHttpToolsProtocol


def tls_protocol_class() -> type[asyncio.Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)``: httptools when installed, as uvicorn's ``auto``."""
    return _HTTPTOOLS or TlsH11Protocol
